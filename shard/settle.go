package shard

import (
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// settler hands the shard's calls to Raft (propose, which batches them under
// load), waits for them on one goroutine, in the order they were proposed,
// and settles each (the output gate) there.
//
// Raft answers futures in log order, and an entry applied in a batch comes
// with the rest of its batch: the settler wakes once per batch, where a
// waiter per call (a goroutine, and a helper goroutine to make the wait end
// at shutdown) woke twice per call.
//
// raft.Apply's futures have no shutdown channel: one Raft took into its
// apply buffer just as it shut down is never answered. Once Raft is down,
// close settles every proposal left with Raft's answer, or with
// ErrRaftShutdown (an unknown outcome to the client) if it has none, and
// those propose held back with errNotProposed; the settler goroutine may
// stay blocked on a future never answered.
type settler struct {
	down <-chan struct{}
	wake chan struct{}
	// apply hands an entry to Raft (raft.Apply); limit is how many batches
	// of proposals propose lets into Raft at once (0: no holding back).
	apply func([]byte) raft.ApplyFuture
	limit int

	// linger bounds how long run waits, once a batch is settled, for as
	// many calls to be held as that batch had (0: it does not wait); now
	// is the clock that measures the batch's round.
	linger time.Duration
	now    func() time.Time
	full   chan struct{} // propose: the held calls reached want

	mu      sync.Mutex
	queue   []*proposal // handed to Raft, in order
	held    []*proposal // held back by propose, in order
	flying  int         // batches handed to Raft and not yet settled
	last    int         // proposals in the batch handed over last
	lastAt  time.Time   // when it was handed over
	want    int         // run lingers until this many are held (0: it does not)
	cur     *proposal   // being waited for
	stopped bool        // nothing more is handed to Raft (stop)
	closed  bool
}

type proposal struct {
	data    []byte // until handed to Raft
	f       raft.ApplyFuture
	last    bool // the last of a batch propose counts in flying
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

// lingerMax bounds how long a shard's settler waits for a batch to fill.
//
// Under load, once a batch is applied, the calls held meanwhile go to Raft
// together. Those whose answers just went out come back a client round
// trip later, and most of them miss the hand-over: with 64 callers over
// three shards, batches had about 9 calls of the 21 each shard could have.
// Every batch costs about the same whatever its size (an fdatasync on each
// replica, an AppendEntries and its answer per follower, wake-ups), so the
// settler now waits, when fewer calls are held than the last batch had,
// until as many are, or for as long as that batch took in Raft, or
// lingerMax, whichever comes first. A shard whose calls come one at a
// time never waits (nothing is held), and the wait is at most one round
// more for a call that was held anyway. Measured with duroctl bench put (3
// nodes, 3 shards, three alternating pairs, fresh cluster each):
// 9,669/9,366/10,828 -> 11,744/11,745/11,794 calls/s, and 141/146/125 ->
// 113/116/112 µs of durod CPU per call; p50 latency fell with it (6.0 ->
// 5.0 ms). A 2 ms bound did about half as well; the round bounds the wait
// first unless the nodes are saturated.
const lingerMax = 5 * time.Millisecond

// closeGrace bounds how long close waits for the answers Raft gave before it
// went down to be read, before it calls the rest unknown.
const closeGrace = 100 * time.Millisecond

// errNotProposed settles a proposal propose held back when Raft went down:
// it never reached Raft, so it cannot apply.
var errNotProposed = errors.New("shut down before the call was proposed")

func newSettler(down <-chan struct{}, apply func([]byte) raft.ApplyFuture, limit int) *settler {
	st := &settler{down: down, wake: make(chan struct{}, 1), full: make(chan struct{}, 1), apply: apply, limit: limit, linger: lingerMax, now: time.Now}
	go st.run()
	return st
}

// propose hands data to Raft and queues it for settling: fn runs once with
// the future (nil if data never reached Raft) and the outcome (nil: applied,
// see f.Response).
//
// While limit batches are in Raft, data is held back, and what was held is
// handed over together once the oldest batch is settled. hashicorp/raft
// stores, sends and applies what it finds queued as one batch, and pays
// for each batch (an fdatasync on every replica, an AppendEntries per
// follower, wake-ups) about what it pays for the entries in it. Left to
// itself under load it takes small batches as soon as they arrive, and
// the replicas spend on many batches the CPU they need for calls. An idle
// shard holds nothing back: a lone call is proposed at once.
func (st *settler) propose(data []byte, fn func(f raft.ApplyFuture, err error)) {
	p := &proposal{data: data, settled: make(chan struct{})}
	p.fn = func(err error) { fn(p.f, err) }
	st.mu.Lock()
	if st.stopped || st.closed {
		st.mu.Unlock()
		p.settle(errNotProposed)
		return
	}
	if st.limit > 0 && (st.flying >= st.limit || len(st.held) > 0) {
		// run hands it over once the oldest batch is settled.
		st.held = append(st.held, p)
		if st.want > 0 && len(st.held) >= st.want {
			st.want = 0
			select {
			case st.full <- struct{}{}:
			default:
			}
		}
		st.mu.Unlock()
		return
	}
	st.handOverLocked([]*proposal{p})
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// stop ends hand-overs to Raft: propose settles what comes later with
// errNotProposed at once, and what is held stays held until close settles it
// so. Shard.Close calls it before it shuts Raft down: an entry handed to a
// Raft that is shutting down may land in its apply buffer, never to be
// answered, and a call that never reached Raft must not come back as an
// unknown outcome.
func (st *settler) stop() {
	st.mu.Lock()
	st.stopped = true
	st.mu.Unlock()
}

// handOverLocked hands a batch of proposals to Raft, in order, and queues
// them for settling.
func (st *settler) handOverLocked(batch []*proposal) {
	for _, p := range batch {
		p.f = st.apply(p.data)
		p.data = nil
	}
	if st.limit > 0 {
		batch[len(batch)-1].last = true
		st.flying++
	}
	st.last, st.lastAt = len(batch), st.now()
	st.queue = append(st.queue, batch...)
}

// mayHandOverLocked reports whether calls are held and may go to Raft now.
func (st *settler) mayHandOverLocked() bool {
	return len(st.held) > 0 && st.flying < st.limit && !st.stopped && !st.closed
}

// lingerLocked waits, with st.mu released, until as many calls are held as
// the last batch had, for no longer than that batch took in Raft and
// st.linger (see lingerMax). It returns the timer it used, for the next
// wait.
func (st *settler) lingerLocked(timer *time.Timer) *time.Timer {
	st.want = st.last
	wait := min(st.linger, st.now().Sub(st.lastAt))
	st.mu.Unlock()
	if timer == nil {
		timer = time.NewTimer(wait)
	} else {
		timer.Reset(wait)
	}
	select {
	case <-st.full:
	case <-timer.C:
	case <-st.down:
	}
	timer.Stop()
	st.mu.Lock()
	st.want = 0
	select { // a fill that raced the timer
	case <-st.full:
	default:
	}
	return timer
}

func (st *settler) run() {
	var prev *proposal
	var timer *time.Timer
	for {
		st.mu.Lock()
		if prev != nil && prev.last {
			st.flying--
			if st.mayHandOverLocked() && len(st.held) < st.last && st.linger > 0 {
				timer = st.lingerLocked(timer)
			}
			if st.mayHandOverLocked() {
				held := st.held
				st.held = nil
				st.handOverLocked(held)
			}
		}
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
		prev = p
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
	held := st.held
	st.held = nil
	pending := st.queue
	st.queue = nil
	if st.cur != nil {
		pending = append([]*proposal{st.cur}, pending...)
	}
	cur := st.cur
	st.mu.Unlock()
	for _, p := range held {
		p.settle(errNotProposed)
	}
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
