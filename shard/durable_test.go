package shard_test

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duro-io/duro/shard"
	"github.com/duro-io/duro/shard/shardtest"
	"github.com/duro-io/duro/shard/wal"
)

// A leader writes its log while it replicates, so Raft may count an entry
// committed (on a follower's disk and in the leader's page cache) before the
// leader's fdatasync ends. The call must not be answered, and no replica may
// apply the entry, until that fdatasync has: a quorum's disks hold every
// acknowledged write.
func TestLeaderAnswersOnlyOnceItsLogIsOnDisk(t *testing.T) {
	var held atomic.Bool
	release := make(chan struct{})
	var once sync.Once
	let := func() { once.Do(func() { held.Store(false); close(release) }) }
	var leaderDir atomic.Value
	leaderDir.Store("\x00")
	wal.SetSyncHook(func(path string) error {
		if held.Load() && strings.HasPrefix(path, leaderDir.Load().(string)) {
			<-release
		}
		return nil
	})
	t.Cleanup(func() { wal.SetSyncHook(nil) }) // after the cluster closes

	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 3, Shards: 1, LogStore: "wal"})
	t.Cleanup(let) // before the cluster closes: closing waits for held syncs
	leader := c.LeaderOf(0)
	id := c.ObjectIn(shardtest.CounterNamespace, 0, "durable")
	if got := mustInt(t, c.Call(callCtx(t), leader, shardtest.Increment(id, 1))); got != 1 {
		t.Fatalf("first increment returned %d", got)
	}
	var followers []int
	for i := 0; i < c.Nodes(); i++ {
		if i != leader {
			followers = append(followers, i)
		}
	}
	lr := c.Shard(leader, 0).Raft()
	before := lr.LastIndex()
	leaderDir.Store(c.Dir(leader) + "/")
	held.Store(true)

	res := make(chan shard.Result, 1)
	go func() { res <- c.Call(callCtx(t), leader, shardtest.Increment(id, 1)) }()
	c.Eventually(t, func() bool { return lr.LastIndex() > before }, 10*time.Second)
	entry := lr.LastIndex()
	// Both followers store it, and Raft on the leader counts it committed,
	// with the leader's own sync still held.
	for _, f := range followers {
		fr := c.Shard(f, 0).Raft()
		c.Eventually(t, func() bool { return fr.LastIndex() >= entry }, 10*time.Second)
	}
	c.Eventually(t, func() bool {
		n, _ := strconv.ParseUint(lr.Stats()["commit_index"], 10, 64)
		return n >= entry
	}, 10*time.Second)

	select {
	case r := <-res:
		t.Fatalf("the call was answered (%+v) before the leader's log was on disk", r)
	case <-time.After(200 * time.Millisecond):
	}
	for i := 0; i < c.Nodes(); i++ {
		if a := c.Shard(i, 0).Machine().Applied(); a >= entry {
			t.Fatalf("node %d applied up to %d, past entry %d, which is not on the leader's disk", i, a, entry)
		}
		if got := appliedCounter(t, c.Shard(i, 0), id); got != 1 {
			t.Fatalf("node %d's applied counter is %d before the leader's sync, want 1", i, got)
		}
	}

	let()
	if got := mustInt(t, <-res); got != 2 {
		t.Fatalf("second increment returned %d, want 2", got)
	}
	for i := 0; i < c.Nodes(); i++ {
		s := c.Shard(i, 0)
		c.Eventually(t, func() bool { return s.Machine().Applied() >= entry }, 10*time.Second)
		if got := appliedCounter(t, s, id); got != 2 {
			t.Fatalf("node %d's applied counter is %d, want 2", i, got)
		}
	}
}
