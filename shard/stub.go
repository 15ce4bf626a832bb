package shard

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/duro-io/duro"
)

// Calls between objects: duro.Context.Stub.
//
// A method calls another object synchronously on its turn goroutine, so its
// own object takes no other call meanwhile, and nothing else waits: other
// objects of the shard run on their own goroutines. The only way such a call
// can deadlock is by re-entering a waiting object, which the chain of waiting
// objects (carried with every nested call, across nodes) refuses at once.
//
// Output gate: before a call leaves the object, the earlier entries this turn
// read from must have committed, so no other object acts on state that may
// yet be rolled back. The turn's own writes commit with its entry after the
// method returns.

func (t *turnCtx) Stub(ns string, id duro.ID) duro.Stub {
	return &turnStub{t: t, ns: ns, id: id}
}

type turnStub struct {
	t  *turnCtx
	ns string
	id duro.ID
}

func (s *turnStub) ID() duro.ID { return s.id }

func (s *turnStub) Call(ctx context.Context, method string, arg, out any) error {
	raw, err := json.Marshal(arg)
	if err != nil {
		return fmt.Errorf("%w: encode argument: %v", duro.ErrInvalidArgument, err)
	}
	reply, err := s.CallRaw(ctx, method, raw)
	if err != nil || out == nil {
		return err
	}
	if err := json.Unmarshal(reply, out); err != nil {
		return fmt.Errorf("decode reply of %s.%s: %w", s.ns, method, err)
	}
	return nil
}

func (s *turnStub) CallRaw(ctx context.Context, method string, arg []byte) ([]byte, error) {
	if err := duro.CheckCallChain(s.t.chain, duro.Hop{Namespace: s.ns, ID: s.id}); err != nil {
		return nil, err
	}
	// The caller's deadline bounds the call even if ctx has none.
	if d, ok := s.t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d)
		defer cancel()
	}
	if err := s.t.store.awaitOverlays(ctx); err != nil {
		return nil, err
	}
	// A call is output, like a reply: a deposed leader that has not noticed
	// yet must not act on what it read.
	if err := s.t.obj.confirmLeader(ctx); err != nil {
		return nil, err
	}
	caller := s.t.obj.h.s.cfg.Caller
	if caller == nil {
		return nil, duro.Errorf(duro.CodeUnavailable, "calls between objects are not configured on this node")
	}
	return caller(duro.WithCallChain(ctx, s.t.chain), s.ns, s.id, method, arg)
}

// awaitOverlays waits until the pending entries the turn reads from are
// applied; if one failed, the turn's state is void.
func (t *turnStore) awaitOverlays(ctx context.Context) error {
	if n := len(t.overlays); n > 0 {
		last := t.overlays[n-1]
		select {
		case <-last.done:
			if !last.ok {
				return retryable("shard %d: call read state that was not committed", t.obj.h.s.id)
			}
		case <-ctx.Done():
			return &duro.Error{Code: duro.CodeDeadlineExceeded, Message: ctx.Err().Error(), Retryable: true}
		}
	}
	return nil
}

// localCall is the Caller of a Host without one: it reaches only shards this
// node leads.
func (h *Host) localCall(ctx context.Context, ns string, id duro.ID, method string, arg []byte) ([]byte, error) {
	r := h.Call(ctx, &Request{Namespace: ns, Object: id, Method: method, Arg: arg, Chain: duro.CallChain(ctx)})
	if r.Err != nil {
		return nil, r.Err
	}
	return r.Reply, nil
}
