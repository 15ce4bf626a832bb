package shard

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/raft"
)

// DefaultBalanceEvery is how often a node checks whether it leads more
// shards than its share.
const DefaultBalanceEvery = 5 * time.Second

// Leadership balancing. Elections put leaders wherever they happen to win,
// and a restarted node never gets its share back, so one node can end up
// leading every shard: it then does all the leader work (the objects, the
// fsyncs before replication) while the others only follow, and killing it
// takes every shard down at once. Every node periodically compares the
// leaders it sees and hands one of its shards to the least loaded voter when
// it leads at least two more than that voter. Each hand-off narrows the gap
// by two, so the nodes settle instead of trading shards back and forth.
//
// A hand-off to a peer this node cannot reach is worse than none: while
// hashicorp/raft waits on the transfer (up to the transport's timeout) it
// refuses every write to the shard. The chaos suite's partitions showed it:
// leaders on the majority side tried to hand shards to nodes cut off on the
// minority side and stalled writes for seconds. So the target must answer a
// reachability probe first, and after a failed hand-off the node waits
// balanceHold before trying again.

// balanceHold is how long a node leaves leadership alone after a hand-off
// failed.
const balanceHold = 30 * time.Second

func (h *Host) balanceEvery() time.Duration {
	if h.cfg.BalanceEvery == 0 {
		return DefaultBalanceEvery
	}
	return h.cfg.BalanceEvery
}

func (h *Host) balanceLoop(stop <-chan struct{}) {
	every := h.balanceEvery()
	var hold time.Time
	for {
		// Jitter keeps the nodes from deciding in lockstep.
		t := time.NewTimer(every/2 + rand.N(every))
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
		if time.Now().Before(hold) {
			continue
		}
		if _, failed := h.balanceOnce(); failed {
			hold = time.Now().Add(balanceHold)
		}
	}
}

// balanceOnce hands off at most one shard; it reports whether it did, and
// whether a hand-off it tried failed.
func (h *Host) balanceOnce() (moved, failed bool) {
	me := raft.ServerID(h.cfg.NodeID)
	led := map[raft.ServerID]int{}
	var mine []*Shard
	for _, s := range h.shards {
		_, id := s.raft.LeaderWithID()
		if id == "" {
			return false, false // an election is under way: let it settle first
		}
		led[id]++
		if id == me && s.IsLeader() {
			mine = append(mine, s)
		}
	}
	reachable := map[raft.ServerAddress]bool{}
	reach := func(addr raft.ServerAddress) bool {
		if h.cfg.Reachable == nil {
			return true
		}
		ok, seen := reachable[addr]
		if !seen {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			ok = h.cfg.Reachable(ctx, string(addr))
			cancel()
			reachable[addr] = ok
		}
		return ok
	}
	for _, s := range mine {
		f := s.raft.GetConfiguration()
		if f.Error() != nil {
			continue
		}
		var to *raft.Server
		for _, srv := range f.Configuration().Servers {
			if srv.ID == me || srv.Suffrage != raft.Voter || led[me]-led[srv.ID] < 2 {
				continue
			}
			if (to == nil || led[srv.ID] < led[to.ID]) && reach(srv.Address) {
				to = &srv
			}
		}
		if to == nil {
			continue
		}
		h.log.Info("handing shard leadership to balance the nodes", "shard", int(s.id), "to", string(to.ID),
			"led_here", led[me], "led_there", led[to.ID])
		if err := s.raft.LeadershipTransferToServer(to.ID, to.Address).Error(); err != nil {
			h.log.Warn("leadership hand-off failed; holding off", "shard", int(s.id), "to", string(to.ID), "err", err, "hold", balanceHold)
			return false, true
		}
		return true, false
	}
	return false, false
}
