package rpc

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func newTestMux(t *testing.T) *Mux {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMux(ln, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	go m.Serve()
	t.Cleanup(func() { m.Close() })
	return m
}

// shardTransport opens shard 5's Raft transport on m, closed when the test
// ends.
func shardTransport(t *testing.T, m *Mux) raft.Transport {
	t.Helper()
	tr, err := m.RaftTransport(5, m.Addr().String(), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.(raft.WithClose).Close() })
	return tr
}

// TestMuxCarriesRaftAndGRPC checks that one port serves gRPC and the Raft
// traffic of several shards, each reaching its own shard's transport.
func TestMuxCarriesRaftAndGRPC(t *testing.T) {
	a, b := newTestMux(t), newTestMux(t)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(b.GRPC())
	t.Cleanup(gs.Stop)

	quiet := hclog.NewNullLogger()
	trans := map[string]raft.Transport{}
	for _, shard := range []uint32{0, 7} {
		for name, m := range map[string]*Mux{"a": a, "b": b} {
			tr, err := m.RaftTransport(shard, m.Addr().String(), quiet)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tr.(raft.WithClose).Close() })
			trans[name+string(rune('0'+shard))] = tr
		}
	}
	if _, err := b.RaftTransport(0, b.Addr().String(), quiet); err == nil {
		t.Fatal("a second transport for one shard was accepted")
	}
	for _, shard := range []uint32{0, 7} {
		src, dst := trans["a"+string(rune('0'+shard))], trans["b"+string(rune('0'+shard))]
		go func() {
			rpc := <-dst.Consumer()
			req := rpc.Command.(*raft.AppendEntriesRequest)
			rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term + uint64(shard), Success: true}, nil)
		}()
		var resp raft.AppendEntriesResponse
		err := src.AppendEntries("b", raft.ServerAddress(b.Addr().String()), &raft.AppendEntriesRequest{Term: 10}, &resp)
		if err != nil {
			t.Fatalf("shard %d: AppendEntries over the mux: %v", shard, err)
		}
		if !resp.Success || resp.Term != 10+uint64(shard) {
			t.Fatalf("shard %d: answered by the wrong transport: %+v", shard, resp)
		}
	}

	cc, err := grpc.NewClient(b.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC over the mux: %v %v", hr, err)
	}
}

// TestMuxUnknownShard checks that a Raft connection for a shard this node
// does not host is closed rather than hanging or reaching another shard.
func TestMuxUnknownShard(t *testing.T) {
	a, b := newTestMux(t), newTestMux(t)
	tr, err := a.RaftTransport(3, a.Addr().String(), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer tr.(raft.WithClose).Close()
	var resp raft.AppendEntriesResponse
	if err := tr.AppendEntries("b", raft.ServerAddress(b.Addr().String()), &raft.AppendEntriesRequest{Term: 1}, &resp); err == nil {
		t.Fatal("AppendEntries to a node without the shard succeeded")
	}
}
