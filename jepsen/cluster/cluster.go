package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/duro-io/duro/rpc/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Port is every node's gRPC (client, admin and Raft) port; HTTPPort its
// HTTP port (health, metrics and, in test mode, the clock endpoint). Each
// node has its own address, so the ports are the same everywhere.
const (
	Port     = 7071
	HTTPPort = 7081
)

// Config describes a cluster.
type Config struct {
	Nodes  int    // 3 or 5
	Shards int    // default 8
	Binary string // the durod binary
	Dir    string // the run directory; node i keeps data and log in Dir/n<i>
	// Args are extra durod flags (Raft timings).
	Args []string
	// Env is extra environment for durod, e.g. DURO_TEST_MODE=1.
	Env []string
	// Proxy routes Raft links through a delaying user-space proxy (see
	// proxy.go); Cluster.Proxy sets the delay.
	Proxy bool
}

// Node is one durod process in its own network namespace.
type Node struct {
	Index int // 1-based
	ID    string
	NS    string
	IP    string
	Addr  string // gRPC address
	HTTP  string
	Dir   string

	mu     sync.Mutex // guards cmd, done, paused
	cmd    *exec.Cmd
	done   chan struct{} // closed when cmd exits
	paused bool
}

// Cluster is a set of nodes on one bridge.
type Cluster struct {
	cfg   Config
	Nodes []*Node
	peers string
	lock  *os.File // flock held while the cluster exists
	// Proxy delays Raft links when Config.Proxy is set; nil otherwise.
	Proxy *Proxy
}

// LockPath serialises clusters on one machine: they share the bridge and
// namespace names.
const LockPath = "/tmp/duro-jepsen.lock"

// New cleans up what an earlier run left, then makes the bridge and one
// namespace per node. It starts no process; call StartAll.
func New(cfg Config) (*Cluster, error) {
	if cfg.Nodes < 1 || cfg.Nodes > 200 {
		return nil, fmt.Errorf("cluster: nodes must be between 1 and 200, got %d", cfg.Nodes)
	}
	if cfg.Shards == 0 {
		cfg.Shards = 8
	}
	if err := EnsureTools(); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(LockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		lock.Close()
		return nil, fmt.Errorf("cluster: lock %s: %w", LockPath, err)
	}
	CleanStale()
	c := &Cluster{cfg: cfg, lock: lock}
	if err := setupBridge(); err != nil {
		c.Close()
		return nil, err
	}
	var peers []string
	for i := 1; i <= cfg.Nodes; i++ {
		if err := setupNamespace(i); err != nil {
			c.Close()
			return nil, err
		}
		n := &Node{Index: i, ID: fmt.Sprintf("n%d", i), NS: nsName(i), IP: nodeIP(i),
			Dir: filepath.Join(cfg.Dir, fmt.Sprintf("n%d", i))}
		n.Addr = fmt.Sprintf("%s:%d", n.IP, Port)
		n.HTTP = fmt.Sprintf("%s:%d", n.IP, HTTPPort)
		if err := os.MkdirAll(n.Dir, 0o755); err != nil {
			c.Close()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
		peers = append(peers, n.ID+"="+n.Addr)
	}
	c.peers = strings.Join(peers, ",")
	if cfg.Proxy {
		p, err := startProxy(c.Nodes)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Proxy = p
		for _, n := range c.Nodes {
			if err := run(natRules(n.Index, c.Nodes), "ip", "netns", "exec", n.NS, "nft", "-f", "-"); err != nil {
				c.Close()
				return nil, err
			}
		}
	}
	return c, nil
}

// Endpoints returns every node's gRPC address.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

// Shards returns the shard count.
func (c *Cluster) Shards() int { return c.cfg.Shards }

// LogPath is node n's log file (stdout and stderr of every start).
func (n *Node) LogPath() string { return filepath.Join(n.Dir, "node.log") }

// Start starts node n's process; it must not be running.
func (c *Cluster) Start(n *Node) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("cluster: %s already running", n.ID)
	}
	logf, err := os.OpenFile(n.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== jepsen: start %s at %s\n", n.ID, time.Now().UTC().Format(time.RFC3339Nano))
	args := []string{"netns", "exec", n.NS, c.cfg.Binary,
		"--node-id", n.ID, "--data-dir", filepath.Join(n.Dir, "data"),
		"--listen", n.Addr, "--http", n.HTTP, "--peers", c.peers,
		"--shards", fmt.Sprint(c.cfg.Shards), "--log-format", "json"}
	args = append(args, c.cfg.Args...)
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), c.cfg.Env...)
	// Own process group: a Ctrl-C to the harness does not reach the nodes
	// (the harness stops them itself); they die with the harness.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	n.cmd, n.done, n.paused = cmd, done, false
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(logf, "=== jepsen: %s exited: %v\n", n.ID, err)
		logf.Close()
		n.mu.Lock()
		if n.cmd == cmd {
			n.cmd = nil
		}
		n.mu.Unlock()
		close(done)
	}()
	return nil
}

