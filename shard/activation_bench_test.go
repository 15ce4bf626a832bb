package shard_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/shard"
	"github.com/duro-io/duro/shard/shardtest"
)

// BenchmarkActivation measures, on a 3-node in-process cluster (real Raft
// and bbolt, in-memory transport), a read call that activates a fresh
// object ("cold": instance, version read, Activate hook loading storage)
// against the same call on an active object ("warm"), and the heap each
// active object holds. Run with:
//
//	go test -run XXX -bench Activation -benchtime 2000x ./shard
func BenchmarkActivation(b *testing.B) {
	c := shardtest.NewWithOptions(b, shardtest.Options{Nodes: 3, Shards: 1, IdleTimeout: -1, MaxActive: 1 << 20})
	leader := c.LeaderOf(0)
	h := c.Host(leader)
	ctx := b.Context()
	call := func(b *testing.B, id duro.ID) {
		if r := h.Call(ctx, &shard.Request{Namespace: shardtest.MemNamespace, Object: id, Method: "Peek", Arg: []byte("{}")}); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	var ids []duro.ID
	run := time.Now().UnixNano() // fresh names on every run, even with -count
	b.Run("cold", func(b *testing.B) {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		before := h.ActiveObjects()
		for i := 0; b.Loop(); i++ {
			id := c.ObjectIn(shardtest.MemNamespace, 0, fmt.Sprintf("act-%d-%d", run, i))
			ids = append(ids, id)
			call(b, id)
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&m1)
		if n := h.ActiveObjects() - before; n > 0 {
			b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/float64(n), "heap-B/object")
		}
	})
	b.Run("warm", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			call(b, ids[i%len(ids)])
		}
	})
}
