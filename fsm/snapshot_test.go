package fsm

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// populate applies n generated entries to m and returns them.
func populate(t testing.TB, m *Machine, g *entryGen, n int) []*raft.Log {
	t.Helper()
	var logs []*raft.Log
	for len(logs) < n {
		chunk := g.chunk(m, 1+g.r.Intn(8))
		apply(t, m, chunk...)
		logs = append(logs, chunk...)
	}
	return logs
}

func TestSnapshotRestore(t *testing.T) {
	r := testRand(t)
	opts := Options{SessionTTL: time.Minute}
	src := newFixture(t, opts)
	g := newEntryGen(r)
	populate(t, src.m, g, 300)
	atSnap := hashOf(t, src.m)
	epoch := src.m.Epoch()
	img := snapshotBytes(t, src.m)

	later := populate(t, src.m, g, 100)
	final := hashOf(t, src.m)
	if final == atSnap {
		t.Fatal("later entries did not change the state")
	}

	// Restore into a machine that has state of its own.
	dst := newFixture(t, opts)
	populate(t, dst.m, newEntryGen(rand.New(rand.NewSource(r.Int63()))), 50)
	if err := dst.m.Restore(bytes.NewReader(img)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := hashOf(t, dst.m); got != atSnap {
		t.Fatalf("restored state %d/%x, snapshot was %d/%x", got.applied, got.sum[:8], atSnap.applied, atSnap.sum[:8])
	}
	if dst.m.Epoch() != epoch || dst.m.Applied() != atSnap.applied {
		t.Fatalf("restored epoch %d applied %d", dst.m.Epoch(), dst.m.Applied())
	}
	// And into the machine it was taken from.
	if err := src.m.Restore(bytes.NewReader(img)); err != nil {
		t.Fatalf("Restore into source: %v", err)
	}
	if got := hashOf(t, src.m); got != atSnap {
		t.Fatal("restoring the source did not roll it back to the snapshot")
	}
	// The restored state is durable.
	dst.reopen()
	if got := hashOf(t, dst.m); got != atSnap {
		t.Fatal("restored state lost on reopen")
	}
	// Replaying the later entries on either brings both to the same state.
	// Entries at or below the snapshot index are skipped.
	for _, f := range []*fixture{src, dst} {
		rs := apply(t, f.m, later...)
		if got := hashOf(t, f.m); got != final {
			t.Fatalf("replay after restore: %d/%x, want %d/%x", got.applied, got.sum[:8], final.applied, final.sum[:8])
		}
		if len(rs) > 0 && rs[0].Status == Skipped && later[0].Type == raft.LogCommand {
			t.Fatalf("first entry after the snapshot was skipped")
		}
	}
}

// A snapshot is a point-in-time view even if entries are applied while it is
// written.
func TestSnapshotIsPointInTime(t *testing.T) {
	r := testRand(t)
	m := newMachine(t)
	g := newEntryGen(r)
	populate(t, m, g, 100)
	want := hashOf(t, m)
	s, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	more := g.chunk(m, 50)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, l := range more {
			m.ApplyBatch([]*raft.Log{l})
		}
	}()
	var buf bytes.Buffer
	werr := s.Write(&buf)
	s.Release()
	<-done
	if werr != nil {
		t.Fatalf("Write: %v", werr)
	}
	if m.Applied() != more[len(more)-1].Index {
		t.Fatalf("Applied = %d", m.Applied())
	}
	m2 := newMachine(t)
	if err := m2.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if got := hashOf(t, m2); got != want {
		t.Fatal("snapshot saw entries applied after it was taken")
	}
}

type failingReader struct {
	r io.Reader
	n int
}

var errInjected = errors.New("injected read error")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errInjected
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

// brokenMeta returns img with the magic of both meta pages overwritten.
func brokenMeta(img []byte, pageSize int) []byte {
	b := append([]byte(nil), img...)
	for _, off := range []int{16, pageSize + 16} {
		if off+4 <= len(b) {
			copy(b[off:], "XXXX")
		}
	}
	return b
}

