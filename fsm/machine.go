package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/duro-io/duro"
	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

var (
	bucketMeta    = []byte("meta")
	bucketData    = []byte("data")    // object ID + user key → value
	bucketVersion = []byte("version") // object ID → uint64 applied call count
	bucketSess    = []byte("sess")    // client + seq → time + reply
	bucketClients = []byte("clients") // client → lowWater + lastSeen

	keyApplied    = []byte("applied")
	keyEpoch      = []byte("epoch")
	keyLastExpiry = []byte("last-expiry")
)

// Status is the outcome of applying one entry.
type Status uint8

const (
	// Applied: the writes were applied.
	Applied Status = iota + 1
	// Duplicate: the (client, seq) was applied before; Reply is the stored reply
	// and nothing was written.
	Duplicate
	// Rejected: nothing was written; Reason says why. The call did not run.
	Rejected
	// Skipped: the entry was at or below the applied index (a replay at
	// start-up), or not a command.
	Skipped
)

// Result is what Apply returns for each entry.
type Result struct {
	Status Status
	Reply  []byte
	Reason string
	Index  uint64
	// Epoch is set for Activate entries: the new epoch (the entry's index).
	Epoch uint64
	// Object is set for applied Call entries: the object written.
	Object duro.ID
}

// Options configure a Machine. They must be the same on every replica.
type Options struct {
	// SessionTTL is how long, in log time, a client session is kept after its
	// last call. Zero means one hour.
	SessionTTL time.Duration
	// LazySync skips the fsync of every commit (see lazysync.go): the caller
	// must rebuild a discarded state (Discarded reports it) from the newest
	// snapshot and the Raft log, which hashicorp/raft's replay above the
	// applied index does. Without a boot ID to check, it falls back to fsync.
	LazySync bool
}

// Machine is one shard's state machine backed by one bbolt file.
type Machine struct {
	path string
	opts Options

	mu sync.RWMutex // guards db against replacement by Restore; readers hold it shared
	db *bolt.DB

	boot      string // this boot's ID when syncing lazily, else ""
	discarded bool   // Open threw away a state file torn by a machine crash

	// A write transaction ApplyBatchDeferred left open (see there). wmu
	// guards it and is taken inside mu; holding says whether one is open, so
	// that readers skip wmu when none is.
	wmu     sync.Mutex
	held    *bolt.Tx
	heldN   int // entries in held
	heldB   int // their bytes
	heldEnd *time.Timer
	holding atomic.Bool
}

// Bounds of what ApplyBatchDeferred leaves uncommitted.
const (
	maxHeldEntries = 1024
	maxHeldBytes   = 4 << 20
	maxHeldFor     = time.Second
)

// Open opens (or creates) the machine stored at path.
func Open(path string, opts Options) (*Machine, error) {
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = time.Hour
	}
	m := &Machine{path: path, opts: opts}
	if opts.LazySync {
		if boot, err := currentBoot(); err == nil {
			m.boot = boot
			if m.discarded, err = prepareLazy(path, boot); err != nil {
				return nil, err
			}
		}
	}
	if err := m.open(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Machine) open() error {
	// A large initial mmap makes remaps rare: a remap waits for every open
	// read transaction, including a snapshot being streamed.
	db, err := bolt.Open(m.path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true,
		FreelistType: bolt.FreelistMapType, InitialMmapSize: 1 << 30, NoSync: m.boot != ""})
	if err != nil {
		return fmt.Errorf("fsm: open %s: %w", m.path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketData, bucketVersion, bucketSess, bucketClients, bucketAlarm, bucketAlarmQ} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("fsm: init %s: %w", m.path, err)
	}
	m.db = db
	return nil
}

// Close closes the store.
func (m *Machine) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.db == nil {
		return nil
	}
	m.wmu.Lock()
	err := m.commitHeld()
	m.wmu.Unlock()
	if err == nil && m.boot != "" {
		err = m.db.Sync()
	}
	if cerr := m.db.Close(); err == nil {
		err = cerr
	}
	m.db = nil
	if err == nil && m.boot != "" {
		err = writeMarker(m.path, marker{boot: m.boot, clean: true})
	}
	return err
}

