package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/rpc/pb"
	"google.golang.org/grpc"
)

// CallRaw is Call with the argument and result as raw JSON.
func (s *Stub) CallRaw(ctx context.Context, method string, arg []byte) ([]byte, error) {
	seq, sc := s.enter()
	return s.do(ctx, seq, sc, method, arg)
}

// Pending is a call issued with Go; Wait returns its outcome.
type Pending struct {
	done  chan struct{}
	reply []byte
	err   error
}

// Wait blocks until the call ends and returns its raw JSON reply.
func (p *Pending) Wait() ([]byte, error) {
	<-p.done
	return p.reply, p.err
}

// Go issues a call without waiting for it: calls issued with Go (or Call) on
// one stub reach the object in the order they were issued. arg is encoded as
// JSON before Go returns.
func (s *Stub) Go(ctx context.Context, method string, arg any) *Pending {
	p := &Pending{done: make(chan struct{})}
	raw, err := json.Marshal(arg)
	if err != nil {
		p.err = fmt.Errorf("%w: encode argument: %v", duro.ErrInvalidArgument, err)
		close(p.done)
		return p
	}
	seq, sc := s.enter()
	go func() {
		defer close(p.done)
		p.reply, p.err = s.do(ctx, seq, sc, method, raw)
	}()
	return p
}

func (s *Stub) do(ctx context.Context, seq uint64, sc *stubCall, method string, arg []byte) ([]byte, error) {
	c := s.c
	defer c.end(seq)
	defer s.leave(seq)
	if _, ok := ctx.Deadline(); !ok && c.opts.callTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.callTimeout)
		defer cancel()
	}
	shard := duro.ShardOf(s.id, max(c.shards, 1))

	req := &pb.CallRequest{Namespace: s.ns, ObjectId: s.id[:], Method: method, Arg: arg, ClientId: c.id[:], Seq: seq}
	// A call made from inside an object's method carries the chain of
	// waiting objects, so the server can refuse a cycle.
	for _, h := range duro.CallChain(ctx) {
		req.CallChain = append(req.CallChain, &pb.CallHop{Namespace: h.Namespace, ObjectId: append([]byte(nil), h.ID[:]...)})
	}
	maybeRan := false
	for attempt := 0; ; attempt++ {
		addr := c.route(shard)
		ch, sendErr := s.send(ctx, seq, sc, addr, req)
		if errors.Is(sendErr, errNoTurn) {
			return nil, s.giveUp(maybeRan, ctx.Err())
		}
		var resp *pb.CallResponse
		if sendErr == nil {
			select {
			case resp = <-ch:
			case <-ctx.Done():
				return nil, s.giveUp(true, ctx.Err())
			}
		}
		var e *duro.Error
		switch {
		case sendErr != nil:
			// Not sent: safe to retry elsewhere.
			c.setRoute(shard, "")
			e = &duro.Error{Code: duro.CodeUnavailable, Retryable: true, Message: sendErr.Error()}
		case resp == nil:
			// The stream broke after the request was sent.
			c.setRoute(shard, "")
			maybeRan = true
			e = &duro.Error{Code: duro.CodeUnavailable, Indeterminate: true, Message: "connection to " + addr + " lost"}
		case resp.Error == nil:
			return resp.Reply, nil
		default:
			pe := resp.Error
			e = &duro.Error{Code: duro.Code(pe.Code), Message: pe.Message, Retryable: pe.Retryable,
				Overloaded: pe.Overloaded, Indeterminate: pe.Indeterminate, Leader: pe.Leader}
			if e.Indeterminate {
				maybeRan = true
			}
			if e.Retryable || e.Indeterminate {
				c.setRoute(shard, e.Leader)
			}
		}
		if c.opts.noRetry || !(e.Retryable || e.Indeterminate) {
			if maybeRan && e.Retryable {
				e.Retryable, e.Indeterminate = false, true
			}
			return nil, e
		}
		s.markRetry(sc)
		if d := retryDelay(attempt, e, addr); d > 0 {
			select {
			case <-ctx.Done():
				return nil, s.giveUp(maybeRan, fmt.Errorf("%w (last error: %v)", ctx.Err(), e))
			case <-time.After(d):
			}
		}
	}
}

func (s *Stub) giveUp(maybeRan bool, err error) error {
	if maybeRan {
		return &duro.Error{Code: duro.CodeDeadlineExceeded, Indeterminate: true, Message: "call may have been applied: " + err.Error()}
	}
	return &duro.Error{Code: duro.CodeDeadlineExceeded, Retryable: true, Message: "call not applied: " + err.Error()}
}

// E-order across retries: a call is sent only when no earlier call of the
// stub is waiting to be resent, and a resend (or a send to a different node
// than earlier open calls went to) waits until every earlier call finished.

// enter allocates the call's sequence number under the stub's lock, so the
// stub's order is the order calls entered.
func (s *Stub) enter() (uint64, *stubCall) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cond == nil {
		s.cond = sync.NewCond(&s.mu)
	}
	seq := s.c.begin()
	sc := &stubCall{}
	s.open[seq] = sc
	return seq, sc
}

func (s *Stub) leave(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.open, seq)
	if len(s.open) == 0 {
		s.addr = ""
	}
	s.cond.Broadcast()
}

func (s *Stub) markRetry(sc *stubCall) {
	s.mu.Lock()
	sc.retrying = true
	s.mu.Unlock()
}

