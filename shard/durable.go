package shard

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/duro-io/duro/shard/wal"
)

// A leader's Raft log is written in parallel with its replication (Raft
// thesis §10.2.1), and need not reach its own disk for a call to commit.
// hashicorp/raft stores a leader's batch before it sends it to followers,
// so a call used to wait for two fdatasyncs in a row, the leader's and then
// a follower's. With the wal log store, durableLog returns from a leader's
// StoreLogs once the entries are written, and the store syncs them lazily
// (lazySync): the leader's copy is one of three, and two followers'
// disks are a quorum without it. A write so pays two fdatasyncs instead of
// three.
//
// hashicorp/raft counts the leader's own copy toward a quorum as soon as
// StoreLogs returns, so "committed" there can run ahead of what is on a
// quorum's disks. Nothing acts on such an entry until it is, which keeps
// the rule that a call is acknowledged only once its entry is on the disks
// of a quorum. A follower stores its log synchronously and answers success
// only then, so a follower's acknowledgement is a copy on disk; the
// leader's copy counts once its own log has synced it:
//
//   - the leader's state machine applies an entry (and so releases its
//     reply, wakes readers, lets objects see it) only once it is durable
//     here, or acknowledged by enough followers to make a majority of the
//     voters without the leader (raftFSM.ApplyBatch, quorumDurable); it
//     syncs its own log at once when too few followers are answering, and
//     after quorumWait;
//   - followers learn a commit index no higher than the highest entry on a
//     quorum's disks, counted the same way (durableTransport.limit), so none
//     applies an entry a power cut could still take from the quorum;
//   - the log is synced before the term or vote is stored (durableStable):
//     a deposed leader's entries are durable before it answers anyone in a
//     later term, and it only acknowledges entries in a later term;
//   - entries other than commands (a new leader's no-op, configuration
//     changes) are stored synchronously, as before: Raft commits earlier
//     terms' entries only once a quorum holds the no-op, and applies them
//     without it, so it must be on the leader's disk when counted.
//
// If the leader loses power with an entry written but not synced, that entry
// is either on enough followers' disks to be committed without it (and the
// leader, back, gets it again from the new leader; its state machine, which
// may have applied it, skips it then) or it was never acknowledged: a new
// leader may keep or drop it, like any entry that was never committed.

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

// waitDurable holds a batch of committed entries until a quorum's disks
// have them. A follower's log has them already (it stores synchronously,
// and Raft commits only what the leader sent); a leader waits for its own
// sync, or for enough followers' acknowledgements (quorumDurable). A log
// that failed stops the node: the entries may be committed elsewhere, and
// applying them without this copy, or skipping them, would both break the
// state machine.
func (s *Shard) waitDurable(logs []*raft.Log) {
	w := s.store.wal
	if w == nil || len(logs) == 0 {
		return
	}
	idx := logs[len(logs)-1].Index
	if s.quorumDurable(w, idx) {
		return
	}
	if err := w.WaitDurable(idx); err != nil {
		panic(fmt.Sprintf("shard %d: raft log: %v", s.cfg.ID, err))
	}
}

// lazySync is how long a leader's own appends may wait for their sync
// (wal.Store.SetLazy) while its followers' acknowledgements make them
// durable on a quorum: with two followers answering, a leader syncs once
// per lazySync instead of once per batch, a third of the fdatasyncs of a
// write. Anything that needs the leader's copy on disk syncs at once.
const lazySync = 20 * time.Millisecond

// quorumWait is how long a leader's state machine waits for followers to
// acknowledge a committed entry before it syncs the leader's own log
// instead. liveWithin is how recent a follower's last answer must be for
// it to count on that wait at all.
const (
	quorumWait = 5 * time.Millisecond
	liveWithin = 100 * time.Millisecond
)

// quorumDurable reports, on a leader, whether entry idx came to be on a
// quorum's disks without the leader's own sync: its own log synced it
// meanwhile (a lazy sync), or enough followers acknowledged it to make a
// majority of the voters on their own. It gives up (false) at once on a
// follower or when too few followers answer, and after quorumWait.
func (s *Shard) quorumDurable(w *wal.Store, idx uint64) bool {
	var timeout <-chan time.Time
	for {
		durable, changed := w.Changed()
		if durable >= idx {
			return true
		}
		q, ok := s.quorum()
		if !ok {
			return false
		}
		ackChanged := s.acks.next()
		acked, live := s.acks.state(q)
		if acked >= idx {
			return true
		}
		if !live {
			return false
		}
		if timeout == nil {
			t := time.NewTimer(quorumWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-changed:
		case <-ackChanged:
		case <-timeout:
			return false
		}
	}
}

// quorum is what counting acknowledgements needs: the leader's term, this
// node, and the voters of the latest configuration (the one hashicorp/raft
// counts commitment in).
type quorum struct {
	term   uint64
	self   raft.ServerID
	voters []raft.ServerID
}

// quorum returns the counting rule while this node leads; false otherwise.
func (s *Shard) quorum() (quorum, bool) {
	r := s.raftp.Load()
	if r == nil || r.State() != raft.Leader {
		return quorum{}, false
	}
	q := quorum{term: r.CurrentTerm(), self: raft.ServerID(s.cfg.NodeID)}
	for _, srv := range r.GetConfiguration().Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			q.voters = append(q.voters, srv.ID)
		}
	}
	return q, true
}

