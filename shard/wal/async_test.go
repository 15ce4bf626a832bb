package wal

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// heldSyncs holds every segment fdatasync until released, counting them.
type heldSyncs struct {
	mu      sync.Mutex
	held    bool
	release chan struct{}
	started int
	fail    error
}

func holdSyncs(t *testing.T) *heldSyncs {
	h := &heldSyncs{held: true, release: make(chan struct{})}
	SetSyncHook(func(string) error {
		h.mu.Lock()
		h.started++
		held, ch, fail := h.held, h.release, h.fail
		h.mu.Unlock()
		if held {
			<-ch
		}
		return fail
	})
	t.Cleanup(func() { h.let(); SetSyncHook(nil) })
	return h
}

// let releases the held syncs and lets later ones through.
func (h *heldSyncs) let() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held {
		h.held = false
		close(h.release)
	}
}

func (h *heldSyncs) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.started
}

func entries(from, to, term uint64) []*raft.Log {
	var logs []*raft.Log
	for i := from; i <= to; i++ {
		logs = append(logs, entry(i, term))
	}
	return logs
}

// waitFor polls cond: the flusher works on its own goroutine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// An asynchronous append is readable at once and counts as durable only
// after an fdatasync that started after it; appends made while one runs
// share the next.
func TestAsyncAppendBecomesDurableAfterItsSync(t *testing.T) {
	st := open(t, t.TempDir(), 0)
	defer st.Close()
	if err := st.StoreLogs(entries(1, 2, 1)); err != nil {
		t.Fatal(err)
	}
	h := holdSyncs(t)
	if err := st.StoreLogsAsync(entries(3, 5, 1)); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := st.GetLog(5, &l); err != nil || l.Index != 5 {
		t.Fatalf("GetLog(5) before its sync: %v", err)
	}
	if li, _ := st.LastIndex(); li != 5 {
		t.Fatalf("LastIndex %d, want 5", li)
	}
	waitFor(t, "the flusher's first sync", func() bool { return h.count() == 1 })
	if err := st.StoreLogsAsync(entries(6, 9, 1)); err != nil {
		t.Fatal(err)
	}
	if d := st.Durable(); d != 2 {
		t.Fatalf("Durable %d while the sync is held, want 2", d)
	}
	done := make(chan error, 1)
	go func() { done <- st.WaitDurable(9) }()
	select {
	case err := <-done:
		t.Fatalf("WaitDurable(9) returned (%v) while the sync was held", err)
	case <-time.After(50 * time.Millisecond):
	}
	h.let()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := st.Durable(); d != 9 {
		t.Fatalf("Durable %d, want 9", d)
	}
	if n := h.count(); n != 2 {
		t.Fatalf("%d syncs for two rounds of appends, want 2 (one for 3-5, one for 6-9)", n)
	}
	if err := st.WaitDurable(10); err == nil {
		t.Fatal("WaitDurable past the log's end succeeded")
	}
}

