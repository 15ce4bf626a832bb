// Package local runs a duro cluster of durod processes on loopback for the
// benchmarks: free ports, a data directory per node, SIGKILL and restart of
// single nodes, and health checks through Admin.Status.
package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/duro-io/duro/rpc/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Options configure a cluster.
type Options struct {
	// Durod is the durod binary; FindDurod's result when empty.
	Durod string
	// Dir holds the nodes' data and logs; a temporary directory, removed by
	// Close, when empty.
	Dir string
	// Nodes is the node count; default 3.
	Nodes int
	// HTTP gives every node an HTTP listener (metrics, pprof).
	HTTP bool
	// Args are extra durod flags for every node.
	Args []string
	// Log receives one line saying where the cluster runs; nil for none.
	Log io.Writer
}

// Cluster is a set of durod processes forming one cluster.
type Cluster struct {
	Dir   string
	Nodes []*Node
	temp  bool
}

// Node is one durod process (running or not) with fixed ports and data dir.
type Node struct {
	ID      string
	Addr    string // gRPC: clients, admin and Raft
	HTTP    string // "" unless Options.HTTP
	DataDir string
	LogPath string
	bin     string
	args    []string
	cc      *grpc.ClientConn

	mu   sync.Mutex // guards cmd, done
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd exited
}

// FindDurod returns explicit if set, else the durod next to the running
// executable, else durod on PATH.
func FindDurod(explicit string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("durod binary: %w", err)
		}
		return explicit, nil
	}
	self, err := os.Executable()
	if err == nil {
		p := filepath.Join(filepath.Dir(self), "durod")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("durod"); err == nil {
		return p, nil
	}
	return "", errors.New("durod not found next to duroctl or on PATH; build it (make build), pass --durod, or pass --endpoints")
}

// FreeAddrs returns n distinct free loopback addresses.
func FreeAddrs(n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// Start starts the cluster and returns once every process runs; use
// WaitHealthy to wait for leaders.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	bin, err := FindDurod(o.Durod)
	if err != nil {
		return nil, err
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	c := &Cluster{Dir: o.Dir}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "duro-bench-*"); err != nil {
			return nil, err
		}
		c.temp = true
	} else if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	addrs, err := FreeAddrs(2 * o.Nodes)
	if err != nil {
		c.Close()
		return nil, err
	}
	var peers []string
	for i := range o.Nodes {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, addrs[2*i]))
	}
	for i := range o.Nodes {
		n := &Node{ID: fmt.Sprintf("n%d", i+1), Addr: addrs[2*i], bin: bin,
			DataDir: filepath.Join(c.Dir, fmt.Sprintf("n%d", i+1)), LogPath: filepath.Join(c.Dir, fmt.Sprintf("n%d.log", i+1))}
		if o.HTTP {
			n.HTTP = addrs[2*i+1]
		}
		n.args = append([]string{"--node-id", n.ID, "--data-dir", n.DataDir, "--listen", n.Addr, "--http", n.HTTP,
			"--peers", strings.Join(peers, ","), "--log-level", "warn"}, o.Args...)
		if n.cc, err = grpc.NewClient(n.Addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			c.Close()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := n.Start(); err != nil {
			c.Close()
			return nil, err
		}
	}
	if o.Log != nil {
		fmt.Fprintf(o.Log, "bench: local %d-node duro cluster on %s (data in %s)\n", o.Nodes, strings.Join(c.Endpoints(), ","), c.Dir)
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

// Close stops every node (SIGTERM, SIGKILL after 5 s), and removes the
// directory if Start created it.
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Stop()
			n.cc.Close()
		}()
	}
	wg.Wait()
	if c.temp {
		os.RemoveAll(c.Dir)
	}
}

// Start starts the node's process on its data dir (again, after Kill);
// output is appended to LogPath.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("%s already running", n.ID)
	}
	f, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(n.bin, n.args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", n.ID, err)
	}
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	go func() {
		cmd.Wait()
		f.Close()
		close(done)
	}()
	return nil
}

// PID returns the process ID, or 0 when the node is not running.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Running reports whether the node's process runs.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

func (n *Node) signalAndWait(sig syscall.Signal, grace time.Duration) {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
	}
	n.mu.Lock()
	if n.cmd == cmd {
		n.cmd, n.done = nil, nil
	}
	n.mu.Unlock()
}

// Kill SIGKILLs the node and waits until it exited.
func (n *Node) Kill() { n.signalAndWait(syscall.SIGKILL, time.Minute) }

