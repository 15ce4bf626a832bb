// Package clienttest runs real durod processes for the SDK's integration
// tests: it builds durod and duroctl once per test binary, starts clusters on
// free loopback ports with their data and logs in the test's temp dir, and
// kills (SIGKILL) and restarts nodes.
//
//	func TestMain(m *testing.M) { os.Exit(clienttest.Main(m)) }
//
//	c := clienttest.StartCluster(t, 3)
//	cl, _ := client.Dial(ctx, c.Endpoints())
//	c.Nodes[0].Kill()
//
// Set CLIENTTEST_KEEP=1 to keep the nodes' data and logs after the tests.
package clienttest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/duro-io/duro/rpc/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Main runs the tests and removes the binaries built for them. Use it from
// TestMain: os.Exit(clienttest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	return code
}

// Binaries builds durod and duroctl (once per test binary) and returns their
// paths. It fails t if the build fails. The files are not named durod and
// duroctl; see nodeBin.
func Binaries(t testing.TB) (durod, duroctl string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "clienttest-bin-")
		if buildErr != nil {
			return
		}
		for _, b := range []struct{ out, pkg string }{
			{nodeBin, "github.com/duro-io/duro/cmd/durod"},
			{ctlBin, "github.com/duro-io/duro/cmd/duroctl"},
		} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, b.out), b.pkg).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("clienttest: %v", buildErr)
	}
	return filepath.Join(buildDir, nodeBin), filepath.Join(buildDir, ctlBin)
}

// The binaries' names hold neither "durod" nor "duroctl", so that a
// `pkill durod` run elsewhere on the machine does not hit these tests'
// nodes (Node reports such kills as unexpected exits).
const (
	nodeBin = "clienttest-node"
	ctlBin  = "clienttest-ctl"
)

// Options configure a cluster.
type Options struct {
	// Shards is the shard count; default 8.
	Shards int
	// Env is added to every node's environment, e.g.
	// "DURO_FAILPOINTS=drop-reply-after-commit=0.3".
	Env []string
	// Args are extra durod flags.
	Args []string
}

// Cluster is a set of durod processes forming one cluster.
type Cluster struct {
	t      testing.TB
	Shards int
	Nodes  []*Node

	deadOnce sync.Once
	dead     chan struct{} // closed on the first unexpected exit
}

// Node is one durod process (running or not) with fixed ports and data dir.
type Node struct {
	t       testing.TB
	c       *Cluster
	ID      string
	Addr    string // gRPC (clients, admin, Raft)
	HTTP    string
	DataDir string
	LogPath string
	args    []string
	env     []string
	bin     string

	mu         sync.Mutex // guards cmd, done, log, expectExit, unexpected
	cmd        *exec.Cmd
	done       chan struct{} // closed when the running process exited
	log        *os.File
	expectExit bool  // the harness signalled the running process
	unexpected error // how a process exited without the harness asking

	cc *grpc.ClientConn // admin connection; reconnects across restarts
}