// Discarded reports whether Open threw the state file away because a
// machine crash may have torn it; the state is then empty and must be
// rebuilt from the newest snapshot and the log.
func (m *Machine) Discarded() bool { return m.discarded }

func getU64(b *bolt.Bucket, k []byte) uint64 { return u64Of(b.Get(k)) }

func u64Of(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// get is Bucket.Get through a cursor of the bucket, which it repositions:
// the value of key, or nil. Seek starts from the bucket's root whatever the
// cursor did before, so it sees every change the transaction made.
func get(c *bolt.Cursor, key []byte) []byte {
	if k, v := c.Seek(key); bytes.Equal(k, key) {
		return v
	}
	return nil
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// Applied returns the index of the last applied entry.
func (m *Machine) Applied() uint64 {
	var idx uint64
	m.peek(func(tx *bolt.Tx) error { idx = getU64(tx.Bucket(bucketMeta), keyApplied); return nil })
	return idx
}

// Epoch returns the current epoch: the index of the last Activate entry.
func (m *Machine) Epoch() uint64 {
	var e uint64
	m.peek(func(tx *bolt.Tx) error { e = getU64(tx.Bucket(bucketMeta), keyEpoch); return nil })
	return e
}

func (m *Machine) view(fn func(*bolt.Tx) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.db == nil {
		return errors.New("fsm: closed")
	}
	m.flushHeld()
	return m.db.View(fn)
}

// peek runs a short read (fn must copy what it keeps and must not call the
// machine) on the applied state. With a held transaction open it reads
// through that transaction under wmu instead of committing it, so a leader
// whose objects read before every call (sessions, versions, keys) does not
// turn each read into a commit. Long reads (Scan, Hash) use view: they would
// hold up applies.
func (m *Machine) peek(fn func(*bolt.Tx) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.db == nil {
		return errors.New("fsm: closed")
	}
	if m.holding.Load() {
		m.wmu.Lock()
		if tx := m.held; tx != nil {
			defer m.wmu.Unlock()
			return fn(tx)
		}
		m.wmu.Unlock()
	}
	return m.db.View(fn)
}

// flushHeld commits the transaction ApplyBatchDeferred left open, so that
// what follows reads every applied entry. The caller holds mu (shared).
func (m *Machine) flushHeld() {
	if !m.holding.Load() {
		return
	}
	m.wmu.Lock()
	defer m.wmu.Unlock()
	if err := m.commitHeld(); err != nil {
		panic(fmt.Sprintf("fsm: commit applied entries to %s failed, stopping this replica: %v", m.path, err))
	}
}

// commitHeld commits the held transaction, if any. The caller holds wmu.
func (m *Machine) commitHeld() error {
	tx := m.held
	if tx == nil {
		return nil
	}
	m.held, m.heldN, m.heldB = nil, 0, 0
	m.heldEnd.Stop()
	err := tx.Commit()
	// Only now: a reader that sees holding false must find the commit done.
	m.holding.Store(false)
	return err
}

// ApplyBatch applies committed log entries in one bbolt transaction, commits
// it, and returns one *Result per entry. It panics on a storage error or an
// undecodable entry: the replica must stop rather than diverge.
func (m *Machine) ApplyBatch(logs []*raft.Log) []any { return m.apply(logs, false) }

// ApplyBatchDeferred is ApplyBatch without the commit: the entries join a
// write transaction left open for later batches, committed once it holds
// maxHeldEntries entries or maxHeldBytes of them, or has been open for
// maxHeldFor, by the next ApplyBatch, and before a long read (Scan, Alarms,
// Hash, Snapshot) or Close; short reads (peek) read through it. A replica so
// pays bbolt's commit (a page write per dirty page) once per many batches
// instead of once per batch. Nothing is less durable for it: the state file
// is not fsync'd per commit anyway (lazysync.go), and entries lost with an
// uncommitted transaction are above the stored applied index, so Raft
// applies them again after a restart.
func (m *Machine) ApplyBatchDeferred(logs []*raft.Log) []any { return m.apply(logs, true) }

func (m *Machine) apply(logs []*raft.Log, deferred bool) []any {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.db == nil {
		panic(fmt.Sprintf("fsm: apply to %s: store is closed (a restore failed?); stopping this replica", m.path))
	}
	m.wmu.Lock()
	defer m.wmu.Unlock()
	tx := m.held
	if tx == nil {
		var err error
		if tx, err = m.db.Begin(true); err != nil {
			panic(fmt.Sprintf("fsm: apply to %s failed, stopping this replica: %v", m.path, err))
		}
	}
	done := false
	defer func() {
		if !done {
			// Panicking: release bbolt's writer lock, held entries included.
			tx.Rollback()
			if m.held == tx {
				m.held, m.heldN, m.heldB = nil, 0, 0
				m.heldEnd.Stop()
				m.holding.Store(false)
			}
		}
	}()
	out, err := m.applyTx(tx, logs)
	if err != nil {
		panic(fmt.Sprintf("fsm: apply to %s failed, stopping this replica: %v", m.path, err))
	}
	if m.held == nil && !deferred {
		if err := tx.Commit(); err != nil {
			panic(fmt.Sprintf("fsm: apply to %s failed, stopping this replica: %v", m.path, err))
		}
		done = true
		return out
	}
	if m.held == nil {
		m.held = tx
		m.holding.Store(true)
		m.heldEnd = time.AfterFunc(maxHeldFor, func() {
			m.mu.RLock()
			defer m.mu.RUnlock()
			m.flushHeld()
		})
	}
	m.heldN += len(logs)
	for _, l := range logs {
		m.heldB += len(l.Data)
	}
	if !deferred || m.heldN >= maxHeldEntries || m.heldB >= maxHeldBytes {
		if err := m.commitHeld(); err != nil {
			panic(fmt.Sprintf("fsm: apply to %s failed, stopping this replica: %v", m.path, err))
		}
	}
	done = true
	return out
}

// batch is what applying one batch of entries reads again and again: the
// buckets, and the meta values only entries of the batch change.
type batch struct {
	tx                                 *bolt.Tx
	meta, data, version, sess, clients *bolt.Bucket
	// Cursors the batch's lookups reuse: Bucket.Get makes a cursor, and
	// grows its path, on every call.
	versionCur, sessCur, clientsCur *bolt.Cursor
	epoch                           uint64
	lastExpiry                      int64
}

func newBatch(tx *bolt.Tx) *batch {
	b := &batch{tx: tx, meta: tx.Bucket(bucketMeta), data: tx.Bucket(bucketData), version: tx.Bucket(bucketVersion),
		sess: tx.Bucket(bucketSess), clients: tx.Bucket(bucketClients)}
	b.versionCur, b.sessCur, b.clientsCur = b.version.Cursor(), b.sess.Cursor(), b.clients.Cursor()
	b.epoch = getU64(b.meta, keyEpoch)
	b.lastExpiry = int64(getU64(b.meta, keyLastExpiry))
	return b
}

func (m *Machine) applyTx(tx *bolt.Tx, logs []*raft.Log) ([]any, error) {
	out := make([]any, len(logs))
	b := newBatch(tx)
	meta := b.meta
	applied := getU64(meta, keyApplied)
	last := applied
	for i, l := range logs {
		if l.Index <= applied || l.Type != raft.LogCommand {
			out[i] = &Result{Status: Skipped, Index: l.Index}
			if l.Index > last {
				last = l.Index
			}
			continue
		}
		r, err := m.applyOne(b, l)
		if err != nil {
			return nil, err
		}
		r.Index = l.Index
		out[i] = r
		last = l.Index
	}
	if last != applied {
		return out, meta.Put(keyApplied, u64(last))
	}
	return out, nil
}

func (m *Machine) applyOne(b *batch, l *raft.Log) (*Result, error) {
	e, err := Decode(l.Data)
	if err != nil {
		return nil, fmt.Errorf("entry %d: %w", l.Index, err)
	}
	switch e := e.(type) {
	case *Activate:
		if err := b.meta.Put(keyEpoch, u64(l.Index)); err != nil {
			return nil, err
		}
		b.epoch = l.Index
		return &Result{Status: Applied, Epoch: l.Index}, m.expire(b, e.Time)
	case *Call:
		return m.applyCall(b, e)
	}
	return nil, fmt.Errorf("entry %d: unexpected %T", l.Index, e)
}

func sessKey(c ClientID, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), c[:]...), seq)
}

