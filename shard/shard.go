package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/fsm"
	"github.com/duro-io/duro/shard/wal"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// ID numbers a shard, 0..S-1.
type ID int

// RaftTiming are the hashicorp/raft settings a node exposes.
type RaftTiming struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64
	MaxAppendEntries   int
}

// Settings are the settings every shard of a node shares.
type Settings struct {
	NodeID   string
	Peers    []raft.Server // the initial configuration, used on first start
	Timing   RaftTiming
	Registry *duro.Registry
	Limits   Limits
	// SessionTTL must be the same on every node (it drives the fsm).
	SessionTTL time.Duration
	Logger     *slog.Logger
	// Now is the clock for call times; nil means time.Now.
	Now func() time.Time
	// IdleTimeout is how long an object stays in memory unused before it is
	// evicted (storage is untouched): 0 means DefaultIdleTimeout, negative
	// never.
	IdleTimeout time.Duration
	// BalanceEvery is how often the node checks that it leads no more than
	// its share of shards (see balance.go): 0 means DefaultBalanceEvery,
	// negative never.
	BalanceEvery time.Duration
	// Reachable reports whether this node can reach a peer's Raft address
	// now; balancing hands leadership only to peers it reaches (nil: all).
	Reachable func(ctx context.Context, addr string) bool
	// AlarmAttempts is how many times a failing alarm handler is tried
	// before the alarm is given up on (it stays set): 0 means
	// DefaultAlarmAttempts; only the handler's own failures (an error, a
	// panic) count. AlarmBackoff is the wait after the first failure,
	// doubled after each further one: 0 means DefaultAlarmBackoff.
	AlarmAttempts int
	AlarmBackoff  time.Duration
	// AlarmTimeout bounds one alarm turn, its wait behind the object's other
	// calls included; a turn that runs out is retried without counting as
	// a failed attempt. 0 means DefaultAlarmTimeout.
	AlarmTimeout time.Duration
	// Caller makes the calls between objects (duro.Context.Stub); the chain
	// of waiting calls travels in ctx (duro.CallChain). nil: NewHost sets it
	// to call this node's own shards.
	Caller func(ctx context.Context, ns string, id duro.ID, method string, arg []byte) ([]byte, error)
	// LogStore selects the Raft log's storage: "boltdb" for raft-boltdb,
	// "wal" for shard/wal, "" or "auto" for what the shard's directory
	// holds (shard/wal for a new one). The stable store (term, vote) is
	// raft-boltdb either way.
	LogStore string
}

// Config configures one Shard.
type Config struct {
	Settings
	ID        ID
	Dir       string // this shard's directory
	Transport raft.Transport
	// MaxActive caps the objects this shard keeps in memory; beyond it, the
	// least recently used idle ones are evicted. 0 means DefaultMaxActive.
	MaxActive int
}

// Limits bound keys and values.
type Limits struct {
	MaxKeyBytes   int
	MaxValueBytes int
}

// Shard is one Raft group replica and, while it leads, its object host.
type Shard struct {
	id      ID
	cfg     Config
	log     *slog.Logger
	machine *fsm.Machine
	store   *raftStores
	raft    *raft.Raft
	raftp   atomic.Pointer[raft.Raft] // raft, for the log store's goroutines
	acks    followerAcks              // on a leader: how far followers have their logs on disk
	notify  chan bool
	host    *objectHost
	verify  *verifier

	alarms     alarmStats
	alarmNudge chan struct{} // see nudgeAlarms
	watch      watchHub      // see watch.go
	settle     *settler      // waits for proposed calls (settle.go)

	stop chan struct{}
	down chan struct{} // closed once raft has shut down
	wg   sync.WaitGroup
}