// StartAll starts every node that is not running.
func (c *Cluster) StartAll() error {
	for _, n := range c.Nodes {
		if n.Running() {
			continue
		}
		if err := c.Start(n); err != nil {
			return err
		}
	}
	return nil
}

// Running reports whether n's process is alive (maybe paused).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// Paused reports whether n is stopped with SIGSTOP.
func (n *Node) Paused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused
}

// signal sends sig and returns the exit channel, or nil if not running.
func (n *Node) signal(sig syscall.Signal) chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return nil
	}
	// `ip netns exec` execs the binary, so the PID is durod's.
	_ = n.cmd.Process.Signal(sig)
	switch sig {
	case syscall.SIGSTOP:
		n.paused = true
	case syscall.SIGCONT:
		n.paused = false
	}
	return n.done
}

// Kill SIGKILLs n and waits for it to exit.
func (c *Cluster) Kill(n *Node) {
	if done := n.signal(syscall.SIGKILL); done != nil {
		<-done
	}
}

// Stop asks n to shut down cleanly (SIGTERM), then kills it after timeout.
func (c *Cluster) Stop(n *Node, timeout time.Duration) {
	n.signal(syscall.SIGCONT)
	done := n.signal(syscall.SIGTERM)
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(timeout):
		c.Kill(n)
	}
}

// Pause SIGSTOPs n; Resume SIGCONTs it.
func (c *Cluster) Pause(n *Node)  { n.signal(syscall.SIGSTOP) }
func (c *Cluster) Resume(n *Node) { n.signal(syscall.SIGCONT) }

// Close stops every node and removes the namespaces and the bridge. It may
// be called more than once.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); c.Stop(n, 10*time.Second) }()
	}
	wg.Wait()
	if c.Proxy != nil {
		c.Proxy.Close()
		c.Proxy = nil
	}
	if c.lock != nil {
		CleanStale()
		c.lock.Close() // releases the flock
		c.lock = nil
	}
}

// Heal removes every network rule from every node.
func (c *Cluster) Heal() error {
	var errs []error
	for _, n := range c.Nodes {
		errs = append(errs, SetRules(n.Index, nil, nil))
	}
	return errors.Join(errs...)
}

// Status asks node n for its view of every shard.
func (c *Cluster) Status(ctx context.Context, n *Node, hashes bool) (*pb.StatusResponse, error) {
	cc, err := grpc.NewClient(n.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	return pb.NewAdminClient(cc).Status(ctx, &pb.StatusRequest{Hashes: hashes})
}

// Leader returns the node that leads shard, as the majority of answering
// nodes report it, or nil.
func (c *Cluster) Leader(ctx context.Context, shard int) *Node {
	for _, n := range c.Nodes {
		if !n.Running() || n.Paused() {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := c.Status(sctx, n, false)
		cancel()
		if err != nil {
			continue
		}
		for _, s := range st.Shard {
			if int(s.Id) == shard && s.State == "Leader" {
				return n
			}
		}
	}
	return nil
}

// WaitReady waits until every running node answers Status and every shard
// has a leader that its running peers agree on.
func (c *Cluster) WaitReady(ctx context.Context) error {
	var last error
	for {
		last = c.ready(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ready: %w", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) ready(ctx context.Context) error {
	leaders := map[int32]string{}
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.Status(sctx, n, false)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", n.ID, err)
		}
		for _, s := range st.Shard {
			if s.LeaderId == "" {
				return fmt.Errorf("%s: shard %d has no leader", n.ID, s.Id)
			}
			if l, ok := leaders[s.Id]; ok && l != s.LeaderId {
				return fmt.Errorf("shard %d: leaders %s and %s", s.Id, l, s.LeaderId)
			}
			leaders[s.Id] = s.LeaderId
		}
	}
	return nil
}
