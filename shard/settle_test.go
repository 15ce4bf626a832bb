package shard

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// fakeFuture is a raft.ApplyFuture answered by hand (or never).
type fakeFuture struct {
	ch  chan error
	err error
}

func newFakeFuture() *fakeFuture { return &fakeFuture{ch: make(chan error, 1)} }

func (f *fakeFuture) Error() error {
	if f.ch != nil {
		f.err = <-f.ch
		f.ch = nil
	}
	return f.err
}
func (f *fakeFuture) Index() uint64 { return 0 }
func (f *fakeFuture) Response() any { return nil }

// Each proposal is settled once, with its own outcome, in the order proposed.
func TestSettlerSettlesInOrder(t *testing.T) {
	down := make(chan struct{})
	r := newFakeRaft()
	st := newSettler(down, r.apply, 0)
	defer func() { close(down); st.close() }()
	boom := errors.New("boom")
	got := make(chan string, 10)
	for i := range 5 {
		st.propose([]byte{byte('0' + i)}, func(_ raft.ApplyFuture, err error) {
			if err != nil {
				got <- string(rune('0'+i)) + err.Error()
				return
			}
			got <- string(rune('0' + i))
		})
	}
	// Answered out of order: settled in the order proposed all the same.
	r.answer("2", boom)
	r.answer("1", nil)
	r.answer("4", nil)
	r.answer("0", nil)
	r.answer("3", raft.ErrLeadershipLost)
	want := []string{"0", "1", "2boom", "3" + raft.ErrLeadershipLost.Error(), "4"}
	for _, w := range want {
		select {
		case g := <-got:
			if g != w {
				t.Fatalf("settled %q, want %q", g, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("proposal %q never settled", w)
		}
	}
}

// A future Raft never answers (taken into its apply buffer as it shut down)
// does not hold up shutdown: close settles it and the unanswered ones queued
// behind it as unknown outcomes, and later proposals at once (never
// proposed).
func TestSettlerCloseSettlesUnanswered(t *testing.T) {
	down := make(chan struct{})
	r := newFakeRaft()
	st := newSettler(down, r.apply, 0)
	got := make(chan error, 10)
	for i := range 3 {
		st.propose([]byte{byte('0' + i)}, func(_ raft.ApplyFuture, err error) { got <- err })
	}
	close(down)
	st.close()
	for range 3 {
		select {
		case err := <-got:
			if !errors.Is(err, raft.ErrRaftShutdown) {
				t.Fatalf("settled with %v, want ErrRaftShutdown", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("close left a proposal unsettled")
		}
	}
	st.propose([]byte("x"), func(_ raft.ApplyFuture, err error) { got <- err })
	if err := <-got; !errors.Is(err, errNotProposed) {
		t.Fatalf("a proposal after close settled with %v", err)
	}
	select {
	case err := <-got:
		t.Fatalf("a proposal was settled twice (again with %v)", err)
	case <-time.After(100 * time.Millisecond):
	}
}

// At close, proposals Raft answered before it went down keep their answers
// (applied, or not applied and safe to retry), even those the settler had
// not reached; only those never answered become unknown outcomes.
func TestSettlerCloseKeepsAnswers(t *testing.T) {
	down := make(chan struct{})
	r := newFakeRaft()
	st := newSettler(down, r.apply, 0)
	got := make([]chan error, 4)
	for i := range got {
		got[i] = make(chan error, 2)
		st.propose([]byte{byte('0' + i)}, func(_ raft.ApplyFuture, err error) { got[i] <- err })
	}
	// The settler waits on proposal 0, never answered; the others were
	// answered behind it.
	r.answer("1", nil)
	r.answer("2", raft.ErrNotLeader)
	close(down)
	st.close()
	want := []error{raft.ErrRaftShutdown, nil, raft.ErrNotLeader, raft.ErrRaftShutdown}
	for i, w := range want {
		select {
		case err := <-got[i]:
			if !errors.Is(err, w) && !(err == nil && w == nil) {
				t.Errorf("proposal %d settled with %v, want %v", i, err, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("proposal %d never settled", i)
		}
	}
}

// fakeRaft hands out a fakeFuture per proposed entry and records the order
// entries reached it.
type fakeRaft struct {
	mu      sync.Mutex
	got     []string
	futures map[string]*fakeFuture
}

func newFakeRaft() *fakeRaft { return &fakeRaft{futures: map[string]*fakeFuture{}} }

func (r *fakeRaft) apply(b []byte) raft.ApplyFuture {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := newFakeFuture()
	r.got = append(r.got, string(b))
	r.futures[string(b)] = f
	return f
}

func (r *fakeRaft) proposed() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.got, "")
}

func (r *fakeRaft) answer(name string, err error) {
	r.mu.Lock()
	f := r.futures[name]
	r.mu.Unlock()
	f.ch <- err
}

// waitProposed waits until exactly want reached Raft, and checks nothing
// more follows at once.
func (r *fakeRaft) waitProposed(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.proposed() != want {
		if time.Now().After(deadline) {
			t.Fatalf("Raft got %q, want %q", r.proposed(), want)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if got := r.proposed(); got != want {
		t.Fatalf("Raft got %q, want only %q so far", got, want)
	}
}

// With one batch allowed in Raft, a lone call is proposed at once; calls
// arriving while it is in Raft are held, then proposed together, in order,
// once it is settled; and a batch counts as settled only when all of it is.
func TestSettlerProposeBatchesBehindTheOneInRaft(t *testing.T) {
	down := make(chan struct{})
	r := newFakeRaft()
	st := newSettler(down, r.apply, 1)
	defer func() { close(down); st.close() }()
	settled := make(chan string, 10)
	propose := func(name string) {
		st.propose([]byte(name), func(f raft.ApplyFuture, err error) {
			if f == nil {
				settled <- name + " not proposed"
				return
			}
			settled <- name
		})
	}
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-settled:
			if got != want {
				t.Fatalf("settled %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q never settled", want)
		}
	}
	propose("a")
	r.waitProposed(t, "a")
	propose("b")
	propose("c")
	r.waitProposed(t, "a")
	r.answer("a", nil)
	expect("a")
	r.waitProposed(t, "abc")
	propose("d")
	r.answer("b", nil)
	expect("b")
	r.waitProposed(t, "abc") // c, of b's batch, is still in Raft
	r.answer("c", raft.ErrLeadershipLost)
	expect("c")
	r.waitProposed(t, "abcd")
	r.answer("d", nil)
	expect("d")
	// Idle again once d's batch is counted settled: then a call reaches Raft
	// within propose itself.
	waitFlying(t, st, 0)
	propose("e")
	if got := r.proposed(); got != "abcde" {
		t.Fatalf("an idle shard held a lone call back: Raft got %q", got)
	}
	r.answer("e", nil)
	expect("e")
}

func waitFlying(t *testing.T, st *settler, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st.mu.Lock()
		f := st.flying
		st.mu.Unlock()
		if f == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d batches in Raft, want %d", f, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Without a limit every call goes to Raft at once.
func TestSettlerProposeWithoutLimit(t *testing.T) {
	down := make(chan struct{})
	r := newFakeRaft()
	st := newSettler(down, r.apply, 0)
	defer func() { close(down); st.close() }()
	for _, n := range []string{"a", "b", "c"} {
		st.propose([]byte(n), func(raft.ApplyFuture, error) {})
	}
	r.waitProposed(t, "abc")
}

// At close, calls still held back never reached Raft: they settle at once
// with errNotProposed (safe to retry), not as unknown outcomes, and without
// a future; the one in Raft keeps Raft's answer.
func TestSettlerCloseSettlesHeldAsNotProposed(t *testing.T) {
	down := make(chan struct{})
	r := newFakeRaft()
	st := newSettler(down, r.apply, 1)
	type outcome struct {
		f   raft.ApplyFuture
		err error
	}
	got := map[string]chan outcome{}
	for _, n := range []string{"a", "b", "c"} {
		ch := make(chan outcome, 2)
		got[n] = ch
		st.propose([]byte(n), func(f raft.ApplyFuture, err error) { ch <- outcome{f, err} })
	}
	r.waitProposed(t, "a")
	r.answer("a", nil)
	r.waitProposed(t, "abc")
	// b and c are in Raft now; d and e wait behind them.
	for _, n := range []string{"d", "e"} {
		ch := make(chan outcome, 2)
		got[n] = ch
		st.propose([]byte(n), func(f raft.ApplyFuture, err error) { ch <- outcome{f, err} })
	}
	r.answer("b", raft.ErrNotLeader)
	close(down)
	st.close()
	want := map[string]error{"a": nil, "b": raft.ErrNotLeader, "c": raft.ErrRaftShutdown, "d": errNotProposed, "e": errNotProposed}
	for n, w := range want {
		select {
		case o := <-got[n]:
			if !errors.Is(o.err, w) && !(o.err == nil && w == nil) {
				t.Fatalf("%s settled with %v, want %v", n, o.err, w)
			}
			if (o.f == nil) != errors.Is(w, errNotProposed) {
				t.Fatalf("%s: future %v with %v", n, o.f, o.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s never settled", n)
		}
	}
	if p := r.proposed(); p != "abc" {
		t.Fatalf("Raft got %q after close, want abc", p)
	}
	// After close, nothing reaches Raft.
	done := make(chan error, 1)
	st.propose([]byte("f"), func(f raft.ApplyFuture, err error) { done <- err })
	if err := <-done; !errors.Is(err, errNotProposed) {
		t.Fatalf("a call after close settled with %v", err)
	}
}

// Shard.Close stops hand-overs before it shuts Raft down: the batch in Raft
// being answered (as Raft does when it shuts down) must not release the held
// calls into a Raft that may never answer them; they settle as never
// proposed, and so do calls proposed after stop.
func TestSettlerStopHandsNothingMore(t *testing.T) {
	down := make(chan struct{})
	r := newFakeRaft()
	st := newSettler(down, r.apply, 1)
	errs := map[string]chan error{}
	propose := func(name string) {
		ch := make(chan error, 2)
		errs[name] = ch
		st.propose([]byte(name), func(_ raft.ApplyFuture, err error) { ch <- err })
	}
	propose("a")
	propose("b")
	r.waitProposed(t, "a")
	st.stop()
	propose("c")
	r.answer("a", raft.ErrLeadershipLost)
	if err := <-errs["a"]; !errors.Is(err, raft.ErrLeadershipLost) {
		t.Fatalf("a settled with %v", err)
	}
	if err := <-errs["c"]; !errors.Is(err, errNotProposed) {
		t.Fatalf("a call proposed after stop settled with %v", err)
	}
	r.waitProposed(t, "a")
	close(down)
	st.close()
	if err := <-errs["b"]; !errors.Is(err, errNotProposed) {
		t.Fatalf("a held call settled with %v, want errNotProposed", err)
	}
}

// Calls that never reached a log are safe to retry; only what Raft may have
// appended is an unknown outcome.
func TestClassifyApply(t *testing.T) {
	for _, c := range []struct {
		err           error
		retryable     bool
		indeterminate bool
	}{
		{raft.ErrNotLeader, true, false},
		{errNotProposed, true, false},
		{raft.ErrLeadershipTransferInProgress, true, false},
		{raft.ErrEnqueueTimeout, true, false},
		{raft.ErrLeadershipLost, false, true},
		{raft.ErrRaftShutdown, false, true},
	} {
		e := classifyApply(1, c.err, "")
		if e.Retryable != c.retryable || e.Indeterminate != c.indeterminate {
			t.Errorf("%v: retryable %v, indeterminate %v; want %v, %v", c.err, e.Retryable, e.Indeterminate, c.retryable, c.indeterminate)
		}
	}
}

// fakeClock is a settler's clock moved by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// lingerSetup proposes a, then b and c behind it, and answers a: Raft then
// holds the batch bc, and run knows a batch of two.
func lingerSetup(t *testing.T, linger time.Duration) (*settler, *fakeRaft, *fakeClock, func(string)) {
	down := make(chan struct{})
	r := newFakeRaft()
	clock := &fakeClock{t: time.Unix(1000, 0)}
	st := newSettler(down, r.apply, 1)
	st.mu.Lock()
	st.linger, st.now = linger, clock.now
	st.mu.Unlock()
	t.Cleanup(func() { close(down); st.close() })
	propose := func(name string) { st.propose([]byte(name), func(raft.ApplyFuture, error) {}) }
	propose("a")
	r.waitProposed(t, "a")
	propose("b")
	propose("c")
	r.answer("a", nil)
	r.waitProposed(t, "abc")
	return st, r, clock, propose
}

// Once a batch is applied with fewer calls held than it had, the settler
// waits for as many before it hands them to Raft, together.
func TestSettlerLingersForAFullerBatch(t *testing.T) {
	st, r, clock, propose := lingerSetup(t, time.Hour)
	clock.advance(time.Minute) // bc's round: the linger may last as long
	propose("d")
	r.answer("b", nil)
	r.answer("c", nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st.mu.Lock()
		want := st.want
		st.mu.Unlock()
		if want == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the settler is not waiting for a second call (want %d); Raft got %q", want, r.proposed())
		}
		time.Sleep(time.Millisecond)
	}
	if got := r.proposed(); got != "abc" {
		t.Fatalf("d went to Raft alone while the settler waited for more: Raft got %q", got)
	}
	propose("e")
	r.waitProposed(t, "abcde")
	st.mu.Lock()
	last, flying := st.last, st.flying
	st.mu.Unlock()
	if last != 2 || flying != 1 {
		t.Fatalf("d and e went to Raft as %d batches, the last of %d", flying, last)
	}
}

// The wait lasts no longer than the last batch took in Raft: with no time
// gone by on the settler's clock, d goes to Raft at once, alone.
func TestSettlerLingerIsBoundedByTheRound(t *testing.T) {
	_, r, _, propose := lingerSetup(t, time.Hour)
	propose("d")
	r.answer("b", nil)
	r.answer("c", nil)
	r.waitProposed(t, "abcd")
}
