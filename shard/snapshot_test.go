package shard_test

import (
	"testing"
	"time"

	"github.com/duro-io/duro/shard/shardtest"
)

// A follower cut off while the leader compacts its log past it catches up
// by installing a snapshot (a monotonic log store is emptied first), then
// takes new entries, and keeps all of it across a restart; for each log
// store.
func TestFollowerCatchesUpBySnapshot(t *testing.T) {
	for _, kind := range []string{"boltdb", "wal"} {
		t.Run(kind, func(t *testing.T) {
			timing := shardtest.Timing
			timing.SnapshotThreshold, timing.TrailingLogs = 32, 8
			c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 3, Shards: 1, Timing: &timing, LogStore: kind})
			id := c.ObjectIn(shardtest.CounterNamespace, 0, "snap")
			lead := c.LeaderOf(0)
			behind := (lead + 1) % 3
			c.Isolate(behind)
			cl := client(9)
			seq := uint64(0)
			for range 100 {
				seq++
				incrementOnce(t, c, 0, id, cl, seq)
			}
			lead = c.LeaderOfExcept(0, behind)
			if err := c.Shard(lead, 0).Raft().Snapshot().Error(); err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			c.Heal()
			for range 5 {
				seq++
				incrementOnce(t, c, 0, id, cl, seq)
			}
			c.WaitConverged(t, 20*time.Second)
			if got := appliedCounter(t, c.Shard(behind, 0), id); got != int64(seq) {
				t.Fatalf("follower that caught up by snapshot: counter %d, want %d", got, seq)
			}
			if s := c.Shard(behind, 0).Raft().Stats()["last_snapshot_index"]; s == "0" || s == "" {
				t.Fatalf("the follower caught up without a snapshot (last_snapshot_index %q): the test did not test it", s)
			}
			c.Restart(behind)
			c.WaitConverged(t, 20*time.Second)
			if got := appliedCounter(t, c.Shard(behind, 0), id); got != int64(seq) {
				t.Fatalf("after restarting it: counter %d, want %d", got, seq)
			}
		})
	}
}