func (m *Machine) applyCall(b *batch, c *Call) (*Result, error) {
	hasSession := c.Client != ClientID{}
	var acked uint64 // the client's watermark before this call
	if hasSession {
		st, reply, low := lookupSession(b.sessCur, b.clientsCur, c.Client, c.Seq)
		if st != 0 {
			return &Result{Status: st, Reply: reply, Reason: "sequence already acknowledged"}, nil
		}
		acked = low
	}
	if e := b.epoch; c.Epoch != e {
		return &Result{Status: Rejected, Reason: fmt.Sprintf("stale epoch %d, shard is at epoch %d", c.Epoch, e)}, nil
	}
	vb := b.version
	ver := u64Of(get(b.versionCur, c.Object[:]))
	if c.BaseVersion != ver {
		return &Result{Status: Rejected, Reason: fmt.Sprintf("object version %d, call was run on version %d", ver, c.BaseVersion)}, nil
	}
	data := b.data
	if c.ClearAll {
		if err := deletePrefix(data, c.Object[:]); err != nil {
			return nil, err
		}
	}
	for _, op := range c.Ops {
		k := dataKey(c.Object, op.Key)
		var err error
		if op.Kind == OpPut {
			err = data.Put(k, op.Value)
		} else {
			err = data.Delete(k)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := applyAlarm(b.tx, c); err != nil {
		return nil, err
	}
	if err := vb.Put(c.Object[:], u64(ver+1)); err != nil {
		return nil, err
	}
	if hasSession {
		if err := b.recordSession(c, acked); err != nil {
			return nil, err
		}
	}
	return &Result{Status: Applied, Reply: c.Reply, Object: c.Object}, m.expire(b, c.Time)
}

// sessionLookup returns Duplicate and the reply if (client, seq) was applied,
// Rejected if seq is below the client's acknowledged watermark, or 0.
func sessionLookup(sess, clients *bolt.Bucket, c ClientID, seq uint64) (Status, []byte) {
	st, reply, _ := lookupSession(sess.Cursor(), clients.Cursor(), c, seq)
	return st, reply
}

// lookupSession is sessionLookup that also returns the client's watermark
// (0 for a client without one), which recordSession needs.
func lookupSession(sess, clients *bolt.Cursor, c ClientID, seq uint64) (st Status, reply []byte, low uint64) {
	if v := get(sess, sessKey(c, seq)); v != nil {
		return Duplicate, append([]byte(nil), v[8:]...), 0
	}
	if v := get(clients, c[:]); len(v) == 16 {
		low = binary.BigEndian.Uint64(v)
	}
	if seq < low {
		return Rejected, nil, low
	}
	return 0, nil, low
}

// recordSession stores the reply of c and moves its client's watermark up to
// c.AckedBelow; low is the watermark before c (lookupSession's).
func (b *batch) recordSession(c *Call, low uint64) error {
	sess, cur := b.sess, b.sessCur
	v := binary.BigEndian.AppendUint64(nil, uint64(c.Time))
	if err := sess.Put(sessKey(c.Client, c.Seq), append(v, c.Reply...)); err != nil {
		return err
	}
	if c.AckedBelow > low {
		// Drop replies the client has acknowledged. Collect the keys first:
		// Cursor.Delete followed by Next skips a key when the leaf was already
		// modified in this transaction, which depends on how entries were
		// batched into transactions, so replicas would prune differently.
		var drop [][]byte
		for k, _ := cur.Seek(sessKey(c.Client, low)); k != nil && bytes.HasPrefix(k, c.Client[:]); k, _ = cur.Next() {
			if binary.BigEndian.Uint64(k[16:]) >= c.AckedBelow {
				break
			}
			drop = append(drop, append([]byte(nil), k...))
		}
		for _, k := range drop {
			if err := sess.Delete(k); err != nil {
				return err
			}
		}
		low = c.AckedBelow
	}
	rec := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, low), uint64(c.Time))
	return b.clients.Put(c.Client[:], rec)
}