// FreePorts returns n distinct free loopback ports as "127.0.0.1:P".
func FreePorts(t testing.TB, n int) []string {
	t.Helper()
	var ls []net.Listener
	var out []string
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("clienttest: free port: %v", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// StartCluster starts an n-node cluster with fast Raft timings and waits
// until every shard has a leader. Every node is SIGKILLed when the test
// ends; if the test failed, the tail of each node's log is printed.
func StartCluster(t testing.TB, n int, opts ...Options) *Cluster {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.Shards == 0 {
		o.Shards = 8
	}
	bin, _ := Binaries(t)
	dir := t.TempDir()
	if os.Getenv("CLIENTTEST_KEEP") != "" {
		// Keep data and logs for post-mortems.
		d, err := os.MkdirTemp("", "clienttest-"+strings.ReplaceAll(t.Name(), "/", "_")+"-")
		if err != nil {
			t.Fatalf("clienttest: %v", err)
		}
		dir = d
		t.Logf("clienttest: keeping node data and logs in %s", dir)
	}
	ports := FreePorts(t, 2*n)
	c := &Cluster{t: t, Shards: o.Shards, dead: make(chan struct{})}
	var peers []string
	for i := 0; i < n; i++ {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, ports[2*i]))
	}
	for i := 0; i < n; i++ {
		nd := &Node{t: t, c: c, ID: fmt.Sprintf("n%d", i+1), Addr: ports[2*i], HTTP: ports[2*i+1], bin: bin,
			DataDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), LogPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i+1)),
			env: o.Env}
		nd.args = append([]string{"--node-id", nd.ID, "--data-dir", nd.DataDir, "--listen", nd.Addr, "--http", nd.HTTP,
			"--peers", strings.Join(peers, ","), "--shards", fmt.Sprint(o.Shards),
			"--raft-heartbeat-timeout", "300ms", "--raft-election-timeout", "300ms", "--raft-leader-lease-timeout", "150ms"},
			o.Args...)
		cc, err := grpc.NewClient(nd.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatalf("clienttest: %v", err)
		}
		nd.cc = cc
		c.Nodes = append(c.Nodes, nd)
	}
	t.Cleanup(func() {
		c.KillAll()
		for _, nd := range c.Nodes {
			if err := nd.Unexpected(); err != nil {
				t.Errorf("clienttest: %v", err)
			}
		}
		for _, nd := range c.Nodes {
			nd.cc.Close()
		}
		if t.Failed() {
			for _, nd := range c.Nodes {
				t.Logf("---- tail of %s (%s) ----\n%s", nd.ID, nd.LogPath, tail(nd.LogPath, 40))
			}
		}
	})
	for _, nd := range c.Nodes {
		nd.Start()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.WaitReady(ctx)
	return c
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Dead is closed when a node exits without the harness asking (a crash or a
// kill from outside the test); Err then says which.
func (c *Cluster) Dead() <-chan struct{} { return c.dead }

// Err returns the first unexpected exit of a node, or nil.
func (c *Cluster) Err() error {
	for _, nd := range c.Nodes {
		if err := nd.Unexpected(); err != nil {
			return err
		}
	}
	return nil
}

// Context returns a context that is canceled when parent is, or when a node
// exits unexpectedly, so that calls do not wait out their timeouts against a
// cluster that is gone.
func (c *Cluster) Context(parent context.Context) context.Context {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		select {
		case <-c.dead:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx
}

// Endpoints returns the gRPC addresses of every node.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, nd := range c.Nodes {
		out = append(out, nd.Addr)
	}
	return out
}

// Node returns the node with gRPC address addr, or nil.
func (c *Cluster) Node(addr string) *Node {
	for _, nd := range c.Nodes {
		if nd.Addr == addr {
			return nd
		}
	}
	return nil
}

// Start starts the node's process on its data dir (again, after Kill). Its
// output is appended to LogPath.
func (n *Node) Start() {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		n.t.Fatalf("clienttest: %s already running", n.ID)
	}
	f, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		n.t.Fatalf("clienttest: %v", err)
	}
	fmt.Fprintf(f, "==== clienttest: starting %s at %s ====\n", n.ID, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(n.bin, n.args...)
	cmd.Env = append(os.Environ(), n.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		n.t.Fatalf("clienttest: start %s: %v", n.ID, err)
	}
	done := make(chan struct{})
	n.cmd, n.done, n.log, n.expectExit = cmd, done, f, false
	go func() {
		err := cmd.Wait()
		n.mu.Lock()
		if !n.expectExit && n.unexpected == nil {
			n.unexpected = fmt.Errorf("%s (pid %d) exited without being asked at %s: %v",
				n.ID, cmd.Process.Pid, time.Now().Format(time.RFC3339Nano), err)
			fmt.Fprintf(f, "==== clienttest: UNEXPECTED: %v ====\n", n.unexpected)
			n.c.deadOnce.Do(func() { close(n.c.dead) })
		} else {
			fmt.Fprintf(f, "==== clienttest: %s exited: %v ====\n", n.ID, err)
		}
		n.mu.Unlock()
		close(done)
	}()
}

// Unexpected returns an error if one of the node's processes exited without
// the harness asking (a crash, or a kill from outside the test).
func (n *Node) Unexpected() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.unexpected
}

// Running reports whether the node's process is running (as far as the
// harness knows: it was started and not killed, and has not exited).
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

// signal sends sig to the node (if running) without waiting.
func (n *Node) signal(sig syscall.Signal) chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return nil
	}
	n.expectExit = true
	n.cmd.Process.Signal(sig)
	return n.done
}