// A synchronous append makes every earlier asynchronous one durable too.
func TestSyncAppendCoversEarlierAsyncOnes(t *testing.T) {
	st := open(t, t.TempDir(), 0)
	defer st.Close()
	h := holdSyncs(t)
	if err := st.StoreLogsAsync(entries(1, 4, 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the flusher's sync", func() bool { return h.count() == 1 })
	h.let()
	if err := st.StoreLogs(entries(5, 5, 1)); err != nil {
		t.Fatal(err)
	}
	if d := st.Durable(); d != 5 {
		t.Fatalf("Durable %d after a synchronous append, want 5", d)
	}
}

// After a suffix is deleted, entries appended again at those indexes are
// not durable until synced: durable never stays above the log's end.
func TestDeletedSuffixIsNotDurable(t *testing.T) {
	st := open(t, t.TempDir(), 0)
	defer st.Close()
	if err := st.StoreLogs(entries(1, 10, 1)); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteRange(6, 10); err != nil {
		t.Fatal(err)
	}
	if d := st.Durable(); d != 5 {
		t.Fatalf("Durable %d after deleting 6-10, want 5", d)
	}
	h := holdSyncs(t)
	if err := st.StoreLogsAsync(entries(6, 8, 2)); err != nil {
		t.Fatal(err)
	}
	if d := st.Durable(); d != 5 {
		t.Fatalf("Durable %d with 6-8 appended again and not synced, want 5", d)
	}
	h.let()
	if err := st.Flush(); err != nil {
		t.Fatal(err)
	}
	if d := st.Durable(); d != 8 {
		t.Fatalf("Durable %d after Flush, want 8", d)
	}
}

// Appends that roll over to new segments are all durable once flushed, and
// survive a reopen.
func TestAsyncAppendsAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	st := open(t, dir, 512)
	for i := uint64(1); i <= 200; i += 4 {
		if err := st.StoreLogsAsync(entries(i, i+3, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Flush(); err != nil {
		t.Fatal(err)
	}
	if d := st.Durable(); d != 200 {
		t.Fatalf("Durable %d, want 200", d)
	}
	if len(st.segs) < 3 {
		t.Fatalf("%d segments: the test meant to roll over several", len(st.segs))
	}
	st.Close()
	st = open(t, dir, 512)
	defer st.Close()
	m := &model{first: 1, last: 200, terms: map[uint64]uint64{}}
	for i := uint64(1); i <= 200; i++ {
		m.terms[i] = 1
	}
	check(t, st, m, "reopened")
}

// A failed asynchronous sync stops the store: waiters, appends and reads
// get the failure.
func TestFailedAsyncSyncStopsTheStore(t *testing.T) {
	st := open(t, t.TempDir(), 0)
	defer st.Close()
	h := holdSyncs(t)
	boom := errors.New("disk on fire")
	h.mu.Lock()
	h.fail = boom
	h.mu.Unlock()
	if err := st.StoreLogsAsync(entries(1, 3, 1)); err != nil {
		t.Fatal(err)
	}
	h.let()
	if err := st.WaitDurable(3); !errors.Is(err, boom) {
		t.Fatalf("WaitDurable after a failed sync: %v, want %v", err, boom)
	}
	if err := st.Flush(); !errors.Is(err, boom) {
		t.Fatalf("Flush after a failed sync: %v", err)
	}
	if err := st.StoreLogs(entries(4, 4, 1)); !errors.Is(err, boom) {
		t.Fatalf("StoreLogs after a failed sync: %v", err)
	}
	var l raft.Log
	if err := st.GetLog(1, &l); !errors.Is(err, boom) {
		t.Fatalf("GetLog after a failed sync: %v", err)
	}
}

// Close waits for a running sync and wakes waiters.
func TestCloseWithSyncRunning(t *testing.T) {
	st := open(t, t.TempDir(), 0)
	h := holdSyncs(t)
	if err := st.StoreLogsAsync(entries(1, 3, 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the flusher's sync", func() bool { return h.count() == 1 })
	closed := make(chan error, 1)
	go func() { closed <- st.Close() }()
	time.Sleep(20 * time.Millisecond)
	h.let()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := st.WaitDurable(3); err != nil {
		t.Fatalf("WaitDurable for entries synced before Close: %v", err)
	}
	if err := st.StoreLogsAsync(entries(4, 4, 1)); err == nil {
		t.Fatal("append after Close succeeded")
	}
}

// A segment roll that waits for a running fdatasync must not act on what
// it read before: a compaction may remove a segment meanwhile. (It indexed
// a stale segment count and panicked.)
func TestRollWaitingForASyncRacesCompaction(t *testing.T) {
	big := func(from, to uint64) []*raft.Log {
		logs := entries(from, to, 1)
		for _, l := range logs {
			l.Data, l.Extensions = make([]byte, 100), nil
		}
		return logs
	}
	for trial := 0; trial < 20; trial++ {
		st := open(t, t.TempDir(), 512)
		for i := uint64(1); i <= 9; i++ {
			if err := st.StoreLogs(big(i, i)); err != nil {
				t.Fatal(err)
			}
		}
		h := holdSyncs(t)
		if err := st.StoreLogsAsync(big(10, 12)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the flusher's sync", func() bool { return h.count() >= 1 })
		var wg sync.WaitGroup
		errs := make([]error, 2)
		wg.Add(2)
		go func() { defer wg.Done(); errs[0] = st.StoreLogsAsync(big(13, 13)) }()
		time.Sleep(2 * time.Millisecond)
		go func() { defer wg.Done(); errs[1] = st.DeleteRange(1, 4) }()
		time.Sleep(2 * time.Millisecond)
		h.let()
		wg.Wait()
		SetSyncHook(nil)
		for _, err := range errs {
			if err != nil {
				t.Fatalf("trial %d: %v", trial, err)
			}
		}
		if err := st.Flush(); err != nil {
			t.Fatal(err)
		}
		if f, _ := st.FirstIndex(); f != 5 {
			t.Fatalf("trial %d: first index %d after deleting 1-4, want 5", trial, f)
		}
		for i := uint64(5); i <= 13; i++ {
			var l raft.Log
			if err := st.GetLog(i, &l); err != nil || l.Index != i {
				t.Fatalf("trial %d: entry %d: %v", trial, i, err)
			}
		}
		st.Close()
	}
}

// Open syncs the last segment: a killed process can leave appended records
// in the page cache only, and they must be on disk before a follower
// acknowledges them as stored.
func TestOpenSyncsTheLastSegment(t *testing.T) {
	dir := t.TempDir()
	st := open(t, dir, 512)
	if err := st.StoreLogs(entries(1, 20, 1)); err != nil {
		t.Fatal(err)
	}
	last := st.segs[len(st.segs)-1].path(dir)
	st.Close()
	var mu sync.Mutex
	var synced []string
	SetSyncHook(func(p string) error { mu.Lock(); synced = append(synced, p); mu.Unlock(); return nil })
	defer SetSyncHook(nil)
	st = open(t, dir, 512)
	defer st.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(synced) != 1 || synced[0] != last {
		t.Fatalf("Open synced %q, want the last segment %q", synced, last)
	}
	if d := st.Durable(); d != 20 {
		t.Fatalf("Durable %d after Open, want 20", d)
	}
}

// With SetLazy, an asynchronous append waits for its sync until the delay
// is up, and one sync then covers every append made meanwhile; anything
// that waits for an entry has it synced at once.
func TestLazyAppendsShareASync(t *testing.T) {
	st, err := Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := holdSyncs(t)
	h.let() // count, do not hold
	st.SetLazy(time.Hour)
	for i := uint64(1); i <= 5; i++ {
		if err := st.StoreLogsAsync(entries(i, i, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.count(); n != 0 {
		t.Fatalf("%d syncs of lazy appends before anything waited for them", n)
	}
	if err := st.WaitDurable(3); err != nil { // would wait an hour without a sync now
		t.Fatal(err)
	}
	if d := st.Durable(); d != 5 {
		t.Fatalf("Durable %d after waiting for 3, want 5: one sync covers every append before it", d)
	}
	if n := h.count(); n != 1 {
		t.Fatalf("%d syncs for five appends, want 1", n)
	}

	// A short delay syncs by itself; Changed reports it.
	st.SetLazy(10 * time.Millisecond)
	d, changed := st.Changed()
	if err := st.StoreLogsAsync(entries(6, 7, 1)); err != nil {
		t.Fatal(err)
	}
	for d < 7 {
		select {
		case <-changed:
		case <-time.After(10 * time.Second): // a hang, not a speed limit
			t.Fatalf("a lazy append was not synced after its delay (durable %d)", d)
		}
		d, changed = st.Changed()
	}
}

// Changed's channel is closed, not left waiting, once the store fails or
// closes.
func TestChangedEndsWithTheStore(t *testing.T) {
	st, err := Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	h := holdSyncs(t)
	h.mu.Lock()
	h.fail = errors.New("disk gone")
	h.mu.Unlock()
	_, changed := st.Changed()
	if err := st.StoreLogsAsync(entries(1, 1, 1)); err != nil {
		t.Fatal(err)
	}
	h.let()
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("Changed's channel stayed open after the store failed")
	}
	if d := st.Durable(); d != 0 {
		t.Fatalf("Durable %d after a failed sync", d)
	}
	st.Close()

	st2, err := Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	_, changed = st2.Changed()
	st2.Close()
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("Changed's channel stayed open after Close")
	}
}

// Close syncs appends still waiting for their sync (a lazy leader's), so a
// clean shutdown leaves the whole log on disk.
func TestCloseSyncsLazyAppends(t *testing.T) {
	st := open(t, t.TempDir(), 0)
	h := holdSyncs(t)
	h.let() // count, do not hold
	st.SetLazy(time.Hour)
	if err := st.StoreLogsAsync(entries(1, 4, 1)); err != nil {
		t.Fatal(err)
	}
	if n := h.count(); n != 0 {
		t.Fatalf("%d syncs before Close", n)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if n := h.count(); n != 1 {
		t.Fatalf("Close made %d syncs of 4 lazy appends, want 1", n)
	}
	if d := st.Durable(); d != 4 {
		t.Fatalf("Durable %d after Close, want 4", d)
	}
}
