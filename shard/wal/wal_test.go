package wal

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func entry(i, term uint64) *raft.Log {
	l := &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("entry %d term %d", i, term)),
		AppendedAt: time.Unix(0, int64(i*1000+term))}
	if i%7 == 0 {
		l.Extensions = []byte{byte(i), 1, 2}
	}
	if i%11 == 0 {
		l.Data = nil
	}
	return l
}

func open(t *testing.T, dir string, seg int64) *Store {
	t.Helper()
	st, err := Open(dir, seg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return st
}

// model is what the log must hold: index -> term.
type model struct {
	first, last uint64
	terms       map[uint64]uint64
}

func check(t *testing.T, st *Store, m *model, when string) {
	t.Helper()
	if f, _ := st.FirstIndex(); f != m.first {
		t.Fatalf("%s: FirstIndex %d, want %d", when, f, m.first)
	}
	if l, _ := st.LastIndex(); l != m.last {
		t.Fatalf("%s: LastIndex %d, want %d", when, l, m.last)
	}
	for _, i := range []uint64{m.first - 1, m.last + 1} {
		var l raft.Log
		if err := st.GetLog(i, &l); err != raft.ErrLogNotFound && !(i == 0 && m.first == 0) {
			t.Fatalf("%s: GetLog(%d) outside %d-%d: %v, want ErrLogNotFound", when, i, m.first, m.last, err)
		}
	}
	if m.first == 0 {
		return
	}
	for i := m.first; i <= m.last; i++ {
		var l raft.Log
		if err := st.GetLog(i, &l); err != nil {
			t.Fatalf("%s: GetLog(%d): %v", when, i, err)
		}
		want := entry(i, m.terms[i])
		if l.Index != i || l.Term != want.Term || l.Type != want.Type || !bytes.Equal(l.Data, want.Data) ||
			!bytes.Equal(l.Extensions, want.Extensions) || !l.AppendedAt.Equal(want.AppendedAt) {
			t.Fatalf("%s: entry %d is %+v, want %+v", when, i, l, *want)
		}
	}
}

func (m *model) append(t *testing.T, st *Store, n int, term uint64) {
	t.Helper()
	start := m.last + 1
	if m.first == 0 {
		start = 1 + uint64(rand.Intn(1000))
		m.first = start
	}
	var logs []*raft.Log
	for i := 0; i < n; i++ {
		logs = append(logs, entry(start+uint64(i), term))
		m.terms[start+uint64(i)] = term
	}
	if err := st.StoreLogs(logs); err != nil {
		t.Fatalf("StoreLogs %d-%d: %v", start, start+uint64(n)-1, err)
	}
	m.last = start + uint64(n) - 1
}

// TestModel runs random appends, compactions, suffix truncations, complete
// deletions and restarts against a map, with segments small enough to
// rotate often.
func TestModel(t *testing.T) {
	for seed := int64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rand.Seed(seed)
			dir := t.TempDir()
			st := open(t, dir, 2048)
			defer func() { st.Close() }()
			m := &model{terms: map[uint64]uint64{}}
			term := uint64(1)
			for step := 0; step < 300; step++ {
				when := fmt.Sprintf("step %d", step)
				switch r := rand.Intn(20); {
				case r < 10 || m.first == 0:
					m.append(t, st, 1+rand.Intn(40), term)
				case r < 13: // compaction
					upto := m.first + uint64(rand.Intn(int(m.last-m.first+1)))
					if err := st.DeleteRange(m.first, upto); err != nil {
						t.Fatalf("%s: DeleteRange prefix: %v", when, err)
					}
					if upto >= m.last {
						m.first, m.last = 0, 0
					} else {
						m.first = upto + 1
					}
				case r < 16: // a follower drops a tail it got from a deposed leader
					from := m.first + uint64(rand.Intn(int(m.last-m.first+1)))
					if err := st.DeleteRange(from, m.last); err != nil {
						t.Fatalf("%s: DeleteRange suffix: %v", when, err)
					}
					if from <= m.first {
						m.first, m.last = 0, 0
					} else {
						m.last = from - 1
					}
					term++
				case r < 17: // snapshot installed: everything goes
					if err := st.DeleteRange(m.first, m.last); err != nil {
						t.Fatalf("%s: DeleteRange all: %v", when, err)
					}
					m.first, m.last = 0, 0
				default:
					if err := st.Close(); err != nil {
						t.Fatal(err)
					}
					st = open(t, dir, 2048)
					when += " (reopened)"
				}
				check(t, st, m, when)
			}
		})
	}
}

