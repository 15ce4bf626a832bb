package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/client"
	"github.com/duro-io/duro/cmd/durod/builtin"
	"github.com/duro-io/duro/config"
	"github.com/duro-io/duro/rpc"
)

// hop forwards a call along a path of hop objects, each one counting the
// calls it took in storage, and returns the names it went through.
type hop struct{}

type hopArg struct {
	Path []string `json:"path"`
}

func hopClass() *duro.Class {
	c := duro.NewClass("hop", func() *hop { return &hop{} })
	duro.Method(c, "Forward", func(_ *hop, ctx duro.Context, a hopArg) (string, error) {
		st := ctx.Storage()
		n := 0
		if v, ok, _ := st.Get([]byte("n")); ok {
			fmt.Sscan(string(v), &n)
		}
		if err := st.Put([]byte("n"), []byte(fmt.Sprint(n+1))); err != nil {
			return "", err
		}
		self := "?"
		if v, ok, _ := st.Get([]byte("name")); ok {
			self = string(v)
		}
		if len(a.Path) == 0 {
			return self, nil
		}
		var rest string
		err := ctx.Stub("hop", duro.IDFromName("hop", a.Path[0])).Call(ctx, "Forward", hopArg{Path: a.Path[1:]}, &rest)
		if err != nil {
			return "", err
		}
		return self + ">" + rest, nil
	})
	duro.Method(c, "Name", func(_ *hop, ctx duro.Context, name string) (int, error) {
		return 0, ctx.Storage().Put([]byte("name"), []byte(name))
	})
	duro.Method(c, "Count", func(_ *hop, ctx duro.Context, _ struct{}) (int, error) {
		n := 0
		if v, ok, _ := ctx.Storage().Get([]byte("n")); ok {
			fmt.Sscan(string(v), &n)
		}
		return n, nil
	})
	return c
}

// startNodes starts an n-node cluster of in-process nodes over real sockets.
func startNodes(t *testing.T, n int, classes ...*duro.Class) []*Node {
	t.Helper()
	var peers []config.Peer
	for i := 0; i < n; i++ {
		peers = append(peers, config.Peer{ID: fmt.Sprintf("n%d", i+1), Addr: freeAddr(t)})
	}
	nodes := make([]*Node, n)
	errs := make(chan error, n)
	for i := range nodes {
		go func() {
			cfg := config.Default()
			cfg.NodeID = peers[i].ID
			cfg.DataDir = t.TempDir()
			cfg.Listen, cfg.HTTP = peers[i].Addr, freeAddr(t)
			cfg.Peers = peers
			cfg.Shards = 4
			cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = 300*time.Millisecond, 300*time.Millisecond, 150*time.Millisecond
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			nd, err := Start(context.Background(), cfg, duro.NewRegistry(append(builtin.Classes(), classes...)...), log, rpc.Failpoints{})
			nodes[i] = nd
			errs <- err
		}()
	}
	for range nodes {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		// Concurrently: each node's SDK clients hold streams open to the
		// others, which a graceful gRPC stop waits for.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for _, nd := range nodes {
			wg.Add(1)
			go func() { defer wg.Done(); nd.Close(ctx) }()
		}
		wg.Wait()
	})
	return nodes
}

func TestCallsBetweenObjects(t *testing.T) {
	nodes := startNodes(t, 3, hopClass())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, []string{nodes[0].cfg.Listen})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ns := c.Namespace("hop")
	names := []string{"a", "b", "c", "d", "e", "f"}
	for _, name := range names {
		if err := ns.Get(ns.IDFromName(name)).Call(ctx, "Name", name, nil); err != nil {
			t.Fatal(err)
		}
	}
	// a → b → c → ... → f: across shards, led by different nodes.
	var got string
	if err := ns.Get(ns.IDFromName("a")).Call(ctx, "Forward", hopArg{Path: names[1:]}, &got); err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(names, ">"); got != want {
		t.Fatalf("Forward = %q, want %q", got, want)
	}
	// Every object in the chain committed its own write once.
	for _, name := range names {
		var n int
		if err := ns.Get(ns.IDFromName(name)).Call(ctx, "Count", nil, &n); err != nil || n != 1 {
			t.Fatalf("%s: count %d, %v; want 1", name, n, err)
		}
	}

	for _, tc := range []struct {
		name string
		from string
		path []string
	}{
		{"a → b → a", "a", []string{"b", "a"}},
		{"a → a", "a", []string{"a"}},
		{"a → b → c → b", "a", []string{"b", "c", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			err := ns.Get(ns.IDFromName(tc.from)).Call(cctx, "Forward", hopArg{Path: tc.path}, nil)
			if !errors.Is(err, duro.ErrCallCycle) {
				t.Fatalf("cycle %s: err = %v, want ErrCallCycle", tc.name, err)
			}
			if e := duro.AsError(err); e.Retryable || e.Indeterminate || !strings.Contains(e.Message, "call cycle") || !strings.Contains(e.Message, "→") {
				t.Fatalf("cycle error %+v: want a definite error naming the chain", e)
			}
		})
	}
	// The failed cycles wrote nothing: counts unchanged.
	for _, name := range names {
		var n int
		if err := ns.Get(ns.IDFromName(name)).Call(ctx, "Count", nil, &n); err != nil || n != 1 {
			t.Fatalf("%s after cycles: count %d, %v; want 1", name, n, err)
		}
	}
}

