package fsm

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// snapshotImage writes a snapshot of m.
func snapshotImage(t testing.TB, m *Machine) *bytes.Buffer {
	t.Helper()
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var buf bytes.Buffer
	if err := snap.Write(&buf); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// applyDeferred is apply through ApplyBatchDeferred.
func applyDeferred(t testing.TB, m *Machine, logs ...*raft.Log) []*Result {
	t.Helper()
	out := m.ApplyBatchDeferred(logs)
	rs := make([]*Result, len(out))
	for i, o := range out {
		rs[i] = o.(*Result)
	}
	return rs
}

// A follower's deferred batches are invisible to nothing: every way of
// reading the machine sees every entry applied so far.
func TestDeferredApplyIsReadable(t *testing.T) {
	f := newFixture(t, Options{})
	m := f.m
	id := testID(1)
	applyDeferred(t, m, activateLog(1, t0))
	rs := applyDeferred(t, m, callLog(2, &Call{Epoch: 1, Time: t0, Object: id, Ops: []Op{put("k", "v1")}, Client: ClientID{7}, Seq: 1, Reply: []byte("r1")}))
	wantStatus(t, rs[0], Applied)
	if !m.holding.Load() {
		t.Fatal("ApplyBatchDeferred committed at once")
	}
	if got := m.Applied(); got != 2 {
		t.Fatalf("Applied = %d after deferred batches, want 2", got)
	}
	if v, ok := getKey(t, m, id, "k"); !ok || v != "v1" {
		t.Fatalf("Get = %q, %v; want v1", v, ok)
	}
	if st, reply := m.Session(ClientID{7}, 1); st != Duplicate || string(reply) != "r1" {
		t.Fatalf("Session = %v %q, want the stored reply", st, reply)
	}

	// A snapshot taken while a batch is held includes it.
	applyDeferred(t, m, callLog(3, &Call{Epoch: 1, Time: t0, Object: id, BaseVersion: 1, Ops: []Op{put("k", "v2")}}))
	buf := snapshotImage(t, m)
	other := newMachine(t)
	if err := other.Restore(buf); err != nil {
		t.Fatal(err)
	}
	if v, _ := getKey(t, other, id, "k"); v != "v2" || other.Applied() != 3 {
		t.Fatalf("restored snapshot has k=%q at %d, want v2 at 3", v, other.Applied())
	}
	if hashOf(t, other) != hashOf(t, m) {
		t.Fatal("snapshot of a held batch differs from the machine")
	}

	// Close commits what is held.
	applyDeferred(t, m, callLog(4, &Call{Epoch: 1, Time: t0, Object: id, BaseVersion: 2, Ops: []Op{put("k", "v3")}}))
	f.reopen()
	if v, _ := getKey(t, f.m, id, "k"); v != "v3" || f.m.Applied() != 4 {
		t.Fatalf("after reopen k=%q at %d, want v3 at 4", v, f.m.Applied())
	}
}

// A held batch is committed without a reader: by its time limit, by its
// size limits, and by the next ApplyBatch.
func TestDeferredApplyCommits(t *testing.T) {
	m := newMachine(t)
	id := testID(2)
	applyDeferred(t, m, activateLog(1, t0))
	deadline := time.Now().Add(30 * time.Second)
	for m.holding.Load() {
		if time.Now().After(deadline) {
			t.Fatal("a held batch was never committed")
		}
		time.Sleep(time.Millisecond)
	}
	if got := m.Applied(); got != 1 {
		t.Fatalf("Applied = %d, want 1", got)
	}

	idx, ver := uint64(1), uint64(0)
	var batch []*raft.Log
	for range maxHeldEntries {
		idx++
		batch = append(batch, callLog(idx, &Call{Epoch: 1, Time: t0, Object: id, BaseVersion: ver, Ops: []Op{put("k", "v")}}))
		ver++
	}
	applyDeferred(t, m, batch...)
	if m.holding.Load() {
		t.Fatalf("%d entries held, limit %d", m.heldN, maxHeldEntries)
	}

	idx++
	big := Op{Kind: OpPut, Key: []byte("big"), Value: make([]byte, maxHeldBytes)}
	applyDeferred(t, m, callLog(idx, &Call{Epoch: 1, Time: t0, Object: id, BaseVersion: ver, Ops: []Op{big}}))
	ver++
	if m.holding.Load() {
		t.Fatalf("%d bytes held, limit %d", m.heldB, maxHeldBytes)
	}

	idx++
	applyDeferred(t, m, callLog(idx, &Call{Epoch: 1, Time: t0, Object: id, BaseVersion: ver, Ops: []Op{put("k", "v")}}))
	ver++
	idx++
	apply1(t, m, callLog(idx, &Call{Epoch: 1, Time: t0, Object: id, BaseVersion: ver, Ops: []Op{put("k", "last")}}))
	if m.holding.Load() {
		t.Fatal("ApplyBatch left the held batch open")
	}
	if v, _ := getKey(t, m, id, "k"); v != "last" || m.Applied() != idx || m.Version(id) != ver+1 {
		t.Fatalf("k=%q at %d (version %d), want last at %d (version %d)", v, m.Applied(), m.Version(id), idx, ver+1)
	}
}

// Restoring a snapshot drops a held batch: the snapshot replaces the state.
func TestRestoreDropsHeldBatch(t *testing.T) {
	src := newMachine(t)
	apply(t, src, activateLog(1, t0))
	buf := snapshotImage(t, src)

	m := newMachine(t)
	applyDeferred(t, m, activateLog(1, t0), callLog(2, &Call{Epoch: 1, Time: t0, Object: testID(3), Ops: []Op{put("k", "v")}}))
	if err := m.Restore(buf); err != nil {
		t.Fatal(err)
	}
	if m.holding.Load() || m.Applied() != 1 {
		t.Fatalf("after Restore: holding %v, applied %d; want the snapshot's state at 1", m.holding.Load(), m.Applied())
	}
	if _, ok := getKey(t, m, testID(3), "k"); ok {
		t.Fatal("a held write survived Restore")
	}
}

// Every way to read a Machine sees a held batch. A read method that went
// around view (or Snapshot) would read the last commit instead and fail
// here.
func TestEveryReadSeesHeldBatch(t *testing.T) {
	id := testID(4)
	readers := map[string]func(m *Machine) bool{
		"Get":     func(m *Machine) bool { v, ok, _ := m.Get(id, []byte("k")); return ok && string(v) == "v" },
		"Version": func(m *Machine) bool { return m.Version(id) == 1 },
		"Session": func(m *Machine) bool { st, _ := m.Session(ClientID{9}, 1); return st == Duplicate },
		"Scan":    func(m *Machine) bool { return contents(t, m, id)["k"] == "v" },
		"Applied": func(m *Machine) bool { return m.Applied() == 3 },
		"Epoch":   func(m *Machine) bool { return m.Epoch() == 2 },
		"Alarm":   func(m *Machine) bool { at, ok := m.Alarm(id); return ok && at == t0+5 },
		"Alarms": func(m *Machine) bool {
			n := 0
			m.Alarms(func(AlarmEntry) bool { n++; return true })
			return n == 1
		},
		"Hash": func(m *Machine) bool { applied, _, err := m.Hash(); return err == nil && applied == 3 },
		"Snapshot": func(m *Machine) bool {
			other := newMachine(t)
			return other.Restore(snapshotImage(t, m)) == nil && other.Applied() == 3
		},
	}
	for name, read := range readers {
		t.Run(name, func(t *testing.T) {
			m := newMachine(t)
			apply(t, m, activateLog(1, t0))
			applyDeferred(t, m, activateLog(2, t0), callLog(3, &Call{Epoch: 2, Time: t0, Namespace: "ns", Object: id,
				Ops: []Op{put("k", "v")}, Client: ClientID{9}, Seq: 1, Alarm: AlarmChange{Kind: AlarmSet, At: t0 + 5}}))
			if !m.holding.Load() {
				t.Fatal("the batch was committed before the read")
			}
			if !read(m) {
				t.Fatalf("%s does not see the held batch", name)
			}
		})
	}
}

// Point reads (what a leader's objects do before and during every call) read
// through a held batch instead of committing it: otherwise a leader would pay
// a commit per read, more than one per batch.
func TestPointReadsKeepHeldBatch(t *testing.T) {
	id := testID(5)
	m := newMachine(t)
	apply(t, m, activateLog(1, t0))
	applyDeferred(t, m, callLog(2, &Call{Epoch: 1, Time: t0, Namespace: "ns", Object: id,
		Ops: []Op{put("k", "v")}, Client: ClientID{9}, Seq: 1, Reply: []byte("r"), Alarm: AlarmChange{Kind: AlarmSet, At: t0 + 5}}))
	if v, ok, err := m.Get(id, []byte("k")); err != nil || !ok || string(v) != "v" {
		t.Fatalf("Get = %q, %v, %v", v, ok, err)
	}
	if st, reply := m.Session(ClientID{9}, 1); st != Duplicate || string(reply) != "r" {
		t.Fatalf("Session = %v %q", st, reply)
	}
	if m.Version(id) != 1 || m.Applied() != 2 || m.Epoch() != 1 {
		t.Fatalf("Version %d, Applied %d, Epoch %d; want 1, 2, 1", m.Version(id), m.Applied(), m.Epoch())
	}
	if at, ok := m.Alarm(id); !ok || at != t0+5 {
		t.Fatalf("Alarm = %d, %v", at, ok)
	}
	if !m.holding.Load() || m.heldN != 1 {
		t.Fatalf("point reads committed the held batch (holding %v, %d entries held)", m.holding.Load(), m.heldN)
	}
}

// Readers running while batches are applied and held never see state go
// backwards or a key that disagrees with the version beside it (run it with
// -race: a read through the held transaction must not overlap an apply).
func TestReadsDuringDeferredApplies(t *testing.T) {
	id := testID(6)
	m := newMachine(t)
	apply(t, m, activateLog(1, t0))
	const n = 400
	done := make(chan struct{})
	errs := make(chan string, 4)
	for r := 0; r < 3; r++ {
		go func() {
			var last uint64
			for {
				select {
				case <-done:
					errs <- ""
					return
				default:
				}
				a := m.Applied()
				if a < last {
					errs <- "Applied went backwards"
					return
				}
				last = a
				v, ok, err := m.Get(id, []byte("k"))
				if err != nil {
					errs <- err.Error()
					return
				}
				// Version and key are read apart: the key may only be newer.
				if ok && len(v) == 0 {
					errs <- "empty value"
					return
				}
				m.Version(id)
			}
		}()
	}
	for i := 1; i <= n; i++ {
		applyDeferred(t, m, callLog(uint64(i+1), &Call{Epoch: 1, Time: t0, Object: id, BaseVersion: uint64(i - 1),
			Ops: []Op{put("k", fmt.Sprint(i))}}))
	}
	close(done)
	for r := 0; r < 3; r++ {
		if e := <-errs; e != "" {
			t.Fatal(e)
		}
	}
	if v, ok := getKey(t, m, id, "k"); !ok || v != fmt.Sprint(n) || m.Version(id) != n || m.Applied() != n+1 {
		t.Fatalf("after %d applies: k=%q version %d applied %d", n, v, m.Version(id), m.Applied())
	}
}