// The case hashicorp/raft-wal v0.4.0 failed (#31): cut the tail, append,
// restart.
func TestSuffixTruncationThenRestart(t *testing.T) {
	dir := t.TempDir()
	st := open(t, dir, 0)
	m := &model{first: 1, terms: map[uint64]uint64{}}
	m.last = 0
	var logs []*raft.Log
	for i := uint64(1); i <= 200; i++ {
		logs = append(logs, entry(i, 1))
		m.terms[i] = 1
	}
	if err := st.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	m.last = 200
	if err := st.DeleteRange(190, 200); err != nil {
		t.Fatal(err)
	}
	m.last = 189
	m.append(t, st, 1, 2)
	st.Close()
	st = open(t, dir, 0)
	defer st.Close()
	check(t, st, m, "after restart")
}

func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	sort.Strings(names)
	if len(names) == 0 {
		t.Fatal("no segments")
	}
	return names[len(names)-1]
}

// A crash in the middle of an append leaves a partial record at the end of
// the last segment: it was never acknowledged, and Open cuts it off.
func TestTornTailIsCut(t *testing.T) {
	for _, cut := range []int{1, 5, 8, 20} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			dir := t.TempDir()
			st := open(t, dir, 0)
			m := &model{terms: map[uint64]uint64{}}
			m.append(t, st, 50, 1)
			end := st.segs[len(st.segs)-1].end
			st.Close()
			// The next record, written only in part, into the zeroed tail.
			rec := appendRecord(nil, entry(m.last+1, 1))
			f, err := os.OpenFile(lastSegment(t, dir), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if fi, _ := f.Stat(); fi.Size() <= end {
				t.Fatalf("segment is %d bytes, no preallocated space after its records (%d)", fi.Size(), end)
			}
			f.WriteAt(rec[:cut], end)
			f.Close()
			st = open(t, dir, 0)
			defer st.Close()
			check(t, st, m, "after a torn append")
			m.append(t, st, 3, 1)
			check(t, st, m, "appending after the cut")
		})
	}
}

// A process that dies leaves the last segment with zeros after its records
// (the preallocated space), and every earlier segment cut to its records.
// Reopening, repeatedly and across segment changes, keeps every entry.
func TestPreallocatedTail(t *testing.T) {
	dir := t.TempDir()
	m := &model{terms: map[uint64]uint64{}}
	for round := range 6 {
		st := open(t, dir, 4096)
		check(t, st, m, fmt.Sprintf("reopened, round %d", round))
		for range 8 {
			m.append(t, st, 7, uint64(round+1))
		}
		names, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
		sort.Strings(names)
		for i, n := range names {
			fi, err := os.Stat(n)
			if err != nil {
				t.Fatal(err)
			}
			seg := st.segs[i]
			if i < len(names)-1 && fi.Size() != seg.end {
				t.Fatalf("%s: %d bytes, want its records' %d: only the last segment may keep zeros", n, fi.Size(), seg.end)
			}
			if i == len(names)-1 && fi.Size() <= seg.end {
				t.Fatalf("last segment %s: %d bytes, want more than its records' %d", n, fi.Size(), seg.end)
			}
		}
		if round%2 == 1 {
			// A follower dropping a conflicting suffix, then appending.
			if err := st.DeleteRange(m.last-3, m.last); err != nil {
				t.Fatal(err)
			}
			m.last -= 4
			m.append(t, st, 2, uint64(round+1))
		}
		// No Close: the process dies with the files as they are.
	}
	st := open(t, dir, 4096)
	defer st.Close()
	check(t, st, m, "end")
}

