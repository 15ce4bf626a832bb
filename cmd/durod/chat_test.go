package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/duro-io/duro/client/clienttest"
)

func TestMain(m *testing.M) { os.Exit(clienttest.Main(m)) }

// chromium returns the path of a Chromium binary, installing Debian's
// package when it is absent; it skips the test when that is impossible.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("chromium is not installed and there is no apt-get to install it")
	}
	t.Log("installing chromium with apt-get")
	// Other test packages may hold dpkg's lock (installing etcd-server or
	// nftables) while this runs; wait for it rather than skip.
	apt := func(args ...string) ([]byte, error) {
		cmd := exec.Command("apt-get", append([]string{"-o", "DPkg::Lock::Timeout=600"}, args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	out, err := apt("install", "-y", "--no-install-recommends", "chromium")
	if err != nil {
		if out2, err2 := apt("update"); err2 != nil {
			t.Skipf("chromium cannot be installed: apt-get update: %v\n%s", err2, out2)
		}
		if out, err = apt("install", "-y", "--no-install-recommends", "chromium"); err != nil {
			t.Skipf("chromium cannot be installed: apt-get install chromium: %v\n%s", err, out)
		}
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Skipf("chromium installed but not found on PATH: %v", err)
	}
	return p
}

// Two browser tabs on the chat page of one room, served by different nodes
// of a 3-process cluster: what one posts, the other shows.
func TestChatPageTwoTabs(t *testing.T) {
	bin := chromium(t)
	c := clienttest.StartCluster(t, 3, clienttest.Options{Shards: 4})
	ctx, cancel := context.WithTimeout(c.Context(context.Background()), 90*time.Second)
	defer cancel()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true))...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	tabA, cancelA := chromedp.NewContext(browser)
	defer cancelA()
	tabB, cancelB := chromedp.NewContext(browser)
	defer cancelB()
	room := fmt.Sprintf("e2e-%d", time.Now().UnixNano())
	open := func(tab context.Context, node *clienttest.Node) {
		t.Helper()
		err := chromedp.Do(tab, chromedp.Navigate("http://"+node.HTTP+"/chat/"+room))
		if err == nil {
			_, err = chromedp.Run(tab, chromedp.Poll[bool](`document.getElementById("state").textContent === "live"`,
				chromedp.WithPollingTimeout(30*time.Second)))
		}
		if err != nil {
			t.Fatalf("open the chat page on %s: %v", node.ID, err)
		}
	}
	open(tabA, c.Nodes[0])
	open(tabB, c.Nodes[2])
	say := func(tab context.Context, author, text string) {
		t.Helper()
		err := chromedp.Do(tab,
			chromedp.SetValue(chromedp.CSS("#author"), author),
			chromedp.SetValue(chromedp.CSS("#text"), text),
			chromedp.Click(chromedp.CSS("#send")),
		)
		if err != nil {
			t.Fatalf("post %q: %v", text, err)
		}
	}
	sees := func(tab context.Context, text string) {
		t.Helper()
		js := fmt.Sprintf(`[...document.querySelectorAll("#log .text")].some(e => e.textContent === %q)`, text)
		if _, err := chromedp.Run(tab, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
			log, _ := chromedp.Run(tab, chromedp.TextContent(chromedp.CSS("#log")))
			t.Fatalf("message %q never shown (log: %q): %v", text, log, err)
		}
	}
	say(tabA, "alice", "hello from tab A")
	sees(tabB, "hello from tab A")
	sees(tabA, "hello from tab A")
	say(tabB, "bob", "and hello back from B")
	sees(tabA, "and hello back from B")
	// Each tab learns of a post through its own stream, its author's too.
	sees(tabB, "and hello back from B")
	// Both tabs show the same messages in the same order.
	texts := `[...document.querySelectorAll("#log .msg")].map(e => e.querySelector(".author").textContent + e.querySelector(".text").textContent).join("|")`
	a, errA := chromedp.Run(tabA, chromedp.Evaluate[string](texts))
	b, errB := chromedp.Run(tabB, chromedp.Evaluate[string](texts))
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if a != "alice: hello from tab A|bob: and hello back from B" {
		t.Fatalf("tab A shows %q", a)
	}
	if b != a {
		t.Fatalf("tab B shows %q, tab A %q", b, a)
	}
}