// Stop SIGTERMs the node (SIGKILL after 5 s) and waits until it exited.
func (n *Node) Stop() { n.signalAndWait(syscall.SIGTERM, 5*time.Second) }

// Status asks the node for its Admin.Status.
func (n *Node) Status(ctx context.Context) (*pb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return pb.NewAdminClient(n.cc).Status(ctx, &pb.StatusRequest{})
}

// RSS returns the node's resident set size (VmRSS) in bytes.
func (n *Node) RSS() (int64, error) {
	pid := n.PID()
	if pid == 0 {
		return 0, fmt.Errorf("%s not running", n.ID)
	}
	return VmRSS(pid)
}

// VmRSS reads the resident set size of process pid from /proc.
func VmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fields := strings.Fields(rest)
			if len(fields) != 2 || fields[1] != "kB" {
				return 0, fmt.Errorf("/proc/%d/status: odd VmRSS line %q", pid, sc.Text())
			}
			kb, err := strconv.ParseInt(fields[0], 10, 64)
			return kb << 10, err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// Leaders returns, for each running node, the shards it reports leading.
func (c *Cluster) Leaders(ctx context.Context) (map[*Node][]int, error) {
	out := map[*Node][]int{}
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		st, err := n.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.ID, err)
		}
		for _, s := range st.Shard {
			if s.State == "Leader" {
				out[n] = append(out[n], int(s.Id))
			}
		}
	}
	return out, nil
}

// status asks every running node for its Status, keyed by node ID.
func (c *Cluster) status(ctx context.Context) (map[string]*pb.StatusResponse, error) {
	views := map[string]*pb.StatusResponse{}
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		st, err := n.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n.ID, err)
		}
		views[n.ID] = st
	}
	if len(views) == 0 {
		return nil, errors.New("no node running")
	}
	return views, nil
}

// Healthy returns nil when every running node answers Status, every shard
// has exactly one running node that is its Leader, and every running node
// names that node's address as the shard's leader.
func (c *Cluster) Healthy(ctx context.Context) error {
	views, err := c.status(ctx)
	if err != nil {
		return err
	}
	return healthy(views)
}

func healthy(views map[string]*pb.StatusResponse) error {
	var shards int
	for _, v := range views {
		shards = int(v.Shards)
	}
	for s := range shards {
		leader := ""
		for _, v := range views {
			if s < len(v.Shard) && v.Shard[s].State == "Leader" {
				if leader != "" {
					return fmt.Errorf("shard %d: two leaders, %s and %s", s, leader, v.Addr)
				}
				leader = v.Addr
			}
		}
		if leader == "" {
			return fmt.Errorf("shard %d has no leader", s)
		}
		for _, v := range views {
			if s >= len(v.Shard) || v.Shard[s].LeaderAddr != leader {
				return fmt.Errorf("shard %d: %s does not know its leader %s yet", s, v.NodeId, leader)
			}
		}
	}
	return nil
}

// Balanced returns nil when the cluster is healthy and no running node
// leads more than its share of the shards (their number over the running
// nodes', rounded up): where the nodes' balancing leaves a cluster soon
// after it starts.
func (c *Cluster) Balanced(ctx context.Context) error {
	views, err := c.status(ctx)
	if err != nil {
		return err
	}
	if err := healthy(views); err != nil {
		return err
	}
	for id, v := range views {
		led := 0
		for _, sh := range v.Shard {
			if sh.State == "Leader" {
				led++
			}
		}
		if share := (int(v.Shards) + len(views) - 1) / len(views); led > share {
			return fmt.Errorf("%s leads %d of %d shards (its share: %d)", id, led, v.Shards, share)
		}
	}
	return nil
}

// WaitHealthy polls Healthy until it returns nil or ctx ends.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	return c.waitFor(ctx, "cluster not healthy", c.Healthy)
}

// WaitBalanced polls Balanced until it returns nil or ctx ends.
func (c *Cluster) WaitBalanced(ctx context.Context) error {
	return c.waitFor(ctx, "leadership not balanced", c.Balanced)
}

// waitFor polls check until it returns nil, a node exits, or ctx ends.
func (c *Cluster) waitFor(ctx context.Context, what string, check func(context.Context) error) error {
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		for _, n := range c.Nodes {
			n.mu.Lock()
			exited := n.cmd != nil && isClosed(n.done)
			n.mu.Unlock()
			if exited {
				return fmt.Errorf("%s exited; see %s", n.ID, n.LogPath)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last: %v)", what, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// DiskBytes returns the bytes allocated on disk under dir (like du).
func DiskBytes(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	return total, err
}
