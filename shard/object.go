package shard

import (
	"container/list"
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/fsm"
	"github.com/hashicorp/raft"
)

// Request is one call to an object.
type Request struct {
	Namespace  string
	Object     duro.ID
	Method     string
	Arg        []byte
	Client     fsm.ClientID // zero: no exactly-once session
	Seq        uint64
	AckedBelow uint64
	// Chain is the objects whose methods wait for this call (calls made
	// from inside a method), outermost first.
	Chain []duro.Hop
}

// Result is the outcome of a call: a reply, or an error.
type Result struct {
	Reply []byte
	Err   *duro.Error

	alarmSkipped bool   // an alarm turn found its alarm not due
	alarmMissed  bool   // an alarm turn failed without its handler failing
	alarmNS      string // set on alarm results
}

type sessKey struct {
	c   fsm.ClientID
	seq uint64
}

// objectHost runs the objects of one shard while it leads.
type objectHost struct {
	s *Shard

	mu       sync.Mutex // guards everything below
	active   bool
	epoch    uint64
	term     uint64
	ready    chan struct{} // closed when the host activates; replaced on reset
	objects  map[duro.ID]*object
	inflight map[sessKey]*inflight
	// retired holds, for objects reset after a failed entry, a channel closed
	// when the last entry of the old instance is resolved; a new instance
	// waits for it so it starts from settled state.
	retired map[duro.ID]chan struct{}
	lru     *list.List // of *object, most recently submitted to first

	wg sync.WaitGroup // turn and waiter goroutines
}

type inflight struct {
	done chan struct{}
	res  Result
}

func newObjectHost(s *Shard) *objectHost {
	return &objectHost{s: s, ready: make(chan struct{}), objects: map[duro.ID]*object{},
		inflight: map[sessKey]*inflight{}, retired: map[duro.ID]chan struct{}{}, lru: newLRU()}
}

// activate makes the host active unless ctx, the activation's, is cancelled:
// watchLeadership cancels it before resetting the host, so a stale activation
// can neither revive a reset host nor close ready twice.
func (h *objectHost) activate(ctx context.Context, epoch, term uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ctx.Err() != nil || h.active {
		return
	}
	h.active, h.epoch, h.term = true, epoch, term
	close(h.ready)
}

// reset drops every object: queued calls fail as retryable, in-flight entries
// resolve on their own (raft fails them), nothing else runs.
func (h *objectHost) reset(why string) {
	h.mu.Lock()
	wasActive := h.active
	h.active = false
	if wasActive {
		h.ready = make(chan struct{})
	}
	objs := h.objects
	h.objects = map[duro.ID]*object{}
	h.retired = map[duro.ID]chan struct{}{}
	h.lru = newLRU()
	h.mu.Unlock()
	for _, o := range objs {
		o.kill(retryable("shard %d: %s", h.s.id, why))
	}
}

func (h *objectHost) waitIdle() { h.wg.Wait() }

// submit queues c on its object; c.done is called exactly once.
func (h *objectHost) submit(c *call) {
	for {
		h.mu.Lock()
		if h.active {
			now := h.s.cfg.Now()
			o := h.objects[c.req.Object]
			if o == nil {
				o = &object{h: h, id: c.req.Object, ns: c.req.Namespace, class: c.class,
					epoch: h.epoch, term: h.term, after: h.retired[c.req.Object]}
				delete(h.retired, c.req.Object)
				h.objects[c.req.Object] = o
				o.elem = h.lru.PushFront(o)
				o.touched = now
				h.shrinkLocked(o)
			} else {
				h.lru.MoveToFront(o.elem)
				o.touched = now
			}
			h.mu.Unlock()
			if o.enqueue(c) {
				return
			}
			continue // the object died between lookup and enqueue; look again
		}
		ready := h.ready
		h.mu.Unlock()
		if !h.s.IsLeader() {
			addr, _ := h.s.Leader()
			c.done(Result{Err: notLeader(h.s.id, addr)})
			return
		}
		// Leader but still applying the log before activation.
		t := time.NewTimer(2 * time.Second)
		select {
		case <-ready:
			t.Stop()
		case <-c.ctx.Done():
			t.Stop()
			c.done(Result{Err: retryable("shard %d: leader still activating: %v", h.s.id, c.ctx.Err())})
			return
		case <-t.C:
			c.done(Result{Err: retryable("shard %d: leader still activating", h.s.id)})
			return
		}
	}
}