// Open opens (creating on first start) the shard's stores and starts its
// Raft group.
func Open(cfg Config) (*Shard, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("shard %d: %w", cfg.ID, err)
	}
	s := &Shard{id: cfg.ID, cfg: cfg, log: cfg.Logger.With("shard", int(cfg.ID)), stop: make(chan struct{}), down: make(chan struct{}),
		alarmNudge: make(chan struct{}, 1)}
	// The Raft log is fsync'd on a quorum before anything is acknowledged, so
	// the state file need not be: see fsm/lazysync.go.
	m, err := fsm.Open(filepath.Join(cfg.Dir, "state.db"), fsm.Options{SessionTTL: cfg.SessionTTL, LazySync: true})
	if err != nil {
		return nil, err
	}
	if m.Discarded() {
		s.log.Warn("state file discarded after a machine crash; rebuilding it from the newest snapshot and the log")
	}
	s.machine = m
	if err := s.startRaft(); err != nil {
		m.Close()
		if s.store != nil {
			s.store.Close()
		}
		return nil, fmt.Errorf("shard %d: %w", cfg.ID, err)
	}
	s.settle = newSettler(s.down, func(b []byte) raft.ApplyFuture { return s.raft.Apply(b, 0) }, proposeBatches)
	s.host = newObjectHost(s)
	s.verify = &verifier{r: s.raft}
	s.wg.Add(1)
	go s.watchLeadership()
	if d := cfg.idleTimeout(); d > 0 {
		s.wg.Add(1)
		go s.sweepIdle(d)
	}
	return s, nil
}

func (s *Shard) startRaft() error {
	store, err := openRaftStores(s.cfg.Dir, s.cfg.LogStore)
	if err != nil {
		return fmt.Errorf("open raft log: %w", err)
	}
	s.store = store
	logStore, stable, trans := store.log, store.stable, s.cfg.Transport
	if w := store.wal; w != nil {
		logStore = durableLog{Store: w, leader: isLeader(&s.raftp)}
		stable = durableStable{StableStore: stable, log: w}
		trans = durableTransports(trans, w, &s.acks, s.quorum)
		w.SetLazy(lazySync)
	}
	logs, err := raft.NewLogCache(1024, logStore)
	if err != nil {
		return err
	}
	hl := newHCLog(s.log)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(s.cfg.Dir, 2, hl)
	if err != nil {
		return err
	}
	t := s.cfg.Timing
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.cfg.NodeID)
	rc.Logger = hl
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = t.HeartbeatTimeout, t.ElectionTimeout, t.LeaderLeaseTimeout
	rc.CommitTimeout, rc.SnapshotThreshold, rc.SnapshotInterval = t.CommitTimeout, t.SnapshotThreshold, t.SnapshotInterval
	rc.TrailingLogs, rc.MaxAppendEntries = t.TrailingLogs, t.MaxAppendEntries
	rc.BatchApplyCh = true
	// The fsm keeps its own applied index durably, so a restart resumes from
	// it instead of restoring the last snapshot and replaying everything.
	rc.NoSnapshotRestoreOnStart = true
	s.notify = make(chan bool, 16)
	rc.NotifyCh = s.notify
	if err := raft.ValidateConfig(rc); err != nil {
		return err
	}
	if list, err := snaps.List(); err == nil && len(list) > 0 {
		newest := list[0]
		// If the state machine is behind the newest snapshot (its file was
		// lost or replaced), restore that snapshot first: the log before it
		// is gone.
		if newest.Index > s.machine.Applied() {
			_, rd, err := snaps.Open(newest.ID)
			if err != nil {
				return fmt.Errorf("open snapshot %s: %w", newest.ID, err)
			}
			err = s.machine.Restore(rd)
			rd.Close()
			if err != nil {
				return fmt.Errorf("restore snapshot %s: %w", newest.ID, err)
			}
		}
		// A leader's log syncs lazily (durable.go), and its snapshots follow
		// its state machine, which may apply what followers' disks hold
		// before its own does: a power cut can leave the newest snapshot past
		// the end of the log. Raft takes the snapshot's index as its last,
		// and shard/wal refuses an append that does not continue the log, so
		// drop the log, all of it below the snapshot: the next entry may then
		// have any index.
		if w := store.wal; w != nil {
			first, _ := w.FirstIndex()
			last, _ := w.LastIndex()
			if last != 0 && last < newest.Index {
				s.log.Warn("raft log ends before the newest snapshot; dropping it", "last", last, "snapshot", newest.Index)
				if err := w.DeleteRange(first, last); err != nil {
					return fmt.Errorf("drop raft log behind snapshot %s: %w", newest.ID, err)
				}
			}
		}
	}
	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return err
	}
	if !existing {
		if err := raft.BootstrapCluster(rc, logs, stable, snaps, trans, raft.Configuration{Servers: s.cfg.Peers}); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	r, err := raft.NewRaft(rc, (*raftFSM)(s), logs, stable, snaps, trans)
	if err != nil {
		return err
	}
	s.raft = r
	s.raftp.Store(r)
	return nil
}

