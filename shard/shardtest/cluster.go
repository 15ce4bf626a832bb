// Package shardtest runs in-process clusters of shard.Hosts over
// hashicorp/raft's in-memory transport, for tests.
//
// Every (node, shard) pair has its own raft.InmemTransport; the transports of
// one shard form one network in which node i has address Addr(i). Partitions
// are made by disconnecting transports (Isolate, Heal).
//
// Helpers that wait (LeaderOf, Eventually, WaitConverged) fail the test with
// t.Fatal, so call them from the test's goroutine only.
package shardtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/shard"
	"github.com/hashicorp/raft"
)

// Timing is the fast Raft timing the clusters use.
var Timing = shard.RaftTiming{
	HeartbeatTimeout:   200 * time.Millisecond,
	ElectionTimeout:    200 * time.Millisecond,
	LeaderLeaseTimeout: 100 * time.Millisecond,
	CommitTimeout:      5 * time.Millisecond,
	SnapshotThreshold:  1024,
	SnapshotInterval:   10 * time.Second,
	TrailingLogs:       1024,
	MaxAppendEntries:   64,
}

// Options configure a cluster; zero fields take defaults.
type Options struct {
	Nodes  int
	Shards int
	// Registry defaults to Registry().
	Registry *duro.Registry
	// Limits default to duro.DefaultMaxKeyBytes / DefaultMaxValueBytes.
	Limits shard.Limits
	// Timing defaults to the package's Timing.
	Timing     *shard.RaftTiming
	SessionTTL time.Duration
	// Logger defaults to discarding, or to stderr at debug level when the
	// environment variable DURO_TEST_LOG is set.
	Logger *slog.Logger
	// IdleTimeout and MaxActive configure eviction (see shard.HostConfig).
	IdleTimeout time.Duration
	MaxActive   int
	// AlarmAttempts and AlarmBackoff configure alarm retries (see
	// shard.Settings).
	AlarmAttempts int
	AlarmBackoff  time.Duration
	AlarmTimeout  time.Duration
	// BalanceEvery turns leadership balancing on (see shard.Settings); the
	// default, 0, leaves it off so that tests keep the leaders they pick.
	BalanceEvery time.Duration
	// Reachable is the balancing reachability probe (see shard.Settings).
	Reachable func(ctx context.Context, addr string) bool
	// LogStore is the Raft log's storage (see shard.Settings); the default
	// is the environment variable DURO_TEST_LOG_STORE, then the shard's
	// default ("auto").
	LogStore string
	// Caller makes every node's calls between objects (see shard.Settings);
	// nil: each node calls only the shards it leads.
	Caller func(ctx context.Context, ns string, id duro.ID, method string, arg []byte) ([]byte, error)
}

func (c *Cluster) balanceEvery() time.Duration {
	if c.opts.BalanceEvery == 0 {
		return -1
	}
	return c.opts.BalanceEvery
}

// Cluster is a set of in-process nodes. Its methods are safe for concurrent
// use, except the waiting helpers (see the package doc).
type Cluster struct {
	t    testing.TB
	opts Options
	dirs []string

	mu       sync.Mutex
	hosts    []*shard.Host            // nil: node closed
	trans    [][]*raft.InmemTransport // [node][shard]
	isolated map[int]bool
}

// New starts a cluster of n nodes with shards shards each and closes it in
// t.Cleanup.
func New(t testing.TB, n, shards int) *Cluster {
	return NewWithOptions(t, Options{Nodes: n, Shards: shards})
}

// NewWithOptions starts a cluster configured by o and closes it in t.Cleanup.
func NewWithOptions(t testing.TB, o Options) *Cluster {
	t.Helper()
	if o.Nodes <= 0 || o.Shards <= 0 {
		t.Fatalf("shardtest: need at least one node and one shard, got %d and %d", o.Nodes, o.Shards)
	}
	if o.Registry == nil {
		o.Registry = Registry()
	}
	if o.LogStore == "" {
		o.LogStore = os.Getenv("DURO_TEST_LOG_STORE")
	}
	if o.Limits == (shard.Limits{}) {
		o.Limits = shard.Limits{MaxKeyBytes: duro.DefaultMaxKeyBytes, MaxValueBytes: duro.DefaultMaxValueBytes}
	}
	if o.Timing == nil {
		tm := Timing
		o.Timing = &tm
	}
	if o.Logger == nil {
		if os.Getenv("DURO_TEST_LOG") != "" {
			o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		} else {
			o.Logger = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
		}
	}
	c := &Cluster{t: t, opts: o, hosts: make([]*shard.Host, o.Nodes),
		trans: make([][]*raft.InmemTransport, o.Nodes), isolated: map[int]bool{}}
	for i := 0; i < o.Nodes; i++ {
		c.dirs = append(c.dirs, t.TempDir())
	}
	t.Cleanup(c.closeAll)
	c.mu.Lock()
	for i := 0; i < o.Nodes; i++ {
		c.newTransportsLocked(i)
	}
	c.mu.Unlock()
	for i := 0; i < o.Nodes; i++ {
		h, err := c.openHost(i)
		if err != nil {
			t.Fatalf("shardtest: start node %d: %v", i, err)
		}
		c.mu.Lock()
		c.hosts[i] = h
		c.mu.Unlock()
	}
	return c
}