// followerAcks is, on a leader, how far each follower has acknowledged the
// log in a term. A follower answers success only once the entries are on
// its disk (it stores them synchronously), so an acknowledged index is
// durable there, and stays so: within a term a follower's log only grows.
type followerAcks struct {
	mu      sync.Mutex
	term    uint64
	acked   map[raft.ServerID]followerAck
	changed chan struct{} // closed at the next acknowledgement
}

type followerAck struct {
	index uint64    // highest entry acknowledged in term
	at    time.Time // last successful answer, entries or not
}

// record notes a successful answer from follower id, in term, covering the
// log up to index (0: an answer without entries, a heartbeat).
func (a *followerAcks) record(id raft.ServerID, term, index uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if term < a.term {
		return
	}
	if term > a.term || a.acked == nil {
		a.term = term
		a.acked = map[raft.ServerID]followerAck{}
	}
	f := a.acked[id]
	f.index = max(f.index, index)
	f.at = time.Now()
	a.acked[id] = f
	if a.changed != nil {
		close(a.changed)
		a.changed = nil
	}
}

// next returns a channel closed at the next acknowledgement.
func (a *followerAcks) next() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.changed == nil {
		a.changed = make(chan struct{})
	}
	return a.changed
}

// state returns the highest index acknowledged in q.term by enough
// followers to be a majority of q.voters without this node, and whether
// that many followers answered within liveWithin.
func (a *followerAcks) state(q quorum) (acked uint64, live bool) {
	need := len(q.voters)/2 + 1
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.term != q.term {
		return 0, false
	}
	var idx [8]uint64
	acks := idx[:0]
	recent := 0
	now := time.Now()
	for _, v := range q.voters {
		if v == q.self {
			continue
		}
		f := a.acked[v]
		acks = append(acks, f.index)
		if now.Sub(f.at) < liveWithin {
			recent++
		}
	}
	if len(acks) < need {
		return 0, false
	}
	slices.Sort(acks)
	return acks[len(acks)-need], recent >= need
}

// durableTransport is the shard's Raft transport with what a log written
// asynchronously asks of it on a leader: every AppendEntries carries a
// commit index no higher than what a quorum's disks hold, and every
// follower's success is recorded (acks).
type durableTransport struct {
	raft.Transport
	log    *wal.Store
	acks   *followerAcks
	quorum func() (quorum, bool)
}

// durableTransports wraps t for a shard whose log is log.
func durableTransports(t raft.Transport, log *wal.Store, acks *followerAcks, q func() (quorum, bool)) raft.Transport {
	c := durableTransport{Transport: t, log: log, acks: acks, quorum: q}
	if _, ok := t.(raft.WithPreVote); ok {
		return durablePreVote{c}
	}
	return c
}

// limit caps the commit index a leader sends at the highest index on a
// quorum's disks: its own log's, or the one its followers acknowledged.
func (c durableTransport) limit(req *raft.AppendEntriesRequest) {
	if req.LeaderCommitIndex == 0 {
		return
	}
	d := c.log.Durable()
	if req.LeaderCommitIndex <= d {
		return
	}
	if q, ok := c.quorum(); ok && q.term == req.Term {
		acked, _ := c.acks.state(q)
		d = max(d, acked)
	}
	req.LeaderCommitIndex = min(req.LeaderCommitIndex, d)
}

// answered records a follower's answer to req.
func (c durableTransport) answered(id raft.ServerID, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) {
	if resp == nil || !resp.Success {
		return
	}
	var last uint64
	if n := len(req.Entries); n > 0 {
		last = req.Entries[n-1].Index
	}
	c.acks.record(id, req.Term, last)
}

func (c durableTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	c.limit(req)
	err := c.Transport.AppendEntries(id, target, req, resp)
	if err == nil {
		c.answered(id, req, resp)
	}
	return err
}

func (c durableTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := c.Transport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	ap := &ackPipeline{AppendPipeline: p, c: c, id: id, out: make(chan raft.AppendFuture, 128), stop: make(chan struct{})}
	go ap.forward()
	return ap, nil
}

func (c durableTransport) Close() error {
	if wc, ok := c.Transport.(raft.WithClose); ok {
		return wc.Close()
	}
	return nil
}

type durablePreVote struct{ durableTransport }

func (c durablePreVote) RequestPreVote(id raft.ServerID, target raft.ServerAddress, req *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return c.Transport.(raft.WithPreVote).RequestPreVote(id, target, req, resp)
}

// ackPipeline caps the commit index of what it sends, and records the
// answers on their way to Raft.
type ackPipeline struct {
	raft.AppendPipeline
	c    durableTransport
	id   raft.ServerID
	out  chan raft.AppendFuture
	stop chan struct{}
	once sync.Once
}

func (p *ackPipeline) AppendEntries(req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	p.c.limit(req)
	return p.AppendPipeline.AppendEntries(req, resp)
}

func (p *ackPipeline) Consumer() <-chan raft.AppendFuture { return p.out }

func (p *ackPipeline) Close() error {
	err := p.AppendPipeline.Close()
	p.once.Do(func() { close(p.stop) })
	return err
}

func (p *ackPipeline) forward() {
	in := p.AppendPipeline.Consumer()
	for {
		select {
		case f := <-in:
			if f.Error() == nil {
				p.c.answered(p.id, f.Request(), f.Response())
			}
			select {
			case p.out <- f:
			case <-p.stop:
				return
			}
		case <-p.stop:
			return
		}
	}
}
