package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/client"
	"github.com/duro-io/duro/cmd/duroctl/internal/loadgen"
	"github.com/duro-io/duro/cmd/durod/builtin"
	"github.com/duro-io/duro/cmd/durod/server"
	"github.com/duro-io/duro/config"
	"github.com/duro-io/duro/rpc"
)

// TestBenchSmoke runs every bench workload briefly against a one-node
// cluster: each must complete calls without errors and report latencies.
func TestBenchSmoke(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := config.Default()
	cfg.DataDir, cfg.Listen, cfg.HTTP, cfg.Shards = t.TempDir(), addr, "", 4
	cfg.Peers = []config.Peer{{ID: cfg.NodeID, Addr: addr}}
	ctx := context.Background()
	n, err := server.Start(ctx, cfg, duro.NewRegistry(builtin.Classes()...), slog.New(slog.NewTextHandler(io.Discard, nil)), rpc.Failpoints{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(context.Background()) })
	c, err := client.Dial(ctx, []string{addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := waitReady(ctx, c); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"put", "incr", "hot", "seq", "read"} {
		r, err := loadgen.RunWorkload(ctx, duroTarget{c}, w, loadgen.Config{Callers: 4, Objects: 10, Duration: 300 * time.Millisecond})
		if err != nil {
			t.Fatalf("%s: %v", w, err)
		}
		if r.Ops == 0 || r.Errors != 0 || r.P50ms <= 0 || r.P99ms < r.P50ms {
			t.Errorf("%s: %+v", w, r)
		}
	}
	if _, err := loadgen.ParseWorkloads("put,nope"); err == nil {
		t.Error("unknown workload accepted")
	}
	lr, err := measureLifecycle(ctx, c, 20, 20, 4, 300*time.Millisecond, 200*time.Millisecond, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if lr.AlarmsFired != 20 || lr.AlarmsEarly != 0 || lr.LatenessP99ms < lr.LatenessP50ms || lr.ColdP50ms <= 0 || lr.WarmP50ms <= 0 {
		t.Errorf("bench-lifecycle: %+v", lr)
	}
}