var errNoTurn = errors.New("client: call ended before it could be sent")

// send waits until seq may be sent to addr, then sends it, all under the
// stub's lock, so the stub's calls go out in order.
func (s *Stub) send(ctx context.Context, seq uint64, sc *stubCall, addr string, req *pb.CallRequest) (chan *pb.CallResponse, error) {
	nc, err := s.c.conn(addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.mayGoLocked(seq, sc, addr) {
		if ctx.Err() != nil {
			return nil, errNoTurn
		}
		s.cond.Wait()
	}
	if ctx.Err() != nil {
		return nil, errNoTurn
	}
	sc.retrying, sc.sent = false, true
	s.addr = addr
	req.AckedBelow = s.c.ackedBelow()
	if dl, ok := ctx.Deadline(); ok {
		req.TimeoutMs = max(time.Until(dl).Milliseconds(), 1)
	}
	ch, err := nc.send(ctx, req)
	s.cond.Broadcast()
	return ch, err
}

func (s *Stub) mayGoLocked(seq uint64, sc *stubCall, addr string) bool {
	for q, o := range s.open {
		if q >= seq {
			continue
		}
		if !o.sent || o.retrying || sc.retrying || (s.addr != "" && s.addr != addr) {
			return false
		}
	}
	return true
}

// nodeConn is the connection to one node, with one CallStream shared by all
// calls to that node.
type nodeConn struct {
	addr string
	cc   *grpc.ClientConn
	// sending admits one sender at a time (a gRPC stream has one writer)
	// and, unlike a mutex, can be waited for under a deadline: a node that
	// stopped answering can block a Send on flow control or the opening of
	// a stream indefinitely, and the calls queued behind it must still end
	// at their deadlines.
	sending chan struct{}

	mu      sync.Mutex // guards stream, cancel, pending, tag
	stream  pb.Objects_CallStreamClient
	cancel  context.CancelFunc
	pending map[uint64]chan *pb.CallResponse
	tag     uint64
}

// send sends req on the node's stream, opening it if needed, and returns the
// channel its response arrives on (nil there: the outcome is unknown). An
// error means req was not sent. It gives up when ctx ends: before the
// request is written, with ctx's error; while it is being written, by
// breaking the stream, so that every call on it learns its outcome is
// unknown.
func (n *nodeConn) send(ctx context.Context, req *pb.CallRequest) (chan *pb.CallResponse, error) {
	select {
	case n.sending <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-n.sending }()
	n.mu.Lock()
	st, cancel := n.stream, n.cancel
	n.mu.Unlock()
	if st == nil {
		var err error
		if st, cancel, err = n.open(ctx); err != nil {
			return nil, err
		}
	}
	n.mu.Lock()
	if n.stream != st { // broken by the receiver meanwhile
		n.mu.Unlock()
		return nil, errors.New("client: stream to " + n.addr + " broke")
	}
	n.tag++
	tag := n.tag
	req.Tag = tag
	ch := make(chan *pb.CallResponse, 1)
	n.pending[tag] = ch
	n.mu.Unlock()
	stop := context.AfterFunc(ctx, cancel)
	err := st.Send(req)
	stop()
	if err != nil {
		n.mu.Lock()
		if _, ok := n.pending[tag]; ok {
			delete(n.pending, tag)
			ch <- nil // the request may be partly written: possibly sent
		}
		n.breakLocked(st)
		n.mu.Unlock()
	}
	return ch, nil
}

// open opens the node's call stream, waiting no longer than ctx allows (the
// stream itself lives until it breaks or the client closes). The caller
// holds n.sending, so only one stream is opened at a time.
func (n *nodeConn) open(ctx context.Context) (pb.Objects_CallStreamClient, context.CancelFunc, error) {
	sctx, cancel := context.WithCancel(context.Background())
	type opened struct {
		st  pb.Objects_CallStreamClient
		err error
	}
	done := make(chan opened, 1)
	go func() {
		st, err := pb.NewObjectsClient(n.cc).CallStream(sctx)
		done <- opened{st, err}
	}()
	var o opened
	select {
	case o = <-done:
	case <-ctx.Done():
		cancel() // the opening fails and the goroutine ends
		return nil, nil, ctx.Err()
	}
	if o.err != nil {
		cancel()
		return nil, nil, o.err
	}
	n.mu.Lock()
	n.stream, n.cancel = o.st, cancel
	n.mu.Unlock()
	go n.recv(o.st)
	return o.st, cancel, nil
}

func (n *nodeConn) recv(st pb.Objects_CallStreamClient) {
	for {
		resp, err := st.Recv()
		n.mu.Lock()
		if err != nil {
			n.breakLocked(st)
			n.mu.Unlock()
			return
		}
		if ch, ok := n.pending[resp.Tag]; ok {
			delete(n.pending, resp.Tag)
			ch <- resp
		}
		n.mu.Unlock()
	}
}

// breakLocked drops a failed stream: every call waiting on it learns that its
// outcome is unknown.
func (n *nodeConn) breakLocked(st pb.Objects_CallStreamClient) {
	if n.stream != st {
		return
	}
	n.cancel()
	n.stream = nil
	for tag, ch := range n.pending {
		delete(n.pending, tag)
		ch <- nil
	}
}

func (n *nodeConn) close() {
	n.mu.Lock()
	if n.stream != nil {
		n.breakLocked(n.stream)
	}
	n.mu.Unlock()
	n.cc.Close()
}
