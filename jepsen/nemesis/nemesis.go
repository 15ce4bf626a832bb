// Package nemesis injects faults into a jepsen/cluster: network partitions
// and loss by nft rules inside the node namespaces, kills and pauses by
// signals, clock offsets through durod's test clock endpoint.
//
// A Nemesis alternates Invoke (start a fault) and Heal (end it); Heal is safe
// to call at any time, and HealAll undoes every kind of fault at the end of a
// run.
package nemesis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/duro-io/duro/jepsen/cluster"
)

// Nemesis is one kind of fault.
type Nemesis interface {
	Name() string
	// Invoke starts a fault and describes it.
	Invoke(ctx context.Context) (string, error)
	// Heal ends the fault Invoke started (no-op if none).
	Heal(ctx context.Context) error
}

// Env is what nemeses act on. Net is shared by every network nemesis of a
// run so their rules combine.
type Env struct {
	C   *cluster.Cluster
	Rng *rand.Rand
	// Shard is the shard whose leader the leader-targeting nemeses pick;
	// negative means a random shard each time.
	Shard int
	// Used lists the shards the workload's objects live in; when Shard is
	// negative, leader-targeting nemeses pick among these, so that their
	// faults hit the workload (empty: any shard).
	Used  []int
	net   *Net
	rngMu sync.Mutex
}

// NewEnv returns an Env over c.
func NewEnv(c *cluster.Cluster, seed uint64, shard int) *Env {
	return &Env{C: c, Rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), Shard: shard, net: newNet(c)}
}

func (e *Env) intn(n int) int {
	e.rngMu.Lock()
	defer e.rngMu.Unlock()
	return e.Rng.IntN(n)
}

func (e *Env) shuffled() []*cluster.Node {
	e.rngMu.Lock()
	defer e.rngMu.Unlock()
	ns := slices.Clone(e.C.Nodes)
	e.Rng.Shuffle(len(ns), func(i, j int) { ns[i], ns[j] = ns[j], ns[i] })
	return ns
}

// targetShard returns the configured shard or a random one.
func (e *Env) targetShard() int {
	if e.Shard >= 0 {
		return e.Shard
	}
	if len(e.Used) > 0 {
		return e.Used[e.intn(len(e.Used))]
	}
	return e.intn(e.C.Shards())
}

// leader finds the leader of the target shard, waiting up to 5 s.
func (e *Env) leader(ctx context.Context) (*cluster.Node, int, error) {
	s := e.targetShard()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if n := e.C.Leader(ctx, s); n != nil {
			return n, s, nil
		}
		if time.Now().After(deadline) {
			return nil, s, fmt.Errorf("no leader of shard %d", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// HealAll removes every rule, resumes paused nodes, restarts dead ones and
// resets clocks.
func (e *Env) HealAll(ctx context.Context) error {
	e.net.reset()
	err := e.C.Heal()
	for _, n := range e.C.Nodes {
		e.C.Resume(n)
	}
	if err2 := e.C.StartAll(); err == nil {
		err = err2
	}
	for _, n := range e.C.Nodes {
		_ = setClock(ctx, n, 0)
	}
	if e.C.Proxy != nil {
		e.C.Proxy.SetDelay(0, 0)
	}
	return err
}

// Net is the combined network fault state: which peers each node drops,
// whether it drops client traffic, and a random loss percentage.
type Net struct {
	c         *cluster.Cluster
	mu        sync.Mutex           // guards the fields below and rule changes
	grudge    map[int]map[int]bool // node -> nodes whose traffic it drops
	clientCut map[int]bool         // node drops traffic to and from clients
	loss      int                  // percent of peer packets dropped
}

func newNet(c *cluster.Cluster) *Net {
	return &Net{c: c, grudge: map[int]map[int]bool{}, clientCut: map[int]bool{}}
}

func (n *Net) reset() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.grudge, n.clientCut, n.loss = map[int]map[int]bool{}, map[int]bool{}, 0
}

// applyLocked writes every node's rules.
func (n *Net) applyLocked() error {
	var errs []string
	for _, node := range n.c.Nodes {
		var in, out []string
		var drop []string
		for j := range n.grudge[node.Index] {
			drop = append(drop, n.c.Nodes[j-1].IP)
		}
		sort.Strings(drop)
		if len(drop) > 0 {
			set := "{ " + strings.Join(drop, ", ") + " }"
			in = append(in, "ip saddr "+set+" drop")
			out = append(out, "ip daddr "+set+" drop")
		}
		if n.clientCut[node.Index] {
			in = append(in, "ip saddr "+cluster.HostIP+" drop")
			out = append(out, "ip daddr "+cluster.HostIP+" drop")
		}
		if n.loss > 0 {
			var peers []string
			for _, p := range n.c.Nodes {
				if p != node {
					peers = append(peers, p.IP)
				}
			}
			in = append(in, fmt.Sprintf("ip saddr { %s } numgen random mod 100 < %d drop", strings.Join(peers, ", "), n.loss))
		}
		if err := cluster.SetRules(node.Index, in, out); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("nemesis: %s", strings.Join(errs, "; "))
	}
	return nil
}

// setGrudge replaces the partition: g[i] are the nodes i cannot talk to.
// Grudges are made symmetric.
func (n *Net) setGrudge(g map[int][]int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.grudge = map[int]map[int]bool{}
	add := func(a, b int) {
		if n.grudge[a] == nil {
			n.grudge[a] = map[int]bool{}
		}
		n.grudge[a][b] = true
	}
	for a, bs := range g {
		for _, b := range bs {
			add(a, b)
			add(b, a)
		}
	}
	return n.applyLocked()
}

func (n *Net) setClientCut(nodes []int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.clientCut = map[int]bool{}
	for _, i := range nodes {
		n.clientCut[i] = true
	}
	return n.applyLocked()
}

func (n *Net) setLoss(pct int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.loss = pct
	return n.applyLocked()
}

func ids(ns []*cluster.Node) string {
	var s []string
	for _, n := range ns {
		s = append(s, n.ID)
	}
	return strings.Join(s, ",")
}

// setClock sets node n's clock offset (durod must run with clock-control).
func setClock(ctx context.Context, n *cluster.Node, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("http://%s/debug/clock?offset=%s", n.HTTP, d), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: clock: %s", n.ID, resp.Status)
	}
	return nil
}
