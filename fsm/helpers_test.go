package fsm

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/hashicorp/raft"
)

// t0 is the log time of the first entries of most tests.
const t0 = int64(1_700_000_000_000_000_000)

// fixture is a Machine in a temporary directory that can be reopened.
type fixture struct {
	t    testing.TB
	path string
	opts Options
	m    *Machine
}

func newFixture(t testing.TB, opts Options) *fixture {
	t.Helper()
	f := &fixture{t: t, path: filepath.Join(t.TempDir(), "shard.db"), opts: opts}
	f.open()
	t.Cleanup(func() {
		if err := f.m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return f
}

func newMachine(t testing.TB) *Machine { return newFixture(t, Options{}).m }

func (f *fixture) open() {
	f.t.Helper()
	m, err := Open(f.path, f.opts)
	if err != nil {
		f.t.Fatalf("Open: %v", err)
	}
	f.m = m
}

// reopen closes the machine and opens its file again, as after a restart.
func (f *fixture) reopen() {
	f.t.Helper()
	if err := f.m.Close(); err != nil {
		f.t.Fatalf("Close: %v", err)
	}
	f.open()
}

func cmdLog(idx uint64, data []byte) *raft.Log {
	return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}
}

func callLog(idx uint64, c *Call) *raft.Log { return cmdLog(idx, EncodeCall(c)) }

func activateLog(idx uint64, tm int64) *raft.Log {
	return cmdLog(idx, EncodeActivate(&Activate{Node: "n" + strconv.FormatUint(idx, 10), Term: idx, Time: tm}))
}

func typedLog(idx uint64, typ raft.LogType, data []byte) *raft.Log {
	return &raft.Log{Index: idx, Term: 1, Type: typ, Data: data}
}

// apply applies logs as one batch and checks the shape of the results.
func apply(t testing.TB, m *Machine, logs ...*raft.Log) []*Result {
	t.Helper()
	out := m.ApplyBatch(logs)
	if len(out) != len(logs) {
		t.Fatalf("ApplyBatch returned %d results for %d logs", len(out), len(logs))
	}
	rs := make([]*Result, len(out))
	for i, o := range out {
		r, ok := o.(*Result)
		if !ok || r == nil {
			t.Fatalf("result %d is %T", i, o)
		}
		if r.Index != logs[i].Index {
			t.Fatalf("result %d has index %d, log has %d", i, r.Index, logs[i].Index)
		}
		rs[i] = r
	}
	return rs
}

func apply1(t testing.TB, m *Machine, l *raft.Log) *Result {
	t.Helper()
	return apply(t, m, l)[0]
}

func wantStatus(t testing.TB, r *Result, want Status) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("entry %d: status %v (reason %q), want %v", r.Index, r.Status, r.Reason, want)
	}
}

func put(k, v string) Op { return Op{Kind: OpPut, Key: []byte(k), Value: []byte(v)} }
func del(k string) Op    { return Op{Kind: OpDelete, Key: []byte(k)} }

// contents reads an object's whole contents with Scan.
func contents(t testing.TB, m *Machine, id duro.ID) map[string]string {
	t.Helper()
	got := map[string]string{}
	var prev []byte
	first := true
	err := m.Scan(id, nil, nil, false, func(k, v []byte) bool {
		if !first && bytes.Compare(prev, k) >= 0 {
			t.Errorf("Scan out of order: %q after %q", k, prev)
		}
		first, prev = false, append(prev[:0], k...)
		got[string(k)] = string(v)
		return true
	})
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return got
}

func getKey(t testing.TB, m *Machine, id duro.ID, k string) (string, bool) {
	t.Helper()
	v, ok, err := m.Get(id, []byte(k))
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return string(v), ok
}

type state struct {
	applied uint64
	sum     [32]byte
}

func hashOf(t testing.TB, m *Machine) state {
	t.Helper()
	a, s, err := m.Hash()
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	return state{a, s}
}

func snapshotBytes(t testing.TB, m *Machine) []byte {
	t.Helper()
	s, err := m.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer s.Release()
	var buf bytes.Buffer
	if err := s.Write(&buf); err != nil {
		t.Fatalf("Snapshot.Write: %v", err)
	}
	return buf.Bytes()
}

// idAfter returns the ID that follows id in byte order.
func idAfter(id duro.ID) duro.ID {
	for i := len(id) - 1; i >= 0; i-- {
		id[i]++
		if id[i] != 0 {
			break
		}
	}
	return id
}

// neighbourIDs returns n consecutive IDs, the first ending in 0xfe, so the
// set contains IDs that differ in the last byte and a carry into the byte
// before.
func neighbourIDs(n int) []duro.ID {
	id := testID(0x40)
	id[duro.IDLen-1] = 0xfe
	ids := make([]duro.ID, n)
	for i := range ids {
		ids[i] = id
		id = idAfter(id)
	}
	return ids
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// testRand returns a seeded source; the seed is logged and can be fixed with
// FSM_TEST_SEED to reproduce a failure.
func testRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := time.Now().UnixNano()
	if s := os.Getenv("FSM_TEST_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("FSM_TEST_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (set FSM_TEST_SEED=%d to reproduce)", seed, seed)
	return rand.New(rand.NewSource(seed))
}