// reap waits for the process to exit and forgets it.
func (n *Node) reap(done chan struct{}) {
	if done == nil {
		return
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		n.t.Errorf("clienttest: %s did not exit", n.ID)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done == done {
		n.log.Close()
		n.cmd, n.done, n.log = nil, nil, nil
	}
}

// Kill SIGKILLs the node and waits until it exited.
func (n *Node) Kill() { n.reap(n.signal(syscall.SIGKILL)) }

// KillAll SIGKILLs every node at once, then waits for all of them.
func (c *Cluster) KillAll() {
	dones := make([]chan struct{}, len(c.Nodes))
	for i, nd := range c.Nodes {
		dones[i] = nd.signal(syscall.SIGKILL)
	}
	for i, nd := range c.Nodes {
		nd.reap(dones[i])
	}
}

// Status asks the node for its Admin.Status.
func (n *Node) Status(ctx context.Context, hashes bool) (*pb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return pb.NewAdminClient(n.cc).Status(ctx, &pb.StatusRequest{Hashes: hashes})
}

// Running nodes.
func (c *Cluster) running() []*Node {
	var out []*Node
	for _, nd := range c.Nodes {
		if nd.Running() {
			out = append(out, nd)
		}
	}
	return out
}

// Ready reports nil when every running node answers Status and, for every
// shard, exactly one running node is its Leader and every running node names
// that node as the leader.
func (c *Cluster) Ready(ctx context.Context) error {
	nodes := c.running()
	if len(nodes) == 0 {
		return fmt.Errorf("no node running")
	}
	leaders := make([]string, c.Shards)
	named := make([]map[string]bool, c.Shards)
	for i := range named {
		named[i] = map[string]bool{}
	}
	for _, nd := range nodes {
		st, err := nd.Status(ctx, false)
		if err != nil {
			return fmt.Errorf("%s: %v", nd.ID, err)
		}
		if int(st.Shards) != c.Shards || len(st.Shard) != c.Shards {
			return fmt.Errorf("%s: reports %d shards, want %d", nd.ID, st.Shards, c.Shards)
		}
		for _, s := range st.Shard {
			if s.State == "Leader" {
				if leaders[s.Id] != "" {
					return fmt.Errorf("shard %d: two leaders %s and %s", s.Id, leaders[s.Id], nd.Addr)
				}
				leaders[s.Id] = nd.Addr
			}
			named[s.Id][s.LeaderAddr] = true
		}
	}
	for i := range leaders {
		if leaders[i] == "" {
			return fmt.Errorf("shard %d: no leader", i)
		}
		if len(named[i]) != 1 || !named[i][leaders[i]] {
			return fmt.Errorf("shard %d: leader %s, but nodes name %v", i, leaders[i], named[i])
		}
	}
	return nil
}

// WaitReady polls Ready until it holds; it fails the test when ctx ends.
func (c *Cluster) WaitReady(ctx context.Context) {
	c.t.Helper()
	c.poll(ctx, "cluster ready", c.Ready)
}

// Leaders returns, for each running node's address, how many shards it
// reports leading.
func (c *Cluster) Leaders(ctx context.Context) map[string]int {
	out := map[string]int{}
	for _, nd := range c.running() {
		st, err := nd.Status(ctx, false)
		if err != nil {
			continue
		}
		for _, s := range st.Shard {
			if s.State == "Leader" {
				out[nd.Addr]++
			}
		}
	}
	return out
}

// Converged reports nil when every node answers Status with hashes and every
// shard has the same applied index and state hash on all of them.
func (c *Cluster) Converged(ctx context.Context) error {
	var sts []*pb.StatusResponse
	for _, nd := range c.Nodes {
		st, err := nd.Status(ctx, true)
		if err != nil {
			return fmt.Errorf("%s: %v", nd.ID, err)
		}
		if len(st.Shard) != c.Shards {
			return fmt.Errorf("%s: %d shards", nd.ID, len(st.Shard))
		}
		for _, s := range st.Shard {
			if len(s.StateHash) == 0 {
				return fmt.Errorf("%s: shard %d: no state hash", nd.ID, s.Id)
			}
		}
		sts = append(sts, st)
	}
	var errs []string
	for i := 0; i < c.Shards; i++ {
		same := true
		for _, st := range sts[1:] {
			s, f := st.Shard[i], sts[0].Shard[i]
			if s.Applied != f.Applied || !bytes.Equal(s.StateHash, f.StateHash) {
				same = false
			}
		}
		if !same {
			var views []string
			for _, st := range sts {
				views = append(views, fmt.Sprintf("%s applied %d hash %x", st.NodeId, st.Shard[i].Applied, st.Shard[i].StateHash[:8]))
			}
			errs = append(errs, fmt.Sprintf("shard %d: %s", i, strings.Join(views, ", ")))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// WaitConverged polls Converged until it holds; it fails the test when ctx
// ends.
func (c *Cluster) WaitConverged(ctx context.Context) {
	c.t.Helper()
	c.poll(ctx, "replicas converged", c.Converged)
}

func (c *Cluster) poll(ctx context.Context, what string, cond func(context.Context) error) {
	c.t.Helper()
	for {
		if err := c.Err(); err != nil {
			c.t.Fatalf("clienttest: waiting for %s: %v", what, err)
		}
		err := cond(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("clienttest: waiting for %s: %v (last: %v)", what, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