// expire drops sessions idle for longer than SessionTTL, in log time. It scans
// at most once per TTL/8 of log time, so its cost is amortised.
func (m *Machine) expire(b *batch, now int64) error {
	ttl := int64(m.opts.SessionTTL)
	if now-b.lastExpiry < ttl/8 {
		return nil
	}
	if err := b.meta.Put(keyLastExpiry, u64(uint64(now))); err != nil {
		return err
	}
	b.lastExpiry = now
	clients, sess := b.clients, b.sess
	var dead [][]byte
	clients.ForEach(func(k, v []byte) error {
		if len(v) == 16 && now-int64(binary.BigEndian.Uint64(v[8:])) > ttl {
			dead = append(dead, append([]byte(nil), k...))
		}
		return nil
	})
	for _, k := range dead {
		if err := clients.Delete(k); err != nil {
			return err
		}
		if err := deletePrefix(sess, k); err != nil {
			return err
		}
	}
	return nil
}

func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	cur := b.Cursor()
	for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Seek(prefix) {
		if err := cur.Delete(); err != nil {
			return err
		}
	}
	return nil
}

func dataKey(id duro.ID, key []byte) []byte {
	k := make([]byte, 0, len(id)+len(key))
	return append(append(k, id[:]...), key...)
}

// Get returns the applied value of key in object id.
func (m *Machine) Get(id duro.ID, key []byte) (val []byte, ok bool, err error) {
	err = m.peek(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketData).Get(dataKey(id, key)); v != nil {
			val, ok = append([]byte{}, v...), true
		}
		return nil
	})
	return val, ok, err
}