// Addr returns the Raft address (and server ID) of node i.
func Addr(i int) string { return fmt.Sprintf("node-%d", i) }

// Nodes returns the number of nodes.
func (c *Cluster) Nodes() int { return c.opts.Nodes }

// Shards returns the number of shards.
func (c *Cluster) Shards() int { return c.opts.Shards }

// Dir returns node i's data directory.
func (c *Cluster) Dir(i int) string { return c.dirs[i] }

// Peers returns the initial Raft configuration.
func (c *Cluster) Peers() []raft.Server {
	out := make([]raft.Server, c.opts.Nodes)
	for i := range out {
		out[i] = raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(Addr(i)), Address: raft.ServerAddress(Addr(i))}
	}
	return out
}

// newTransportsLocked gives node i fresh transports for every shard and
// connects them to the other nodes' (unless either side is isolated).
func (c *Cluster) newTransportsLocked(i int) {
	c.trans[i] = make([]*raft.InmemTransport, c.opts.Shards)
	for s := range c.trans[i] {
		_, c.trans[i][s] = raft.NewInmemTransport(raft.ServerAddress(Addr(i)))
	}
	for j := range c.trans {
		if j != i && c.trans[j] != nil {
			c.connectLocked(i, j)
		}
	}
}

func (c *Cluster) connectLocked(i, j int) {
	if c.isolated[i] || c.isolated[j] {
		return
	}
	for s := 0; s < c.opts.Shards; s++ {
		c.trans[i][s].Connect(raft.ServerAddress(Addr(j)), c.trans[j][s])
		c.trans[j][s].Connect(raft.ServerAddress(Addr(i)), c.trans[i][s])
	}
}

func (c *Cluster) openHost(i int) (*shard.Host, error) {
	return shard.NewHost(shard.HostConfig{
		Settings: shard.Settings{
			NodeID:        Addr(i),
			Peers:         c.Peers(),
			Timing:        *c.opts.Timing,
			Registry:      c.opts.Registry,
			Limits:        c.opts.Limits,
			SessionTTL:    c.opts.SessionTTL,
			IdleTimeout:   c.opts.IdleTimeout,
			BalanceEvery:  c.balanceEvery(),
			Reachable:     c.opts.Reachable,
			Caller:        c.opts.Caller,
			LogStore:      c.opts.LogStore,
			Logger:        c.opts.Logger.With("node", Addr(i)),
			AlarmAttempts: c.opts.AlarmAttempts, AlarmBackoff: c.opts.AlarmBackoff, AlarmTimeout: c.opts.AlarmTimeout,
		},
		DataDir:   filepath.Join(c.dirs[i], "data"),
		Shards:    c.opts.Shards,
		MaxActive: c.opts.MaxActive,
		Transport: func(id shard.ID) (raft.Transport, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.trans[i][id], nil
		},
	})
}

// Host returns node i's host; it fails the test if the node is closed.
func (c *Cluster) Host(i int) *shard.Host {
	c.mu.Lock()
	h := c.hosts[i]
	c.mu.Unlock()
	if h == nil {
		c.t.Fatalf("shardtest: node %d is closed", i)
	}
	return h
}

// Shard returns shard s of node i.
func (c *Cluster) Shard(i int, s int) *shard.Shard { return c.Host(i).Shards()[s] }

// Call runs req on node i.
func (c *Cluster) Call(ctx context.Context, node int, req *shard.Request) shard.Result {
	return c.Host(node).Call(ctx, req)
}

// Isolate cuts node i off from every other node, on every shard, in both
// directions.
func (c *Cluster) Isolate(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.isolated[i] = true
	for s := 0; s < c.opts.Shards; s++ {
		c.trans[i][s].DisconnectAll()
		for j := range c.trans {
			if j != i {
				c.trans[j][s].Disconnect(raft.ServerAddress(Addr(i)))
			}
		}
	}
}