// retire removes o from the host after one of its entries failed.
func (h *objectHost) retire(o *object, settled chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.objects[o.id] == o {
		h.removeLocked(o)
		h.retired[o.id] = settled
	}
}

type call struct {
	ctx   context.Context
	req   *Request
	class *duro.Class
	fn    duro.Handler
	done  func(Result)
	alarm bool // an alarm delivery (alarm.go): fn runs the Alarm handler
}

// entry is one proposed, not yet applied, write set of an object.
type entry struct {
	ws   *writeSet
	done chan struct{} // closed when resolved
	ok   bool          // applied; valid after done
}

// object is one activated object. Its turns run one at a time.
type object struct {
	h     *objectHost
	id    duro.ID
	ns    string
	class *duro.Class
	epoch uint64
	term  uint64
	after chan struct{} // predecessor instance settled; nil if none

	elem    *list.Element // in h.lru; guarded by h.mu
	touched time.Time     // last submission; guarded by h.mu

	inst       duro.Instance // owned by the turn goroutine
	started    bool          // owned by the turn goroutine
	activating bool          // Activate hook still to run; owned by the turn goroutine

	mu       sync.Mutex // guards queue, running, dead, version, pending, used, lastUsed
	queue    []*call
	running  bool
	dead     *duro.Error // set once the object is reset
	version  uint64      // speculative: applied calls + pending entries
	pending  []*entry
	used     bool      // a turn has ended
	lastUsed time.Time // end of the last turn
}

func (o *object) enqueue(c *call) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dead != nil {
		return false
	}
	o.queue = append(o.queue, c)
	if !o.running {
		o.running = true
		o.h.wg.Add(1)
		taskWorkers.run(o.run)
	}
	return true
}

// kill resets o: queued calls fail with err; a running turn finishes but its
// entry is not proposed.
func (o *object) kill(err *duro.Error) chan struct{} {
	o.mu.Lock()
	if o.dead == nil {
		o.dead = err
	}
	q := o.queue
	o.queue = nil
	settled := make(chan struct{})
	var last *entry
	if n := len(o.pending); n > 0 {
		last = o.pending[n-1]
	}
	o.mu.Unlock()
	for _, c := range q {
		c.done(Result{Err: err})
	}
	if last == nil {
		close(settled)
	} else {
		go func() { <-last.done; close(settled) }()
	}
	return settled
}

func (o *object) run() {
	defer o.h.wg.Done()
	for {
		o.mu.Lock()
		if len(o.queue) == 0 || o.dead != nil {
			o.running = false
			o.used, o.lastUsed = true, o.h.s.cfg.Now()
			idle := o.idleLocked()
			o.mu.Unlock()
			if idle {
				o.h.maybeShrink()
			}
			return
		}
		c := o.queue[0]
		o.queue[0] = nil
		o.queue = o.queue[1:]
		o.mu.Unlock()
		o.turn(c)
	}
}

// start activates the instance on the turn goroutine, from settled state.
func (o *object) start() {
	if o.after != nil {
		<-o.after
	}
	v := o.h.s.machine.Version(o.id)
	o.mu.Lock()
	o.version = v
	o.mu.Unlock()
	o.inst = o.class.New()
	o.started = true
	_, o.activating = o.inst.(duro.Activator)
}

