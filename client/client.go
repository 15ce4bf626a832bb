package client

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/rpc/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Errors, re-exported from the root package for errors.Is.
var (
	ErrInvalidArgument = duro.ErrInvalidArgument
	ErrNotFound        = duro.ErrNotFound
	ErrUnavailable     = duro.ErrUnavailable
	ErrIndeterminate   = duro.ErrIndeterminate
	ErrOverloaded      = duro.ErrOverloaded
)

// Option configures a Client.
type Option func(*options)

type options struct {
	callTimeout time.Duration
	noRetry     bool
	dialOpts    []grpc.DialOption
}

// WithCallTimeout bounds a call (all its retries) when ctx has no deadline.
// Default 30 s.
func WithCallTimeout(d time.Duration) Option { return func(o *options) { o.callTimeout = d } }

// WithoutRetries makes every call a single attempt ("raw" mode, for tests
// that classify errors themselves).
func WithoutRetries() Option { return func(o *options) { o.noRetry = true } }

// WithDialOptions adds gRPC dial options.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// Client is a connection to a duro cluster. It is safe for concurrent use.
type Client struct {
	opts      options
	endpoints []string
	id        [16]byte
	shards    int

	mu     sync.Mutex // guards conns, routes, next, closed
	conns  map[string]*nodeConn
	routes map[int]string // shard → leader address hint
	next   int            // round-robin over endpoints
	closed bool

	seqMu sync.Mutex // guards seq, outstanding, low
	seq   uint64
	open  map[uint64]struct{}
	low   uint64
}

// Dial connects to a cluster through any of endpoints and learns its shape.
func Dial(ctx context.Context, endpoints []string, opts ...Option) (*Client, error) {
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("client: no endpoints")
	}
	c := &Client{endpoints: endpoints, conns: map[string]*nodeConn{}, routes: map[int]string{},
		open: map[uint64]struct{}{}, seq: 0, low: 1}
	c.opts.callTimeout = 30 * time.Second
	for _, o := range opts {
		o(&c.opts)
	}
	if _, err := crand.Read(c.id[:]); err != nil {
		return nil, err
	}
	var last error
	for attempt := 0; ; attempt++ {
		for _, ep := range endpoints {
			st, err := c.status(ctx, ep)
			if err == nil {
				c.shards = int(st.Shards)
				for _, s := range st.Shard {
					if s.LeaderAddr != "" {
						c.routes[int(s.Id)] = s.LeaderAddr
					}
				}
				return c, nil
			}
			last = err
		}
		select {
		case <-ctx.Done():
			c.Close()
			return nil, fmt.Errorf("client: no endpoint answered: %w", last)
		case <-time.After(backoff(attempt)):
		}
	}
}

func (c *Client) status(ctx context.Context, addr string) (*pb.StatusResponse, error) {
	nc, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return pb.NewAdminClient(nc.cc).Status(ctx, &pb.StatusRequest{})
}

// Close closes every connection. Calls in flight fail.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, nc := range c.conns {
		nc.close()
	}
	c.conns = map[string]*nodeConn{}
	return nil
}

// Shards returns the cluster's shard count.
func (c *Client) Shards() int { return c.shards }

func (c *Client) conn(addr string) (*nodeConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("client: closed")
	}
	if nc := c.conns[addr]; nc != nil {
		return nc, nil
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(streamWindow)}, c.opts.dialOpts...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	nc := &nodeConn{addr: addr, cc: cc, sending: make(chan struct{}, 1), pending: map[uint64]chan *pb.CallResponse{}}
	c.conns[addr] = nc
	return nc, nil
}

// route returns the address to send a call for shard to.
func (c *Client) route(shard int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.routes[shard]; ok {
		return a
	}
	a := c.endpoints[c.next%len(c.endpoints)]
	c.next++
	return a
}

func (c *Client) setRoute(shard int, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if addr == "" {
		delete(c.routes, shard)
	} else {
		c.routes[shard] = addr
	}
}

