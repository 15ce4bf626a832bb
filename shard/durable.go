package shard

import (
	"fmt"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/duro-io/duro/shard/wal"
)

// A leader's Raft log is written in parallel with its replication (Raft
// thesis §10.2.1). hashicorp/raft stores a leader's batch before it sends
// it to followers, so a call used to wait for two fdatasyncs in a row, the
// leader's and then a follower's. With the wal log store, durableLog
// returns from a leader's StoreLogs once the entries are written, and the
// store's flusher syncs them while they travel; a call now waits for the
// slower of the two.
//
// hashicorp/raft counts the leader's own copy toward a quorum as soon as
// StoreLogs returns, so "committed" there can run ahead of what is on the
// leader's disk. Nothing acts on such an entry until the leader has synced
// it, which keeps the rule that a call is acknowledged only once its entry
// is on the disks of a quorum:
//
//   - the leader's state machine applies an entry (and so releases its
//     reply, wakes readers, lets objects see it) only once it is durable
//     here (raftFSM.ApplyBatch);
//   - followers learn a commit index no higher than what is durable here
//     (commitLimit on every AppendEntries), so none applies an entry the
//     leader could still lose in a power cut;
//   - the log is synced before the term or vote is stored (durableStable):
//     a deposed leader's entries are durable before it answers anyone in a
//     later term, and it only acknowledges entries in a later term;
//   - entries other than commands (a new leader's no-op, configuration
//     changes) are stored synchronously, as before: Raft commits earlier
//     terms' entries only once a quorum holds the no-op, and applies them
//     without it, so it must be on the leader's disk when counted.
//
// If the leader loses power with an entry written but not synced, that entry
// may be on a follower, counted as committed by a leader that is gone, and
// applied nowhere: a new leader may keep or drop it, like any entry that
// was never committed.

// durableLog is the shard's wal.Store as hashicorp/raft's LogStore: a
// leader's appends are asynchronous, a follower's synchronous.
type durableLog struct {
	*wal.Store
	leader func() bool
}

func (d durableLog) StoreLog(l *raft.Log) error { return d.StoreLogs([]*raft.Log{l}) }

func (d durableLog) StoreLogs(logs []*raft.Log) error {
	if !d.leader() {
		return d.Store.StoreLogs(logs)
	}
	for _, l := range logs {
		if l.Type != raft.LogCommand {
			// A new leader's no-op above all: Raft commits the entries of
			// earlier terms once a quorum has it, and they reach the state
			// machine without it, so the gate there would wait only for
			// their own indexes, already synced. Synced here, a commit at
			// or past it is on a quorum's disks. (Configuration changes
			// and barriers too; they are rare.)
			return d.Store.StoreLogs(logs)
		}
	}
	return d.Store.StoreLogsAsync(logs)
}

// durableStable syncs the log before every write to the stable store (the
// current term, the vote).
type durableStable struct {
	raft.StableStore
	log *wal.Store
}

func (d durableStable) Set(key, val []byte) error {
	if err := d.log.Flush(); err != nil {
		return err
	}
	return d.StableStore.Set(key, val)
}

func (d durableStable) SetUint64(key []byte, val uint64) error {
	if err := d.log.Flush(); err != nil {
		return err
	}
	return d.StableStore.SetUint64(key, val)
}

// isLeader reports whether r leads. hashicorp/raft sets its state on the
// goroutine that stores the log, so a StoreLogs call sees the state it was
// made in.
func isLeader(r *atomic.Pointer[raft.Raft]) func() bool {
	return func() bool {
		rr := r.Load()
		return rr != nil && rr.State() == raft.Leader
	}
}

// waitDurable holds a batch of committed entries until the leader's log
// has them on disk; on a follower they already are. A log that failed
// stops the node: the entries may be committed elsewhere, and applying
// them without this copy, or skipping them, would both break the state
// machine.
func (s *Shard) waitDurable(logs []*raft.Log) {
	w := s.store.wal
	if w == nil || len(logs) == 0 {
		return
	}
	if err := w.WaitDurable(logs[len(logs)-1].Index); err != nil {
		panic(fmt.Sprintf("shard %d: raft log: %v", s.cfg.ID, err))
	}
}

// commitLimit caps the commit index a leader sends to followers at what
// its own log has on disk.
type commitLimit struct {
	raft.Transport
	log *wal.Store
}

// limitCommit wraps t so that every AppendEntries it sends carries a commit
// index no higher than log's durable index.
func limitCommit(t raft.Transport, log *wal.Store) raft.Transport {
	c := commitLimit{Transport: t, log: log}
	if _, ok := t.(raft.WithPreVote); ok {
		return commitLimitPreVote{c}
	}
	return c
}

func (c commitLimit) limit(req *raft.AppendEntriesRequest) {
	if req.LeaderCommitIndex == 0 {
		return
	}
	if d := c.log.Durable(); req.LeaderCommitIndex > d {
		req.LeaderCommitIndex = d
	}
}

func (c commitLimit) AppendEntries(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	c.limit(req)
	return c.Transport.AppendEntries(id, target, req, resp)
}

func (c commitLimit) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := c.Transport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return commitLimitPipeline{p, c}, nil
}

func (c commitLimit) Close() error {
	if wc, ok := c.Transport.(raft.WithClose); ok {
		return wc.Close()
	}
	return nil
}

type commitLimitPreVote struct{ commitLimit }

func (c commitLimitPreVote) RequestPreVote(id raft.ServerID, target raft.ServerAddress, req *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return c.Transport.(raft.WithPreVote).RequestPreVote(id, target, req, resp)
}

type commitLimitPipeline struct {
	raft.AppendPipeline
	c commitLimit
}

func (p commitLimitPipeline) AppendEntries(req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	p.c.limit(req)
	return p.AppendPipeline.AppendEntries(req, resp)
}
