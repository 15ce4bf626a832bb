package shard_test

import (
	"context"
	"testing"
	"time"

	"github.com/duro-io/duro/shard/shardtest"
	"github.com/hashicorp/raft"
)

// moveAllTo makes node 'to' lead every shard (balancing may already move
// some back; the tests wait for the end state).
func moveAllTo(t *testing.T, c *shardtest.Cluster, to int) {
	for s := 0; s < c.Shards(); s++ {
		from := c.LeaderOf(s)
		if from == to {
			continue
		}
		f := c.Shard(from, s).Raft().LeadershipTransferToServer(raft.ServerID(shardtest.Addr(to)), raft.ServerAddress(shardtest.Addr(to)))
		if err := f.Error(); err != nil {
			t.Logf("shard %d: transfer to node %d: %v (balancing may have moved it already)", s, to, err)
		}
	}
}

// TestBalancingSkipsUnreachableNodes: leadership is never handed to a node
// the leader cannot reach (the hand-off would stall the shard's writes).
func TestBalancingSkipsUnreachableNodes(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 3, Shards: 3, BalanceEvery: 100 * time.Millisecond,
		Reachable: func(_ context.Context, addr string) bool { return addr != shardtest.Addr(2) }})
	moveAllTo(t, c, 0)
	counts := func() map[int]int {
		led := map[int]int{}
		for s := 0; s < 3; s++ {
			led[c.LeaderOf(s)]++
		}
		return led
	}
	c.Eventually(t, func() bool { l := counts(); return l[0] == 2 && l[1] == 1 }, 30*time.Second)
	time.Sleep(time.Second) // ten balancing rounds
	if l := counts(); l[2] != 0 || l[0] != 2 {
		t.Fatalf("leaders %v: a shard went to the unreachable node 2, or balancing kept moving", l)
	}
}

// TestLeadershipBalances: with every shard led by one node (as after the
// others restarted), the nodes hand leaderships over until each leads one,
// and then stop moving them.
func TestLeadershipBalances(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 3, Shards: 3, BalanceEvery: 100 * time.Millisecond})
	moveAllTo(t, c, 0)
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