// postJSON posts body to the node's gateway and decodes the JSON reply.
func postJSON(t *testing.T, n *Node, path string, body any, out any) int {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post("http://"+n.cfg.HTTP+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("POST %s: %d %s: %v", path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode
}

func TestLockLeaseExpiresByAlarm(t *testing.T) {
	n := startNode(t)
	const p = "/v1/ns/lock/objects/L/"
	var acq map[string]any
	// A long lease while its holder is checked: a loaded machine must not
	// let it lapse between two calls.
	if st := postJSON(t, n, p+"Acquire", map[string]any{"owner": "alice", "ttl_ms": 600000}, &acq); st != 200 ||
		acq["ok"] != true || acq["owner"] != "alice" || acq["token"].(float64) < 1 {
		t.Fatalf("Acquire alice: %d %v", st, acq)
	}
	first := acq["token"].(float64)
	// Exact shapes: a refused Acquire names the holder.
	if postJSON(t, n, p+"Acquire", map[string]any{"owner": "bob", "ttl_ms": 300}, &acq); acq["ok"] != false || acq["owner"] != "alice" || len(acq) != 3 {
		t.Fatalf("Acquire bob while alice holds: %v", acq)
	}
	var ok map[string]any
	if postJSON(t, n, p+"Renew", map[string]any{"owner": "alice", "token": first + 1, "ttl_ms": 300}, &ok); ok["ok"] != false || len(ok) != 1 {
		t.Fatalf("Renew with a wrong token: %v", ok)
	}
	if postJSON(t, n, p+"Release", map[string]any{"owner": "bob", "token": first}, &ok); ok["ok"] != false {
		t.Fatalf("Release by a non-holder: %v", ok)
	}
	// The holder shortens its lease; its alarm moves to the new expiry.
	if postJSON(t, n, p+"Renew", map[string]any{"owner": "alice", "token": first, "ttl_ms": 300}, &ok); ok["ok"] != true {
		t.Fatalf("Renew by the holder: %v", ok)
	}
	// Nobody calls the lock now: only its alarm can clear the lease. Holder
	// reports the stored lease without judging its expiry.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var h map[string]any
		postJSON(t, n, p+"Holder", nil, &h)
		if h["owner"] == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease not cleared by its alarm: %v", h)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if postJSON(t, n, p+"Acquire", map[string]any{"owner": "bob", "ttl_ms": 60000}, &acq); acq["ok"] != true || acq["owner"] != "bob" || acq["token"].(float64) <= first {
		t.Fatalf("Acquire bob after expiry: %v, want a token above %v", acq, first)
	}
	second := acq["token"].(float64)
	if postJSON(t, n, p+"Release", map[string]any{"owner": "alice", "token": first}, &ok); ok["ok"] != false {
		t.Fatalf("the expired holder released the lock: %v", ok)
	}
	if postJSON(t, n, p+"Renew", map[string]any{"owner": "bob", "token": second, "ttl_ms": 60000}, &ok); ok["ok"] != true {
		t.Fatalf("Renew by the holder: %v", ok)
	}
	if postJSON(t, n, p+"Release", map[string]any{"owner": "bob", "token": second}, &ok); ok["ok"] != true {
		t.Fatalf("Release by the holder: %v", ok)
	}
	if postJSON(t, n, p+"Acquire", map[string]any{"owner": "carol", "ttl_ms": 1000}, &acq); acq["ok"] != true || acq["token"].(float64) <= second {
		t.Fatalf("Acquire after release: %v, want a token above %v", acq, second)
	}
	for _, bad := range []map[string]any{{"owner": "", "ttl_ms": 10}, {"owner": "x", "ttl_ms": 0}, {"owner": "x", "ttl_ms": -5}} {
		if st := postJSON(t, n, p+"Acquire", bad, nil); st != 400 {
			t.Fatalf("Acquire %v: status %d, want 400", bad, st)
		}
	}
}