// Heal reconnects every pair of nodes.
func (c *Cluster) Heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.isolated = map[int]bool{}
	for i := range c.trans {
		for j := i + 1; j < len(c.trans); j++ {
			c.connectLocked(i, j)
		}
	}
}

// Close shuts node i down (handing off its leaderships, bounded by a short
// timeout).
func (c *Cluster) Close(i int) error {
	c.mu.Lock()
	h := c.hosts[i]
	c.hosts[i] = nil
	c.mu.Unlock()
	if h == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return h.Close(ctx)
}

// Restart closes node i (if open) and opens it again on the same data
// directory with fresh transports.
func (c *Cluster) Restart(i int) { c.t.Helper(); c.RestartAfter(i, nil) }

// RestartAfter closes node i, calls between (if not nil) with the node's data
// directory, and opens the node again: between can damage or rewrite files
// as a crash would.
func (c *Cluster) RestartAfter(i int, between func(dir string)) {
	c.t.Helper()
	if err := c.Close(i); err != nil {
		c.t.Fatalf("shardtest: close node %d: %v", i, err)
	}
	if between != nil {
		between(filepath.Join(c.dirs[i], "data"))
	}
	c.mu.Lock()
	c.newTransportsLocked(i)
	c.mu.Unlock()
	h, err := c.openHost(i)
	if err != nil {
		c.t.Fatalf("shardtest: reopen node %d: %v", i, err)
	}
	c.mu.Lock()
	c.hosts[i] = h
	c.mu.Unlock()
}

func (c *Cluster) closeAll() {
	var wg sync.WaitGroup
	for i := range c.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Close(i); err != nil {
				c.t.Errorf("shardtest: close node %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
}

// ObjectIn returns an ID of namespace ns, derived from name, that shard s
// owns.
func (c *Cluster) ObjectIn(ns string, s int, name string) duro.ID {
	for k := 0; ; k++ {
		id := duro.IDFromName(ns, fmt.Sprintf("%s#%d", name, k))
		if duro.ShardOf(id, c.opts.Shards) == s {
			return id
		}
	}
}

// LeaderOf returns the index of the node leading shard s whose host is
// active: a read call on it succeeds. It polls for up to 15 seconds.
func (c *Cluster) LeaderOf(s int) int {
	c.t.Helper()
	return c.LeaderOfExcept(s, -1)
}

// LeaderOfExcept is LeaderOf ignoring node except.
func (c *Cluster) LeaderOfExcept(s int, except int) int {
	c.t.Helper()
	probe := c.ObjectIn(CounterNamespace, s, "shardtest-probe")
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for i := 0; i < c.opts.Nodes; i++ {
			c.mu.Lock()
			h := c.hosts[i]
			c.mu.Unlock()
			if i == except || h == nil || !h.Shards()[s].IsLeader() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			r := h.Call(ctx, Get(probe))
			cancel()
			if r.Err == nil {
				return i
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("shardtest: no active leader of shard %d (except node %d) within 15s", s, except)
	return -1
}

// Converged reports whether every open replica of shard s has the same
// applied index and state hash.
func (c *Cluster) Converged(s int) bool {
	var first *[32]byte
	var firstApplied uint64
	for i := 0; i < c.opts.Nodes; i++ {
		c.mu.Lock()
		h := c.hosts[i]
		c.mu.Unlock()
		if h == nil {
			continue
		}
		applied, sum, err := h.Shards()[s].Machine().Hash()
		if err != nil {
			return false
		}
		if first == nil {
			first, firstApplied = &sum, applied
			continue
		}
		if sum != *first || applied != firstApplied {
			return false
		}
	}
	return true
}

// WaitConverged waits until every shard's replicas converge.
func (c *Cluster) WaitConverged(t testing.TB, timeout time.Duration) {
	t.Helper()
	Eventually(t, func() bool {
		for s := 0; s < c.opts.Shards; s++ {
			if !c.Converged(s) {
				return false
			}
		}
		return true
	}, timeout, "replicas did not converge")
}

// Eventually polls cond until it holds, failing t after timeout.
func (c *Cluster) Eventually(t testing.TB, cond func() bool, timeout time.Duration) {
	t.Helper()
	Eventually(t, cond, timeout, "condition not met")
}

// Eventually polls cond every 10ms until it holds, failing t with msg after
// timeout.
func Eventually(t testing.TB, cond func() bool, timeout time.Duration, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