func (o *object) turn(c *call) {
	h, s := o.h, o.h.s
	req := c.req
	if !o.started {
		o.start()
	}
	if req.Client != (fsm.ClientID{}) {
		key := sessKey{req.Client, req.Seq}
		h.mu.Lock()
		inf := h.inflight[key]
		h.mu.Unlock()
		if inf != nil {
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				<-inf.done
				c.done(inf.res)
			}()
			return
		}
		switch st, reply := s.machine.Session(req.Client, req.Seq); st {
		case fsm.Duplicate:
			c.done(Result{Reply: reply})
			return
		case fsm.Rejected:
			c.done(Result{Err: duro.Errorf(duro.CodeFailedPrecondition,
				"call sequence %d was already acknowledged by this client; not run again", req.Seq)})
			return
		}
	}
	if err := c.ctx.Err(); err != nil {
		c.done(Result{Err: &duro.Error{Code: duro.CodeDeadlineExceeded, Message: "call not run: " + err.Error(), Retryable: true}})
		return
	}

	o.mu.Lock()
	overlays := append([]*entry(nil), o.pending...)
	base := o.version
	o.mu.Unlock()

	now := s.cfg.Now()
	ws := newWriteSet()
	st := &turnStore{obj: o, overlays: overlays, ws: ws, limits: s.cfg.Limits}
	chain := append(append(make([]duro.Hop, 0, len(req.Chain)+1), req.Chain...), duro.Hop{Namespace: o.ns, ID: o.id})
	tc := &turnCtx{Context: duro.WithCallChain(c.ctx, chain), id: o.id, ns: o.ns, store: st, now: now, obj: o, chain: chain}
	if c.alarm {
		if !alarmDue(st, now) {
			c.done(Result{alarmSkipped: true})
			return
		}
		// The entry of the alarm's turn clears it, unless the handler sets
		// a new one.
		st.ws.alarm = fsm.AlarmChange{Kind: fsm.AlarmDelete}
	}
	var reply []byte
	var err error
	if o.activating {
		o.activating = false
		if err = o.activateInstance(tc); err != nil {
			// Discard the instance: the next call activates a fresh one.
			o.inst = o.class.New()
			_, o.activating = o.inst.(duro.Activator)
		}
	}
	if err == nil {
		reply, err = o.invoke(c.fn, tc, req.Arg)
	}
	ws = st.ws // Transaction may have replaced it
	var deps *entry
	if n := len(overlays); n > 0 {
		deps = overlays[n-1]
	}
	if err != nil || ws.empty() {
		res := Result{Reply: reply}
		if err != nil {
			res = Result{Err: duro.AsError(err)}
		}
		h.wg.Add(1)
		taskWorkers.run(func() {
			defer h.wg.Done()
			c.done(o.readGate(c.ctx, deps, res))
		})
		return
	}

	e := &entry{ws: ws, done: make(chan struct{})}
	data := fsm.EncodeCall(&fsm.Call{
		Epoch: o.epoch, Time: now.UnixNano(), Namespace: o.ns, Object: o.id, BaseVersion: base,
		Client: req.Client, Seq: req.Seq, AckedBelow: req.AckedBelow, Reply: reply,
		ClearAll: ws.clearAll, Ops: ws.ops(), Alarm: ws.alarm,
	})
	o.mu.Lock()
	if o.dead != nil {
		err := o.dead
		o.mu.Unlock()
		c.done(Result{Err: err})
		return
	}
	o.version++
	o.pending = append(o.pending, e)
	o.mu.Unlock()
	var inf *inflight
	if req.Client != (fsm.ClientID{}) {
		inf = &inflight{done: make(chan struct{})}
		h.mu.Lock()
		h.inflight[sessKey{req.Client, req.Seq}] = inf
		h.mu.Unlock()
	}
	h.wg.Add(1)
	s.settle.propose(data, func(f raft.ApplyFuture, err error) {
		defer h.wg.Done()
		var resp any
		if err == nil {
			resp = f.Response()
		}
		res := o.settle(e, err, resp)
		if inf != nil {
			inf.res = res
			h.mu.Lock()
			delete(h.inflight, sessKey{req.Client, req.Seq})
			h.mu.Unlock()
			close(inf.done)
		}
		c.done(res)
	})
}