// proposeBatches is how many batches of calls a shard lets into Raft at
// once (settler.propose). One: a call arriving while a batch is in Raft
// waits for it to apply, and goes in with every other call that waited.
// Measured with duroctl bench (put, 3 nodes, 3 shards, four alternating
// pairs), against no holding back: 7,930 -> 9,950 calls/s on average, and
// 180 -> 141 µs of durod CPU per call; two batches did worse than one in
// two pairs of three. It caps a shard at one batch per commit round trip,
// which on loopback is well below what the CPU allows; it was measured only
// there, not over links with long round trips.
const proposeBatches = 1

// raftStores are a shard's Raft log and stable store.
type raftStores struct {
	wal    *wal.Store // the log when it is shard/wal's, else nil
	log    raft.LogStore
	stable raft.StableStore
	close  func() error
}

func (r *raftStores) Close() error { return r.close() }

// openRaftStores opens the shard's Raft stores: the stable store (term,
// vote) is always raft-boltdb's raft.db; the log is in that file too
// ("boltdb") or in the segments of shard/wal under raft-wal/ ("wal").
// Switching an existing shard from one to the other is refused: its log
// would be left behind. "" or "auto" takes the one the directory holds
// (raft.db with entries: boltdb), and wal for a shard without a log.
// (hashicorp/raft-wal v0.4.0 was tried and dropped: it could not start
// again after truncating its log's tail, hashicorp/raft-wal#31, which every
// deposed leader does.)
func openRaftStores(dir, kind string) (*raftStores, error) {
	bolt, err := openRaftStore(dir)
	if err != nil {
		return nil, err
	}
	walDir := filepath.Join(dir, "raft-wal")
	segs, _ := filepath.Glob(filepath.Join(walDir, "*.seg"))
	boltLast, err := bolt.LastIndex()
	if err != nil {
		bolt.Close()
		return nil, err
	}
	if kind == "" || kind == "auto" {
		kind = "wal"
		if len(segs) == 0 && boltLast > 0 {
			kind = "boltdb"
		}
	}
	switch kind {
	case "boltdb":
		if len(segs) > 0 {
			bolt.Close()
			return nil, fmt.Errorf("%s holds a Raft log written with raft log-store \"wal\"; start with that setting", walDir)
		}
		return &raftStores{log: bolt, stable: bolt, close: bolt.Close}, nil
	case "wal":
		if boltLast > 0 {
			bolt.Close()
			return nil, fmt.Errorf("%s holds a Raft log written with raft log-store \"boltdb\"; start with that setting", filepath.Join(dir, "raft.db"))
		}
		w, err := wal.Open(walDir, 0)
		if err != nil {
			bolt.Close()
			return nil, err
		}
		return &raftStores{wal: w, log: w, stable: bolt, close: func() error {
			err := w.Close()
			if e := bolt.Close(); err == nil {
				err = e
			}
			return err
		}}, nil
	}
	bolt.Close()
	return nil, fmt.Errorf("unknown raft log store %q", kind)
}

func openRaftStore(dir string) (*raftboltdb.BoltStore, error) {
	return raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db"), BoltOptions: &bolt.Options{
		Timeout: 5 * time.Second,
		// The free list is rebuilt from the pages at open instead of being
		// written (and fsync'd) on every append.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	}})
}

// ID returns the shard's ID.
func (s *Shard) ID() ID { return s.id }

// Raft returns the shard's Raft group (for admin operations).
func (s *Shard) Raft() *raft.Raft { return s.raft }

