package run

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestSmoke runs the smoke cases (make jepsen-smoke) against real durod
// processes in network namespaces. It needs root and network namespaces and
// skips, saying why, without them; JEPSEN_SMOKE=0 skips it too. A failing run
// keeps its directory under jepsen/store.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("jepsen smoke: skipped in -short mode")
	}
	if os.Getenv("JEPSEN_SMOKE") == "0" {
		t.Skip("jepsen smoke: JEPSEN_SMOKE=0")
	}
	if os.Geteuid() != 0 {
		t.Skip("jepsen smoke: needs root for network namespaces and nftables")
	}
	if err := exec.Command("ip", "netns", "list").Run(); err != nil {
		t.Skipf("jepsen smoke: no network namespaces here (ip netns list: %v)", err)
	}
	bin := filepath.Join(t.TempDir(), "durod")
	build := exec.Command("go", "build", "-o", bin, "./cmd/durod")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build durod: %v\n%s", err, out)
	}
	o := DefaultOptions()
	o.Binary, o.Store, o.Nodes, o.Time, o.Recovery = bin, "../store", 3, 30*time.Second, 20*time.Second
	o.Out = testWriter{t}
	t.Logf("seed %d", o.Seed)
	for _, name := range Smoke {
		c, err := Lookup(name, o.Nodes)
		if err != nil {
			t.Fatal(err)
		}
		s := Run(context.Background(), o, c)
		if !s.Valid {
			t.Errorf("%s: %d anomalies (%s); see %s/results.json", s.Case, s.Anomalies, s.Error, s.Dir)
		}
		if s.Ok == 0 {
			t.Errorf("%s: no call succeeded", s.Case)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
