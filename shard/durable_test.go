package shard_test

import (
	"context"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/shard"
	"github.com/duro-io/duro/shard/shardtest"
	"github.com/duro-io/duro/shard/wal"
)

// holdSyncs holds every fdatasync of a wal segment under the given
// directories until let is called (or the test ends).
type holdSyncs struct {
	dirs atomic.Value // []string
	let  func()
}

func newHoldSyncs(t *testing.T) *holdSyncs {
	h := &holdSyncs{}
	h.dirs.Store([]string(nil))
	release := make(chan struct{})
	var once sync.Once
	h.let = func() { once.Do(func() { h.dirs.Store([]string(nil)); close(release) }) }
	wal.SetSyncHook(func(path string) error {
		for _, d := range h.dirs.Load().([]string) {
			if strings.HasPrefix(path, d) {
				<-release
			}
		}
		return nil
	})
	t.Cleanup(func() { wal.SetSyncHook(nil) }) // after the cluster closes
	return h
}

func (h *holdSyncs) hold(dirs ...string) {
	var ds []string
	for _, d := range dirs {
		ds = append(ds, d+"/")
	}
	h.dirs.Store(ds)
}

// durableCluster is a 3-node, 1-shard cluster on the wal log store, its
// leader, followers, and an object already incremented once.
func durableCluster(t *testing.T, h *holdSyncs) (c *shardtest.Cluster, leader int, followers []int, id duro.ID) {
	c = shardtest.NewWithOptions(t, shardtest.Options{Nodes: 3, Shards: 1, LogStore: "wal"})
	t.Cleanup(h.let) // before the cluster closes: closing waits for held syncs
	leader = c.LeaderOf(0)
	id = c.ObjectIn(shardtest.CounterNamespace, 0, "durable")
	if got := mustInt(t, c.Call(callCtx(t), leader, shardtest.Increment(id, 1))); got != 1 {
		t.Fatalf("first increment returned %d", got)
	}
	applied := c.Shard(leader, 0).Raft().LastIndex()
	for i := 0; i < c.Nodes(); i++ {
		if i != leader {
			followers = append(followers, i)
		}
		s := c.Shard(i, 0)
		c.Eventually(t, func() bool { return s.Machine().Applied() >= applied }, 10*time.Second)
	}
	return c, leader, followers, id
}

// allApplied waits until every node has applied entry and checks that its
// counter id reads want.
func allApplied(t *testing.T, c *shardtest.Cluster, id duro.ID, entry uint64, want int64) {
	t.Helper()
	for i := 0; i < c.Nodes(); i++ {
		s := c.Shard(i, 0)
		c.Eventually(t, func() bool { return s.Machine().Applied() >= entry }, 10*time.Second)
		if got := appliedCounter(t, s, id); got != want {
			t.Fatalf("node %d's applied counter is %d, want %d", i, got, want)
		}
	}
}

// A leader writes its log while it replicates, so Raft counts an entry
// committed once one follower has it (on that follower's disk, and in the
// leader's page cache). The call must not be answered, and no replica may
// apply the entry, until a quorum's disks hold it: here, with the leader's
// sync and one follower's held, until they are released.
func TestAnsweredOnlyOnceAQuorumHasItOnDisk(t *testing.T) {
	h := newHoldSyncs(t)
	c, leader, followers, id := durableCluster(t, h)
	lr := c.Shard(leader, 0).Raft()
	before := lr.LastIndex()
	h.hold(c.Dir(leader), c.Dir(followers[0]))

	res := make(chan shard.Result, 1)
	go func() { res <- c.Call(callCtx(t), leader, shardtest.Increment(id, 1)) }()
	c.Eventually(t, func() bool { return lr.LastIndex() > before }, 10*time.Second)
	entry := lr.LastIndex()
	// The free follower stores it, and Raft on the leader counts it
	// committed, with only that follower's copy on disk.
	fr := c.Shard(followers[1], 0).Raft()
	c.Eventually(t, func() bool { return fr.LastIndex() >= entry }, 10*time.Second)
	c.Eventually(t, func() bool {
		n, _ := strconv.ParseUint(lr.Stats()["commit_index"], 10, 64)
		return n >= entry
	}, 10*time.Second)

	select {
	case r := <-res:
		t.Fatalf("the call was answered (%+v) with its entry on one disk of three", r)
	case <-time.After(200 * time.Millisecond):
	}
	for i := 0; i < c.Nodes(); i++ {
		if a := c.Shard(i, 0).Machine().Applied(); a >= entry {
			t.Fatalf("node %d applied up to %d, past entry %d, which is on one disk of three", i, a, entry)
		}
		if got := appliedCounter(t, c.Shard(i, 0), id); got != 1 {
			t.Fatalf("node %d's applied counter is %d with the entry on one disk, want 1", i, got)
		}
	}

	h.let()
	if got := mustInt(t, <-res); got != 2 {
		t.Fatalf("second increment returned %d, want 2", got)
	}
	allApplied(t, c, id, entry, 2)
}

// Two followers' disks are a quorum of three: a leader whose own sync is
// held still answers, and its followers apply, once both have acknowledged
// the entry. (The leader syncs its log lazily for that reason.)
func TestFollowersDisksAreAQuorum(t *testing.T) {
	h := newHoldSyncs(t)
	c, leader, _, id := durableCluster(t, h)
	h.hold(c.Dir(leader))
	if got := mustInt(t, c.Call(callCtx(t), leader, shardtest.Increment(id, 1))); got != 2 {
		t.Fatalf("second increment returned %d, want 2", got)
	}
	entry := c.Shard(leader, 0).Raft().LastIndex()
	allApplied(t, c, id, entry, 2)
}

// A power cut can leave a leader's newest snapshot past the end of its log
// (the log syncs lazily; the snapshot follows a state machine that may
// apply what followers' disks hold). The node must start and take writes
// again, not refuse every append for not continuing the log.
func TestRestartsWithSnapshotPastItsLog(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 1, Shards: 1, LogStore: "wal"})
	c.LeaderOf(0)
	id := c.ObjectIn(shardtest.CounterNamespace, 0, "snap")
	for i := 1; i <= 5; i++ {
		if got := mustInt(t, c.Call(callCtx(t), 0, shardtest.Increment(id, 1))); got != int64(i) {
			t.Fatalf("increment %d returned %d", i, got)
		}
	}
	if err := c.Shard(0, 0).Raft().Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	c.RestartAfter(0, func(dir string) {
		// The lost tail: the last three entries of the log, which the
		// snapshot covers.
		var walDir string
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() && d.Name() == "raft-wal" {
				walDir = p
			}
			return nil
		})
		if walDir == "" {
			t.Fatalf("no raft-wal under %s", dir)
		}
		w, err := wal.Open(walDir, 0)
		if err != nil {
			t.Fatal(err)
		}
		last, _ := w.LastIndex()
		if err := w.DeleteRange(last-2, last); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r shard.Result
	for ctx.Err() == nil { // a leader first; every call fails until one is
		if r = c.Call(ctx, 0, shardtest.Increment(id, 1)); r.Err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := mustInt(t, r); got != 6 {
		t.Fatalf("increment after the restart returned %d, want 6", got)
	}
}
