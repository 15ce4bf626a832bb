package duro

import (
	"context"
	"fmt"
	"strings"
)

// Stub calls one object from inside another object's method: the same calls
// as the Go SDK's client.Stub. A call made inside a method runs under that
// method's deadline (pass the method's ctx) and is routed to whichever node
// leads the callee's shard.
//
// The callee commits its writes before its reply is returned (its own output
// gate). The caller's writes commit with the caller's own entry when the
// caller's method returns; if the caller's call is retried (after a failover,
// say), its calls to other objects are made again, so such calls are at least
// once and should be idempotent where that matters.
//
// A call that would re-enter an object already waiting in the chain of calls
// (A → B → A, or A → A) fails at once with ErrCallCycle: the waiting object
// runs one call at a time and would never take the nested one.
type Stub interface {
	ID() ID
	// Call encodes arg as JSON, calls method and decodes the result into out
	// (unless out is nil).
	Call(ctx context.Context, method string, arg, out any) error
	// CallRaw is Call with the argument and result as raw JSON.
	CallRaw(ctx context.Context, method string, arg []byte) ([]byte, error)
}

// ErrCallCycle: a call would re-enter an object that is waiting for a call
// it made (A → B → A). Nothing was run; retrying cannot help.
var ErrCallCycle = &Error{Code: CodeAborted, Message: "call cycle"}

// Hop is one object in a chain of calls.
type Hop struct {
	Namespace string
	ID        ID
}

func (h Hop) String() string {
	s := h.ID.String()
	if len(s) > 12 {
		s = s[:12] + "…"
	}
	return h.Namespace + "/" + s
}

type chainKey struct{}

// WithCallChain returns ctx carrying the chain of objects whose methods are
// waiting for the call made with it, outermost first.
func WithCallChain(ctx context.Context, chain []Hop) context.Context {
	return context.WithValue(ctx, chainKey{}, chain)
}

// CallChain returns the chain of calls ctx carries (see WithCallChain).
func CallChain(ctx context.Context) []Hop {
	c, _ := ctx.Value(chainKey{}).([]Hop)
	return c
}

// CheckCallChain returns an ErrCallCycle error if a call to to, made along
// chain, would re-enter an object already in chain.
func CheckCallChain(chain []Hop, to Hop) error {
	for _, h := range chain {
		if h.ID == to.ID {
			names := make([]string, 0, len(chain)+1)
			for _, c := range chain {
				names = append(names, c.String())
			}
			names = append(names, to.String())
			return fmt.Errorf("%w: %s (%s is already waiting for a call it made)", ErrCallCycle, strings.Join(names, " → "), to)
		}
	}
	return nil
}