// A record whose checksum fails in the middle of the log is corruption:
// Open refuses rather than serve a log with a hole.
func TestCorruptionIsRefused(t *testing.T) {
	dir := t.TempDir()
	st := open(t, dir, 1024) // several segments
	m := &model{terms: map[uint64]uint64{}}
	for range 10 {
		m.append(t, st, 10, 1)
	}
	st.Close()
	names, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	sort.Strings(names)
	if len(names) < 3 {
		t.Fatalf("%d segments, want at least 3", len(names))
	}
	b, _ := os.ReadFile(names[0])
	b[len(b)/2] ^= 0xff
	os.WriteFile(names[0], b, 0o600)
	if st, err := Open(dir, 1024); err == nil {
		st.Close()
		t.Fatal("Open accepted a corrupt segment in the middle of the log")
	}
}

func TestStoreLogsMustContinue(t *testing.T) {
	st := open(t, t.TempDir(), 0)
	defer st.Close()
	if err := st.StoreLogs([]*raft.Log{entry(10, 1), entry(11, 1)}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]*raft.Log{{entry(13, 1)}, {entry(11, 1)}, {entry(12, 1), entry(14, 1)}} {
		if err := st.StoreLogs(bad); err == nil {
			t.Fatalf("StoreLogs from %d after 11 was accepted", bad[0].Index)
		}
	}
	if l, _ := st.LastIndex(); l != 11 {
		t.Fatalf("LastIndex %d after refused appends, want 11", l)
	}
}

// Readers run while the log is appended to and compacted (for -race).
func TestConcurrentReads(t *testing.T) {
	st := open(t, t.TempDir(), 4096)
	defer st.Close()
	m := &model{terms: map[uint64]uint64{}}
	m.append(t, st, 10, 1)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				f, _ := st.FirstIndex()
				l, _ := st.LastIndex()
				if f == 0 {
					continue
				}
				var e raft.Log
				i := f + uint64(rand.Intn(int(l-f+1)))
				if err := st.GetLog(i, &e); err != nil && err != raft.ErrLogNotFound {
					t.Errorf("GetLog(%d): %v", i, err)
					return
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		m.append(t, st, 5, 1)
		if i%20 == 19 {
			if err := st.DeleteRange(m.first, m.last-50); err != nil {
				t.Fatal(err)
			}
			m.first = m.last - 49
		}
	}
	close(stop)
	wg.Wait()
	check(t, st, m, "end")
}

// A crash while deleting everything (a snapshot was installed) must not
// bring the old entries back, nor keep the next ones from starting at any
// index.
func TestDeleteAllInterrupted(t *testing.T) {
	dir := t.TempDir()
	st := open(t, dir, 1024)
	m := &model{terms: map[uint64]uint64{}}
	for range 5 {
		m.append(t, st, 10, 1)
	}
	last := m.last
	st.Close()
	// deleteAll's first step, then the crash: the segments are all there.
	st = &Store{dir: dir}
	if err := st.writeFirst(last + 1); err != nil {
		t.Fatal(err)
	}
	st = open(t, dir, 1024)
	m = &model{terms: map[uint64]uint64{}}
	check(t, st, m, "reopened after the interrupted delete")
	// A snapshot below the old entries: the log restarts lower.
	if err := st.StoreLogs([]*raft.Log{entry(3, 2), entry(4, 2)}); err != nil {
		t.Fatal(err)
	}
	m.first, m.last, m.terms[3], m.terms[4] = 3, 4, 2, 2
	st.Close()
	st = open(t, dir, 1024)
	defer st.Close()
	check(t, st, m, "after restarting the log lower")
}