// begin allocates a sequence number and marks it outstanding.
func (c *Client) begin() uint64 {
	c.seqMu.Lock()
	defer c.seqMu.Unlock()
	c.seq++
	c.open[c.seq] = struct{}{}
	return c.seq
}

// end marks seq acknowledged: the client will never retry it again.
func (c *Client) end(seq uint64) {
	c.seqMu.Lock()
	defer c.seqMu.Unlock()
	delete(c.open, seq)
	for c.low <= c.seq {
		if _, ok := c.open[c.low]; ok {
			break
		}
		c.low++
	}
}

func (c *Client) ackedBelow() uint64 {
	c.seqMu.Lock()
	defer c.seqMu.Unlock()
	return c.low
}

func backoff(attempt int) time.Duration { return backoffUpTo(attempt, 500*time.Millisecond) }

// backoffUpTo doubles from 5 ms up to limit, jittered by half.
func backoffUpTo(attempt int, limit time.Duration) time.Duration {
	d := min(5*time.Millisecond<<min(attempt, 7), limit)
	return d/2 + rand.N(d/2+1)
}

// retryDelay is how long a call waits before its next attempt. A redirect to
// a leader it has not just tried goes at once (for the first few attempts:
// stale hints must not ping-pong a call between two nodes); waiting out an election (no
// leader yet, a node just killed) polls every 100 ms at most, so a call
// resumes soon after a new leader is up; an overloaded node gets room.
func retryDelay(attempt int, e *duro.Error, tried string) time.Duration {
	switch {
	case e.Overloaded:
		return backoffUpTo(attempt, 500*time.Millisecond)
	case e.Leader != "" && e.Leader != tried && attempt < 3:
		return 0
	default:
		return backoffUpTo(attempt, 100*time.Millisecond)
	}
}

// Namespace is a handle on the objects of one namespace.
type Namespace struct {
	c    *Client
	name string
}

// Namespace returns the handle of namespace name.
func (c *Client) Namespace(name string) *Namespace { return &Namespace{c: c, name: name} }

// Name returns the namespace's name.
func (n *Namespace) Name() string { return n.name }

// IDFromName returns the ID name always maps to.
func (n *Namespace) IDFromName(name string) duro.ID { return duro.IDFromName(n.name, name) }

// NewUniqueID returns a new random ID.
func (n *Namespace) NewUniqueID() duro.ID { return duro.NewUniqueID(n.name) }

// IDFromString parses an ID of this namespace.
func (n *Namespace) IDFromString(s string) (duro.ID, error) { return duro.ParseID(n.name, s) }

// Get returns a stub for id.
func (n *Namespace) Get(id duro.ID) *Stub {
	return &Stub{c: n.c, ns: n.name, id: id, open: map[uint64]*stubCall{}}
}

// Stub is a handle on one object. Calls through one stub reach the object in
// the order Call was invoked.
type Stub struct {
	c  *Client
	ns string
	id duro.ID

	mu   sync.Mutex // guards open, addr; cond waits on it
	cond *sync.Cond
	open map[uint64]*stubCall // calls not yet finished
	addr string               // where the open calls were first sent
}

type stubCall struct {
	sent     bool // sent at least once
	retrying bool // failed, waiting to be resent
}

// ID returns the stub's object ID.
func (s *Stub) ID() duro.ID { return s.id }

// Call invokes method with arg encoded as JSON and decodes the result into
// out (unless out is nil). It retries what is safe to retry until ctx ends.
func (s *Stub) Call(ctx context.Context, method string, arg, out any) error {
	raw, err := json.Marshal(arg)
	if err != nil {
		return fmt.Errorf("%w: encode argument: %v", duro.ErrInvalidArgument, err)
	}
	reply, err := s.CallRaw(ctx, method, raw)
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(reply, out); err != nil {
			return fmt.Errorf("client: decode result of %s.%s: %w", s.ns, method, err)
		}
	}
	return nil
}

// streamWindow is the HTTP/2 flow-control window of a connection and of
// each stream on it. A fixed window turns off gRPC's bandwidth estimation,
// which under steady load sends a PING, and waits for its answer, every
// round trip on every connection.
const streamWindow = 1 << 20