// Machine returns the shard's state machine (read-only use).
func (s *Shard) Machine() *fsm.Machine { return s.machine }

// Leader returns the address and node ID of the shard's leader, if known.
func (s *Shard) Leader() (addr, id string) {
	a, i := s.raft.LeaderWithID()
	return string(a), string(i)
}

// IsLeader reports whether this replica leads the shard.
func (s *Shard) IsLeader() bool { return s.raft.State() == raft.Leader }

// Close resets the object host and shuts down Raft and the stores. It does not
// hand off leadership; Host.Close does that first.
func (s *Shard) Close() error {
	close(s.stop)
	s.host.reset("node shutting down")
	s.settle.stop()
	err := s.raft.Shutdown().Error()
	close(s.down)
	s.settle.close()
	s.wg.Wait()
	s.host.waitIdle()
	if e := s.store.Close(); err == nil {
		err = e
	}
	if e := s.machine.Close(); err == nil {
		err = e
	}
	return err
}

func (s *Shard) watchLeadership() {
	defer s.wg.Done()
	var cancel context.CancelFunc = func() {}
	for {
		select {
		case <-s.stop:
			cancel()
			return
		case leader := <-s.notify:
			cancel()
			s.host.reset("leadership lost")
			if leader {
				var ctx context.Context
				ctx, cancel = context.WithCancel(context.Background())
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					s.activate(ctx)
				}()
			} else {
				s.log.Info("lost leadership", "term", s.raft.CurrentTerm())
			}
		}
	}
}

// activate commits an Activate entry; its future returns once it and all
// entries before it are applied, which makes it the leader's barrier.
func (s *Shard) activate(ctx context.Context) {
	term := s.raft.CurrentTerm()
	s.log.Info("won leadership", "term", term, "node", s.cfg.NodeID)
	data := fsm.EncodeActivate(&fsm.Activate{Node: s.cfg.NodeID, Term: term, Time: s.cfg.Now().UnixNano()})
	for attempt := 0; ; attempt++ {
		f := s.raft.Apply(data, 0)
		err := s.applyError(f)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			r, _ := f.Response().(*fsm.Result)
			if r == nil || r.Status != fsm.Applied {
				s.log.Error("activate entry not applied", "result", r)
				return
			}
			s.host.activate(ctx, r.Epoch, term)
			s.log.Info("shard active", "term", term, "epoch", r.Epoch)
			// Every alarm set under earlier leaders is applied by now.
			s.runAlarms(ctx)
			return
		}
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrRaftShutdown) {
			return
		}
		s.log.Warn("activate failed, retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
		}
	}
}

// applyError waits for an Apply future. With BatchApplyCh, raft.Apply may put
// the entry in raft's apply buffer just as raft shuts down; such a future is
// never answered, so the wait also ends, with ErrRaftShutdown, once raft is
// down. (The helper goroutine of such a lost future never ends.)
func (s *Shard) applyError(f raft.Future) error {
	ch := make(chan error, 1)
	go func() { ch <- f.Error() }()
	select {
	case err := <-ch:
		return err
	case <-s.down:
		select {
		case err := <-ch:
			return err
		default:
			return raft.ErrRaftShutdown
		}
	}
}

// raftFSM adapts the shard's fsm.Machine to raft.BatchingFSM.
type raftFSM Shard

func (f *raftFSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

func (f *raftFSM) ApplyBatch(logs []*raft.Log) []any {
	// Batches share bbolt commits on every replica: a leader's objects read
	// the applied state through the open transaction (fsm.Machine.peek), and
	// a follower reads nothing until it leads.
	(*Shard)(f).waitDurable(logs)
	out := f.machine.ApplyBatchDeferred(logs)
	f.watch.applied(out)
	return out
}

func (f *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	snap, err := f.machine.Snapshot()
	if err != nil {
		return nil, err
	}
	return fsmSnapshot{snap}, nil
}

func (f *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	// Only a follower restores; its object host is idle.
	return f.machine.Restore(rc)
}

type fsmSnapshot struct{ s *fsm.Snapshot }

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.s.Write(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() { s.s.Release() }
