package shard

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// settler waits for the shard's proposed entries on one goroutine, in the
// order they were proposed, and settles each (the output gate) there.
//
// Raft answers futures in log order, and an entry applied in a batch comes
// with the rest of its batch: the settler wakes once per batch, where a
// waiter per call (a goroutine, and a helper goroutine to make the wait end
// at shutdown) woke twice per call.
//
// raft.Apply's futures have no shutdown channel: one Raft took into its
// apply buffer just as it shut down is never answered. Once Raft is down,
// close settles every proposal left with Raft's answer, or with
// ErrRaftShutdown (an unknown outcome to the client) if it has none; the
// settler goroutine may stay blocked on a future never answered.
type settler struct {
	down <-chan struct{}
	wake chan struct{}

	mu     sync.Mutex
	queue  []*proposal
	cur    *proposal // being waited for
	closed bool
}

type proposal struct {
	f       raft.ApplyFuture
	fn      func(error)
	once    sync.Once
	settled chan struct{} // closed once fn has run
}

func (p *proposal) settle(err error) {
	p.once.Do(func() {
		p.fn(err)
		close(p.settled)
	})
}

// closeGrace bounds how long close waits for the answers Raft gave before it
// went down to be read, before it calls the rest unknown.
const closeGrace = 100 * time.Millisecond

func newSettler(down <-chan struct{}) *settler {
	st := &settler{down: down, wake: make(chan struct{}, 1)}
	go st.run()
	return st
}

// add queues f; fn runs once with its outcome (nil: applied, see
// f.Response).
func (st *settler) add(f raft.ApplyFuture, fn func(error)) {
	p := &proposal{f: f, fn: fn, settled: make(chan struct{})}
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		p.settle(raft.ErrRaftShutdown)
		return
	}
	st.queue = append(st.queue, p)
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

func (st *settler) run() {
	for {
		st.mu.Lock()
		for len(st.queue) == 0 {
			st.cur = nil
			if st.closed {
				st.mu.Unlock()
				return
			}
			st.mu.Unlock()
			select {
			case <-st.wake:
			case <-st.down:
				st.close()
			}
			st.mu.Lock()
		}
		p := st.queue[0]
		st.queue[0] = nil
		st.queue = st.queue[1:]
		if len(st.queue) == 0 {
			st.queue = nil // let a burst's array go
		}
		st.cur = p
		st.mu.Unlock()
		// Only this goroutine calls Error: a future's answer is read once.
		p.settle(p.f.Error())
	}
}

// close runs once Raft is down, so every answer Raft will give is given:
// reading an answered future returns at once. Each proposal still queued is
// settled with its answer, read on a goroutine of its own; the one run is
// waiting for is left to run. Whatever is not settled within closeGrace was
// never answered and is settled with ErrRaftShutdown. (The goroutines
// reading a future that was never answered never end.)
func (st *settler) close() {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return
	}
	st.closed = true
	pending := st.queue
	st.queue = nil
	if st.cur != nil {
		pending = append([]*proposal{st.cur}, pending...)
	}
	cur := st.cur
	st.mu.Unlock()
	for _, p := range pending {
		if p != cur {
			go func() { p.settle(p.f.Error()) }()
		}
	}
	grace := time.NewTimer(closeGrace)
	defer grace.Stop()
	for _, p := range pending {
		select {
		case <-p.settled:
			continue
		case <-grace.C:
		}
		// Out of time: this and every later unsettled proposal.
		for _, q := range pending {
			q.settle(raft.ErrRaftShutdown)
		}
		return
	}
}