func TestRestoreRejectsGarbage(t *testing.T) {
	r := testRand(t)
	f := newFixture(t, Options{})
	g := newEntryGen(r)
	populate(t, f.m, g, 40)
	img := snapshotBytes(t, f.m)
	noise := make([]byte, 64<<10)
	r.Read(noise)
	inputs := map[string]io.Reader{
		"empty":       bytes.NewReader(nil),
		"short":       bytes.NewReader([]byte("not a bbolt file")),
		"zeros":       bytes.NewReader(make([]byte, 16<<10)),
		"noise":       bytes.NewReader(noise),
		"broken meta": bytes.NewReader(brokenMeta(img, 4096)),
		"read error":  &failingReader{r: bytes.NewReader(img), n: len(img) / 2},
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			before := hashOf(t, f.m)
			if err := f.m.Restore(in); err == nil {
				t.Fatal("Restore accepted a bad snapshot")
			} else if name == "read error" && !errors.Is(err, errInjected) {
				t.Fatalf("error %v does not wrap the read error", err)
			}
			if got := hashOf(t, f.m); got != before {
				t.Fatal("failed Restore changed the state")
			}
			f.reopen()
			if got := hashOf(t, f.m); got != before {
				t.Fatal("failed Restore replaced the file")
			}
			// Still usable.
			rs := apply(t, f.m, g.chunk(f.m, 3)...)
			if f.m.Applied() != rs[len(rs)-1].Index {
				t.Fatalf("Applied = %d after apply", f.m.Applied())
			}
		})
	}
}

// A truncated image must be refused before the live store is touched: bbolt
// would fault (SIGBUS) walking it. The snapshot trailer's length and checksum
// catch it.
func TestRestoreTruncatedSnapshot(t *testing.T) {
	r := testRand(t)
	m := newMachine(t)
	populate(t, m, newEntryGen(r), 100)
	before := hashOf(t, m)
	img := snapshotBytes(t, m)
	if err := m.Restore(bytes.NewReader(img[:len(img)/2])); err == nil {
		t.Fatal("Restore accepted a truncated snapshot")
	}
	if got := hashOf(t, m); got != before {
		t.Fatal("failed Restore changed the state")
	}
}

func FuzzRestore(f *testing.F) {
	seedMachine := func(t testing.TB) *Machine {
		m := newMachine(t)
		apply(t, m,
			activateLog(1, t0),
			callLog(2, &Call{Epoch: 1, Time: t0, Object: testID(1), Client: ClientID{1}, Seq: 1, Reply: []byte("r"), Ops: []Op{put("k", "v")}}),
		)
		return m
	}
	// Seeds: valid images (empty and with state) and near misses.
	empty := snapshotBytes(f, newMachine(f))
	populated := newMachine(f)
	populate(f, populated, newEntryGen(rand.New(rand.NewSource(1))), 30)
	full := snapshotBytes(f, populated)
	f.Add([]byte(nil))
	f.Add([]byte("garbage"))
	f.Add(make([]byte, 8192))
	f.Add(empty)
	f.Add(full)
	f.Add(brokenMeta(full, 4096))
	f.Add(full[:4096])
	f.Fuzz(func(t *testing.T, data []byte) {
		m := seedMachine(t)
		before := hashOf(t, m)
		if err := m.Restore(bytes.NewReader(data)); err != nil {
			if got := hashOf(t, m); got != before {
				t.Fatalf("failed Restore (%v) changed the state", err)
			}
		}
		// Either way the machine works: a fresh object accepts a call.
		id := testID(0x5a)
		idx := m.Applied() + 1
		r := apply1(t, m, callLog(idx, &Call{Epoch: m.Epoch(), Object: id, BaseVersion: m.Version(id), Ops: []Op{put("fuzz", "ok")}}))
		wantStatus(t, r, Applied)
		if v, ok := getKey(t, m, id, "fuzz"); !ok || v != "ok" {
			t.Fatalf("Get after Restore = %q %v", v, ok)
		}
		if m.Applied() != idx {
			t.Fatalf("Applied = %d, want %d", m.Applied(), idx)
		}
	})
}