// settle resolves a proposed entry: the output gate opens here.
func (o *object) settle(e *entry, err error, resp any) Result {
	s := o.h.s
	var res Result
	if err != nil {
		addr, _ := s.Leader()
		res = Result{Err: classifyApply(s.id, err, addr)}
	} else {
		r, _ := resp.(*fsm.Result)
		switch {
		case r == nil:
			res = Result{Err: &duro.Error{Code: duro.CodeInternal, Indeterminate: true, Message: "no apply result"}}
		case r.Status == fsm.Applied:
			e.ok = true
			res = Result{Reply: r.Reply}
		case r.Status == fsm.Duplicate:
			res = Result{Reply: r.Reply}
		default:
			res = Result{Err: retryable("shard %d: call not applied: %s", s.id, r.Reason)}
		}
	}
	o.mu.Lock()
	for i, p := range o.pending {
		if p == e {
			if e.ok {
				// The object's entries apply in order, so every entry before
				// e is applied too. Drop them with e: left behind (their settle
				// goroutines may run after this one), an older entry would
				// shadow e's applied writes from the next turn, which would
				// then build on stale state and overwrite e.
				o.pending = append([]*entry(nil), o.pending[i+1:]...)
			} else {
				o.pending = append(o.pending[:i:i], o.pending[i+1:]...)
			}
			break
		}
	}
	idle := o.idleLocked()
	o.mu.Unlock()
	close(e.done)
	if e.ok && e.ws.alarm.Kind != fsm.AlarmKeep {
		s.nudgeAlarms()
	}
	if idle {
		o.h.maybeShrink()
	}
	if !e.ok {
		// Speculative state built on this entry is void.
		settled := o.kill(retryable("shard %d: object reset after a failed write", s.id))
		o.h.retire(o, settled)
	}
	return res
}

// readGate holds back the result of a call that wrote nothing until the
// entries it read from are applied and leadership is confirmed.
func (o *object) readGate(ctx context.Context, deps *entry, res Result) Result {
	s := o.h.s
	if deps != nil {
		select {
		case <-deps.done:
			if !deps.ok {
				return Result{Err: retryable("shard %d: call read state that was not committed", s.id)}
			}
		case <-ctx.Done():
			return Result{Err: &duro.Error{Code: duro.CodeDeadlineExceeded, Message: ctx.Err().Error(), Retryable: true}}
		}
	}
	if err := o.confirmLeader(ctx); err != nil {
		return Result{Err: err}
	}
	return res
}

// confirmLeader returns nil once a quorum has confirmed that this node
// still leads the shard in the term the object was activated in: what the
// object read is then current, and output that depends on it may leave.
func (o *object) confirmLeader(ctx context.Context) *duro.Error {
	s := o.h.s
	if err := s.verify.verify(ctx); err != nil || s.raft.CurrentTerm() != o.term {
		addr, _ := s.Leader()
		return notLeader(s.id, addr)
	}
	return nil
}

func (o *object) invoke(fn duro.Handler, ctx duro.Context, arg []byte) (reply []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			o.h.s.log.Error("method panicked", "ns", o.ns, "object", o.id.String(), "panic", p, "stack", string(debug.Stack()))
			err = duro.Errorf(duro.CodeInternal, "method panicked: %v", p)
			// The instance may be half-updated: start a fresh one next time.
			o.inst = o.class.New()
			_, o.activating = o.inst.(duro.Activator)
		}
	}()
	return fn(ctx, o.inst, arg)
}

type turnCtx struct {
	context.Context
	id    duro.ID
	ns    string
	store *turnStore
	now   time.Time
	obj   *object
	chain []duro.Hop // the calls waiting for this one, this object last
}

func (t *turnCtx) ID() duro.ID           { return t.id }
func (t *turnCtx) Namespace() string     { return t.ns }
func (t *turnCtx) Storage() duro.Storage { return t.store }
func (t *turnCtx) Now() duro.Time        { return t.now }
func (t *turnCtx) String() string        { return fmt.Sprintf("call(%s/%s)", t.ns, t.id) }
