package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/duro-io/duro"
	"github.com/hashicorp/raft"
)

// HostConfig configures a node's set of shards.
type HostConfig struct {
	Settings
	DataDir string
	Shards  int
	// MaxActive caps the objects the node keeps in memory, split evenly
	// across its shards (ceil(MaxActive/Shards) each): 0 means
	// DefaultMaxActive.
	MaxActive int
	// Transport returns the Raft transport of shard id on this node.
	Transport func(id ID) (raft.Transport, error)
}

// Host is a node's set of shards.
type Host struct {
	cfg    HostConfig
	log    *slog.Logger
	shards []*Shard

	mu     sync.Mutex // guards closed
	closed bool

	stopBalance chan struct{}
	balanceDone chan struct{}
}

// NewHost opens every shard of the node. On error, shards already opened are
// closed again.
func NewHost(cfg HostConfig) (*Host, error) {
	if cfg.Shards <= 0 {
		return nil, fmt.Errorf("shard: host needs at least one shard, got %d", cfg.Shards)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Host{log: cfg.Logger}
	if cfg.Caller == nil {
		cfg.Caller = h.localCall
	}
	h.cfg = cfg
	maxActive := cfg.MaxActive
	if maxActive <= 0 {
		maxActive = DefaultMaxActive
	}
	perShard := (maxActive + cfg.Shards - 1) / cfg.Shards
	for i := 0; i < cfg.Shards; i++ {
		tr, err := cfg.Transport(ID(i))
		if err != nil {
			h.closeShards()
			return nil, err
		}
		s, err := Open(Config{
			Settings: cfg.Settings, ID: ID(i), Dir: filepath.Join(cfg.DataDir, fmt.Sprintf("shard-%04d", i)),
			Transport: tr, MaxActive: perShard,
		})
		if err != nil {
			h.closeShards()
			return nil, err
		}
		h.shards = append(h.shards, s)
	}
	if h.balanceEvery() > 0 && len(cfg.Peers) > 1 {
		h.stopBalance, h.balanceDone = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(h.balanceDone)
			h.balanceLoop(h.stopBalance)
		}()
	}
	return h, nil
}

// Shards returns the node's shards, indexed by ID.
func (h *Host) Shards() []*Shard { return h.shards }

// ActiveObjects returns the number of objects this node holds in memory.
func (h *Host) ActiveObjects() int {
	n := 0
	for _, s := range h.shards {
		n += s.host.activeObjects()
	}
	return n
}

// Registry returns the class registry.
func (h *Host) Registry() *duro.Registry { return h.cfg.Registry }

// Submit validates req and queues it on its object; done is called exactly
// once, possibly before Submit returns. done must not block: the calls of a
// shard are settled one after another on one goroutine. Calls submitted for one object run in
// the order submitted.
func (h *Host) Submit(ctx context.Context, req *Request, done func(Result)) {
	class, ok := h.cfg.Registry.Lookup(req.Namespace)
	if !ok {
		done(Result{Err: duro.Errorf(duro.CodeNotFound, "unknown namespace %q", req.Namespace)})
		return
	}
	fn, ok := class.Handler(req.Method)
	if !ok {
		done(Result{Err: duro.Errorf(duro.CodeNotFound, "namespace %q has no method %q", req.Namespace, req.Method)})
		return
	}
	if !req.Object.Valid(req.Namespace) {
		done(Result{Err: duro.Errorf(duro.CodeInvalidArgument, "object id %s does not belong to namespace %q", req.Object, req.Namespace)})
		return
	}
	if err := duro.CheckCallChain(req.Chain, duro.Hop{Namespace: req.Namespace, ID: req.Object}); err != nil {
		done(Result{Err: duro.AsError(err)})
		return
	}
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		done(Result{Err: retryable("node is shutting down")})
		return
	}
	s := h.shards[duro.ShardOf(req.Object, len(h.shards))]
	var once sync.Once
	s.host.submit(&call{ctx: ctx, req: req, class: class, fn: fn, done: func(r Result) { once.Do(func() { done(r) }) }})
}

// Call runs req and waits for its result.
func (h *Host) Call(ctx context.Context, req *Request) Result {
	ch := make(chan Result, 1)
	h.Submit(ctx, req, func(r Result) { ch <- r })
	return <-ch
}

// TransferLeaderships moves every shard this node leads to another voter, so
// a planned shutdown does not wait out an election timeout.
func (h *Host) TransferLeaderships(ctx context.Context) {
	var wg sync.WaitGroup
	for _, s := range h.shards {
		if !s.IsLeader() || len(h.cfg.Peers) < 2 {
			continue
		}
		wg.Add(1)
		go func(s *Shard) {
			defer wg.Done()
			f := s.raft.LeadershipTransfer()
			done := make(chan error, 1)
			go func() { done <- f.Error() }()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, raft.ErrNotLeader) {
					h.log.Warn("leadership transfer failed", "shard", int(s.id), "err", err)
				}
			case <-ctx.Done():
			}
		}(s)
	}
	wg.Wait()
}

// Close stops accepting calls, hands off leaderships (bounded by ctx), and
// shuts every shard down.
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	h.mu.Unlock()
	if h.stopBalance != nil {
		close(h.stopBalance)
		<-h.balanceDone
	}
	h.TransferLeaderships(ctx)
	return h.closeShards()
}

func (h *Host) closeShards() error {
	var wg sync.WaitGroup
	errs := make([]error, len(h.shards))
	for i, s := range h.shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Close()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