// Version returns the number of Call entries applied to object id.
func (m *Machine) Version(id duro.ID) uint64 {
	var v uint64
	m.peek(func(tx *bolt.Tx) error { v = getU64(tx.Bucket(bucketVersion), id[:]); return nil })
	return v
}

// Session reports what the table holds for (client, seq): Duplicate with the
// stored reply, Rejected if seq is below the client's watermark, or 0.
func (m *Machine) Session(c ClientID, seq uint64) (st Status, reply []byte) {
	m.peek(func(tx *bolt.Tx) error {
		st, reply = sessionLookup(tx.Bucket(bucketSess), tx.Bucket(bucketClients), c, seq)
		return nil
	})
	return st, reply
}

// Scan calls fn for the applied keys of object id in [start, end) in key
// order (or reverse), stopping when fn returns false. nil bounds are open.
func (m *Machine) Scan(id duro.ID, start, end []byte, reverse bool, fn func(k, v []byte) bool) error {
	lo := dataKey(id, start)
	var hi []byte
	if end != nil {
		hi = dataKey(id, end)
	} else {
		hi = prefixEnd(id[:])
	}
	return m.view(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bucketData).Cursor()
		if !reverse {
			for k, v := cur.Seek(lo); k != nil && below(k, hi); k, v = cur.Next() {
				if !fn(k[len(id):], v) {
					return nil
				}
			}
			return nil
		}
		var k, v []byte
		if hi != nil {
			k, v = cur.Seek(hi)
		}
		if k == nil {
			k, v = cur.Last()
		} else {
			k, v = cur.Prev()
		}
		for ; k != nil && bytes.Compare(k, lo) >= 0; k, v = cur.Prev() {
			if !below(k, hi) {
				continue
			}
			if !fn(k[len(id):], v) {
				return nil
			}
		}
		return nil
	})
}

// below reports k < hi, where a nil hi is no bound.
func below(k, hi []byte) bool { return hi == nil || bytes.Compare(k, hi) < 0 }

