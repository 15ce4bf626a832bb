package shard

import (
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

func (h *Host) balanceEvery() time.Duration {
	if h.cfg.BalanceEvery == 0 {
		return DefaultBalanceEvery
	}
	return h.cfg.BalanceEvery
}

func (h *Host) balanceLoop(stop <-chan struct{}) {
	every := h.balanceEvery()
	for {
		// Jitter keeps the nodes from deciding in lockstep.
		t := time.NewTimer(every/2 + rand.N(every))
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
		h.balanceOnce()
	}
}

// balanceOnce hands off at most one shard and reports whether it did.
func (h *Host) balanceOnce() bool {
	me := raft.ServerID(h.cfg.NodeID)
	led := map[raft.ServerID]int{}
	var mine []*Shard
	for _, s := range h.shards {
		_, id := s.raft.LeaderWithID()
		if id == "" {
			return false // an election is under way: let it settle first
		}
		led[id]++
		if id == me && s.IsLeader() {
			mine = append(mine, s)
		}
	}
	for _, s := range mine {
		f := s.raft.GetConfiguration()
		if f.Error() != nil {
			continue
		}
		var to *raft.Server
		for _, srv := range f.Configuration().Servers {
			if srv.ID == me || srv.Suffrage != raft.Voter {
				continue
			}
			if to == nil || led[srv.ID] < led[to.ID] {
				to = &srv
			}
		}
		if to == nil || led[me]-led[to.ID] < 2 {
			continue
		}
		h.log.Info("handing shard leadership to balance the nodes", "shard", int(s.id), "to", string(to.ID),
			"led_here", led[me], "led_there", led[to.ID])
		if err := s.raft.LeadershipTransferToServer(to.ID, to.Address).Error(); err != nil {
			h.log.Warn("leadership hand-off failed", "shard", int(s.id), "to", string(to.ID), "err", err)
			return false
		}
		return true
	}
	return false
}
