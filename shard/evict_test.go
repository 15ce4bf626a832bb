package shard_test

import (
	"sync"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/shard"
	"github.com/duro-io/duro/shard/shardtest"
)

func mustMem(t *testing.T, r shard.Result) shardtest.MemState {
	t.Helper()
	st, err := shardtest.Mem(r)
	if err != nil {
		t.Fatalf("call failed: %v (%+v)", err, r.Err)
	}
	return st
}

func TestIdleEviction(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 1, Shards: 1, IdleTimeout: 50 * time.Millisecond})
	c.LeaderOf(0)
	h := c.Host(0)
	id := c.ObjectIn(shardtest.MemNamespace, 0, "idle")
	ctx := callCtx(t)
	// Pipelined calls run on one instance: in-memory and stored counts agree.
	res := submitAll(t, h, shardtest.Hit(id), shardtest.Hit(id), shardtest.Hit(id))
	for i, r := range res {
		st := mustMem(t, r)
		if st.Stored != int64(i+1) || st.Activations != 1 || st.Loaded > st.Stored {
			t.Fatalf("call %d: %+v", i, st)
		}
	}
	var stored int64 = 3
	for round := 0; round < 2; round++ {
		shardtest.Eventually(t, func() bool { return h.ActiveObjects() == 0 }, 5*time.Second, "object not evicted after idle")
		st := mustMem(t, h.Call(ctx, shardtest.Hit(id)))
		stored++
		if st.Calls != 1 || st.Activations != 1 || st.Loaded != stored-1 || st.Stored != stored {
			t.Fatalf("round %d after eviction: %+v, want fresh instance with stored %d", round, st, stored)
		}
	}
	if got := appliedCounter(t, c.Shard(0, 0), id); got != stored {
		t.Fatalf("applied counter %d, want %d", got, stored)
	}
}

func TestNoIdleEvictionWhenNegative(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 1, Shards: 1, IdleTimeout: -1})
	c.LeaderOf(0)
	h := c.Host(0)
	id := c.ObjectIn(shardtest.MemNamespace, 0, "forever")
	ctx := callCtx(t)
	mustMem(t, h.Call(ctx, shardtest.Hit(id)))
	time.Sleep(100 * time.Millisecond) // give a (wrong) sweep the chance to run
	if st := mustMem(t, h.Call(ctx, shardtest.Hit(id))); st.Calls != 2 {
		t.Fatalf("instance was evicted: %+v", st)
	}
}

func TestMaxActive(t *testing.T) {
	const limit, n = 4, 20
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 1, Shards: 1, MaxActive: limit, IdleTimeout: -1})
	c.LeaderOf(0)
	h := c.Host(0)
	ctx := callCtx(t)
	ids := make([]duro.ID, n)
	for i := range ids {
		ids[i] = c.ObjectIn(shardtest.MemNamespace, 0, "cap-"+string(rune('a'+i)))
	}
	for round := 1; round <= 3; round++ {
		for _, id := range ids {
			st := mustMem(t, h.Call(ctx, shardtest.Hit(id)))
			if st.Stored != int64(round) || st.Activations != 1 {
				t.Fatalf("round %d: %+v", round, st)
			}
			// Sequential calls: an object over the cap is evicted as soon as
			// it is idle.
			shardtest.Eventually(t, func() bool { return h.ActiveObjects() <= limit }, 5*time.Second,
				"%d objects active, cap %d", h.ActiveObjects(), limit)
		}
	}
	if got := h.ActiveObjects(); got > limit {
		t.Fatalf("%d objects active, cap %d", got, limit)
	}
	for _, id := range ids {
		if got := appliedCounter(t, c.Shard(0, 0), id); got != 3 {
			t.Fatalf("object %s: stored %d, want 3", id, got)
		}
	}
}

func TestPipelinedUnderEvictionPressure(t *testing.T) {
	const limit, objs, per = 4, 20, 10
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 1, Shards: 1, MaxActive: limit, IdleTimeout: 20 * time.Millisecond})
	c.LeaderOf(0)
	h := c.Host(0)
	ctx := callCtx(t)
	ids := make([]duro.ID, objs)
	for i := range ids {
		ids[i] = c.ObjectIn(shardtest.MemNamespace, 0, "pipe-"+string(rune('a'+i)))
	}
	var mu sync.Mutex
	got := make([][]int64, objs)
	for i := range got {
		got[i] = make([]int64, per)
	}
	var wg sync.WaitGroup
	wg.Add(objs * per)
	for k := 0; k < per; k++ {
		for i, id := range ids {
			k := k
			h.Submit(ctx, shardtest.Hit(id), func(r shard.Result) {
				defer wg.Done()
				st, err := shardtest.Mem(r)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("object %d call failed: %v", i, err)
					return
				}
				got[i][k] = st.Stored // submitted k-th: must see k earlier calls
			})
		}
	}
	waitGroup(t, &wg)
	for i := range ids {
		for k, v := range got[i] {
			if v != int64(k+1) {
				t.Fatalf("object %d: results %v out of order", i, got[i])
			}
		}
		if n := appliedCounter(t, c.Shard(0, 0), ids[i]); n != per {
			t.Fatalf("object %d: stored %d, want %d", i, n, per)
		}
	}
	shardtest.Eventually(t, func() bool { return h.ActiveObjects() == 0 }, 5*time.Second, "objects not evicted after idle")
}

func TestActivateFailure(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 1, Shards: 1, IdleTimeout: 30 * time.Millisecond})
	c.LeaderOf(0)
	h := c.Host(0)
	id := c.ObjectIn(shardtest.MemNamespace, 0, "refuse")
	ctx := callCtx(t)
	mustMem(t, h.Call(ctx, shardtest.Hit(id)))
	if r := h.Call(ctx, shardtest.RefuseActivation(id)); r.Err != nil {
		t.Fatal(r.Err)
	}
	// The active instance is not re-activated.
	mustMem(t, h.Call(ctx, shardtest.Hit(id)))
	shardtest.Eventually(t, func() bool { return h.ActiveObjects() == 0 }, 5*time.Second, "object not evicted after idle")
	for i := 0; i < 2; i++ {
		r := h.Call(ctx, shardtest.Hit(id))
		if r.Err == nil || r.Err.Code != duro.CodeFailedPrecondition {
			t.Fatalf("call %d after refused activation: %+v", i, r)
		}
	}
	if got := appliedCounter(t, c.Shard(0, 0), id); got != 2 {
		t.Fatalf("stored %d, want 2", got)
	}
}