// prefixEnd returns the smallest key greater than every key with prefix p, or
// nil (no bound) when p is all 0xff.
func prefixEnd(p []byte) []byte {
	e := append([]byte(nil), p...)
	for i := len(e) - 1; i >= 0; i-- {
		if e[i] < 0xff {
			e[i]++
			return e[:i+1]
		}
	}
	return nil
}

// Snapshot returns a point-in-time view of the whole machine. Write streams it
// while applies go on; Release must be called.
func (m *Machine) Snapshot() (*Snapshot, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	m.flushHeld()
	tx, err := m.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("fsm: snapshot: %w", err)
	}
	return &Snapshot{tx: tx}, nil
}

// Snapshot is a consistent read view of a Machine.
type Snapshot struct{ tx *bolt.Tx }

// Write streams the snapshot to w: a bbolt file image followed by a trailer
// (image length and SHA-256), so Restore can refuse a truncated or damaged
// image before it replaces anything.
func (s *Snapshot) Write(w io.Writer) error {
	h := sha256.New()
	n, err := s.tx.WriteTo(io.MultiWriter(w, h))
	if err != nil {
		return err
	}
	_, err = w.Write(h.Sum(binary.BigEndian.AppendUint64(nil, uint64(n))))
	return err
}

const trailerLen = 8 + sha256.Size

// verifyImage checks the trailer of a snapshot written to f and truncates it
// off, leaving the bare bbolt image.
func verifyImage(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size() - trailerLen
	if size <= 0 {
		return errors.New("snapshot too short")
	}
	trailer := make([]byte, trailerLen)
	if _, err := f.ReadAt(trailer, size); err != nil {
		return err
	}
	if binary.BigEndian.Uint64(trailer) != uint64(size) {
		return fmt.Errorf("snapshot length %d does not match its trailer (%d)", size, binary.BigEndian.Uint64(trailer))
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return err
	}
	if !bytes.Equal(h.Sum(nil), trailer[8:]) {
		return errors.New("snapshot checksum mismatch")
	}
	return f.Truncate(size)
}

// Release ends the view.
func (s *Snapshot) Release() { s.tx.Rollback() }

// Restore replaces the machine's whole state with the snapshot read from r.
func (m *Machine) Restore(r io.Reader) error {
	tmp, err := os.CreateTemp(filepath.Dir(m.path), ".restore-*")
	if err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return fmt.Errorf("fsm: restore: copy: %w", err)
	}
	if err := verifyImage(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fsm: restore: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// Check the image opens before replacing anything.
	chk, err := bolt.Open(tmp.Name(), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("fsm: restore: snapshot is not a valid store: %w", err)
	}
	chk.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wmu.Lock()
	if m.held != nil {
		// The snapshot replaces whatever the held entries wrote.
		m.held.Rollback()
		m.held, m.heldN, m.heldB = nil, 0, 0
		m.heldEnd.Stop()
		m.holding.Store(false)
	}
	m.wmu.Unlock()
	if m.db != nil {
		m.db.Close()
	}
	m.db = nil // reads and applies fail loudly until the reopen below succeeds
	if err := os.Rename(tmp.Name(), m.path); err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if d, err := os.Open(filepath.Dir(m.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return m.open()
}

// Hash returns a digest of the replicated state (everything but the
// bookkeeping of start-up replay), for comparing replicas.
func (m *Machine) Hash() (applied uint64, sum [32]byte, err error) {
	h := newHasher()
	err = m.view(func(tx *bolt.Tx) error {
		applied = getU64(tx.Bucket(bucketMeta), keyApplied)
		for _, name := range [][]byte{bucketData, bucketVersion, bucketSess, bucketClients} {
			h.add(name)
			tx.Bucket(name).ForEach(func(k, v []byte) error { h.add(k); h.add(v); return nil })
		}
		h.add(u64(getU64(tx.Bucket(bucketMeta), keyEpoch)))
		hashAlarms(tx, h)
		return nil
	})
	return applied, h.sum(), err
}
