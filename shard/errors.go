package shard

import (
	"errors"
	"fmt"

	"github.com/duro-io/duro"
	"github.com/hashicorp/raft"
)

// ErrClosed is returned by calls on a closed Host.
var ErrClosed = errors.New("shard: closed")

func notLeader(shard ID, leader string) *duro.Error {
	msg := fmt.Sprintf("shard %d: this node is not the leader", shard)
	if leader != "" {
		msg += "; leader is " + leader
	} else {
		msg += "; no leader known"
	}
	return &duro.Error{Code: duro.CodeUnavailable, Message: msg, Retryable: true, Leader: leader}
}

func retryable(format string, args ...any) *duro.Error {
	return &duro.Error{Code: duro.CodeUnavailable, Message: fmt.Sprintf(format, args...), Retryable: true}
}

// classifyApply maps a raft Apply error to what a client may assume.
func classifyApply(shard ID, err error, leader string) *duro.Error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return notLeader(shard, leader)
	case errors.Is(err, errNotProposed):
		return retryable("shard %d: %v", shard, err)
	case errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// The leader refuses new entries while it hands leadership over.
		return retryable("shard %d: leadership transfer in progress, call not proposed", shard)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return retryable("shard %d: raft queue full, call not proposed", shard)
	default:
		// ErrLeadershipLost, ErrRaftShutdown and anything else: the entry may
		// be in some log and may yet commit.
		return &duro.Error{Code: duro.CodeUnavailable, Indeterminate: true,
			Message: fmt.Sprintf("shard %d: outcome unknown: %v", shard, err), Leader: leader}
	}
}