// BenchmarkStoreLogs appends batches of 8 entries of 200 bytes, each batch
// fdatasync'd, as a leader under load does.
func BenchmarkStoreLogs(b *testing.B) {
	st, err := Open(b.TempDir(), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	data := bytes.Repeat([]byte{'x'}, 200)
	next := uint64(1)
	b.ResetTimer()
	for range b.N {
		logs := make([]*raft.Log, 8)
		for j := range logs {
			logs[j] = &raft.Log{Index: next, Term: 1, Type: raft.LogCommand, Data: data}
			next++
		}
		if err := st.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
	}
}

// fourSegments opens a log in dir with at least four segments of 1 KiB.
func fourSegments(t *testing.T, dir string) (*Store, *model) {
	t.Helper()
	st := open(t, dir, 1024)
	m := &model{terms: map[uint64]uint64{}}
	for range 12 {
		m.append(t, st, 10, 1)
	}
	if len(st.segs) < 4 {
		t.Fatalf("%d segments, want at least 4", len(st.segs))
	}
	return st, m
}

// failSyncDir makes the n-th later directory sync fail (n = 1: the next).
func failSyncDir(t *testing.T, n int) {
	t.Helper()
	calls := 0
	syncDirHook = func(dir string) error {
		calls++
		if calls == n {
			return fmt.Errorf("injected EIO syncing %s", dir)
		}
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}
	t.Cleanup(func() { syncDirHook = nil })
}

// A deletion that fails part way stops the store: nothing is read from or
// appended to a log whose files no longer match what the store holds in
// memory (an append there could be cut off at the next Open, after it was
// acknowledged). Reopening recovers a consistent log.
func TestFailedDeletionStopsTheStore(t *testing.T) {
	for _, c := range []struct {
		name     string
		failAt   int // the directory sync that fails; -1: deleteAll's last
		min, max func(m *model) uint64
	}{
		{"suffix across segments", 1, func(m *model) uint64 { return m.first + 3 }, func(m *model) uint64 { return m.last }},
		{"prefix", 1, func(m *model) uint64 { return m.first }, func(m *model) uint64 { return m.last - 5 }},
		{"everything, resetting the first index", -1, func(m *model) uint64 { return m.first }, func(m *model) uint64 { return m.last }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			st, m := fourSegments(t, dir)
			min, max := c.min(m), c.max(m)
			if c.failAt < 0 {
				// deleteAll syncs the directory for the first index, for each
				// segment removed, and for the first index's reset: fail that.
				c.failAt = len(st.segs) + 2
			}
			failSyncDir(t, c.failAt)
			if err := st.DeleteRange(min, max); err == nil {
				t.Fatal("DeleteRange succeeded with a failing directory sync")
			}
			syncDirHook = nil
			if err := st.StoreLogs([]*raft.Log{entry(m.last+1, 2)}); err == nil {
				t.Fatal("StoreLogs accepted after a failed deletion")
			}
			if err := st.StoreLogs([]*raft.Log{entry(min, 2)}); err == nil {
				t.Fatal("StoreLogs accepted after a failed deletion")
			}
			var l raft.Log
			if err := st.GetLog(m.last, &l); err == nil || err == raft.ErrLogNotFound {
				t.Fatalf("GetLog after a failed deletion: %v, want the failure", err)
			}
			if _, err := st.LastIndex(); err == nil {
				t.Fatal("LastIndex after a failed deletion: no error")
			}
			// Reopened, the log is what was there minus some of the range,
			// with no gap: entries kept are the original ones.
			st2 := open(t, dir, 1024)
			defer st2.Close()
			f, _ := st2.FirstIndex()
			last, _ := st2.LastIndex()
			for i := f; f != 0 && i <= last; i++ {
				if err := st2.GetLog(i, &l); err != nil || l.Term != m.terms[i] {
					t.Fatalf("reopened: entry %d: %v (term %d, want %d)", i, err, l.Term, m.terms[i])
				}
			}
			if f != 0 && (f > m.first && f <= min || last < m.last && last >= max) {
				t.Fatalf("reopened with %d-%d: a gap inside what was kept of %d-%d minus %d-%d", f, last, m.first, m.last, min, max)
			}
		})
	}
}

// A prefix deletion records the new first index, then removes segments;
// after a crash any subset of those removals may have reached the disk.
// Open drops what is below the first index before checking that segments
// are contiguous.
func TestOpenDropsBelowFirstWhateverRemains(t *testing.T) {
	dir := t.TempDir()
	st, m := fourSegments(t, dir)
	keep := st.segs[3].base
	second := st.segs[1].path(dir)
	st.Close()
	// The deletion's first step, then only the second segment's removal.
	if err := (&Store{dir: dir}).writeFirst(keep); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(second); err != nil {
		t.Fatal(err)
	}
	st = open(t, dir, 1024)
	defer st.Close()
	m.first = keep
	check(t, st, m, "reopened")
}
