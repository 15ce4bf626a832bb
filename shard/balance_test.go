package shard_test

import (
	"testing"
	"time"

	"github.com/duro-io/duro/shard/shardtest"
	"github.com/hashicorp/raft"
)

// TestLeadershipBalances: with every shard led by one node (as after the
// others restarted), the nodes hand leaderships over until each leads one,
// and then stop moving them.
func TestLeadershipBalances(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 3, Shards: 3, BalanceEvery: 100 * time.Millisecond})
	for s := 0; s < 3; s++ {
		from := c.LeaderOf(s)
		if from == 0 {
			continue
		}
		f := c.Shard(from, s).Raft().LeadershipTransferToServer(raft.ServerID(shardtest.Addr(0)), raft.ServerAddress(shardtest.Addr(0)))
		if err := f.Error(); err != nil {
			t.Logf("shard %d: transfer to node 0: %v (balancing may have moved it already)", s, err)
		}
	}
	balanced := func() bool {
		led := map[int]int{}
		for s := 0; s < 3; s++ {
			led[c.LeaderOf(s)]++
		}
		return led[0] == 1 && led[1] == 1 && led[2] == 1
	}
	c.Eventually(t, balanced, 30*time.Second)
	// Settled: a balanced cluster is left alone.
	terms := make([]uint64, 3)
	for s := range terms {
		terms[s] = c.Shard(c.LeaderOf(s), s).Raft().CurrentTerm()
	}
	time.Sleep(time.Second) // ten balancing rounds
	for s := range terms {
		if got := c.Shard(c.LeaderOf(s), s).Raft().CurrentTerm(); got != terms[s] || !balanced() {
			t.Fatalf("shard %d: leadership kept moving on a balanced cluster (term %d → %d)", s, terms[s], got)
		}
	}
}
