package shard

import (
	"errors"
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

// Each proposal is settled once, with its own outcome, in the order added.
func TestSettlerSettlesInOrder(t *testing.T) {
	down := make(chan struct{})
	st := newSettler(down)
	defer func() { close(down); st.close() }()
	boom := errors.New("boom")
	futures := make([]*fakeFuture, 5)
	got := make(chan string, 10)
	for i := range futures {
		futures[i] = newFakeFuture()
		st.add(futures[i], func(err error) {
			if err != nil {
				got <- string(rune('0'+i)) + err.Error()
				return
			}
			got <- string(rune('0' + i))
		})
	}
	// Answered out of order: settled in the order proposed all the same.
	futures[2].ch <- boom
	futures[1].ch <- nil
	futures[4].ch <- nil
	futures[0].ch <- nil
	futures[3].ch <- raft.ErrLeadershipLost
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
// behind it as unknown outcomes, and later proposals at once.
func TestSettlerCloseSettlesUnanswered(t *testing.T) {
	down := make(chan struct{})
	st := newSettler(down)
	got := make(chan error, 10)
	for i := 0; i < 3; i++ {
		st.add(newFakeFuture(), func(err error) { got <- err })
	}
	close(down)
	st.close()
	for i := 0; i < 3; i++ {
		select {
		case err := <-got:
			if !errors.Is(err, raft.ErrRaftShutdown) {
				t.Fatalf("settled with %v, want ErrRaftShutdown", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("close left a proposal unsettled")
		}
	}
	st.add(newFakeFuture(), func(err error) { got <- err })
	if err := <-got; !errors.Is(err, raft.ErrRaftShutdown) {
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
	st := newSettler(down)
	got := make([]chan error, 4)
	futures := []*fakeFuture{newFakeFuture(), newFakeFuture(), newFakeFuture(), newFakeFuture()}
	for i, f := range futures {
		got[i] = make(chan error, 2)
		st.add(f, func(err error) { got[i] <- err })
	}
	// The settler waits on futures[0], never answered; the others were
	// answered behind it.
	futures[1].ch <- nil
	futures[2].ch <- raft.ErrNotLeader
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
