package nemesis

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/duro-io/duro/jepsen/cluster"
)

// Names lists every nemesis New knows, for --help and the matrix.
var Names = []string{
	"none", "partition-halves", "isolate-leader", "majorities-ring", "bridge",
	"kill", "kill-leader", "kill-all", "pause", "pause-leader", "loss",
	"client-cut", "clock-skew", "delay", "mixed",
}

// New returns the nemesis called name. "mixed" composes partition-halves,
// kill, pause-leader and isolate-leader (plus majorities-ring on 5 nodes);
// "a+b" composes a and b, one chosen at random per cycle.
func New(name string, e *Env) (Nemesis, error) {
	if name == "mixed" {
		parts := []string{"partition-halves", "kill", "pause-leader", "isolate-leader"}
		if len(e.C.Nodes) >= 5 {
			parts = append(parts, "majorities-ring")
		}
		name = strings.Join(parts, "+")
	}
	if strings.Contains(name, "+") {
		m := &mixed{e: e, name: name}
		for _, p := range strings.Split(name, "+") {
			n, err := New(p, e)
			if err != nil {
				return nil, err
			}
			m.parts = append(m.parts, n)
		}
		return m, nil
	}
	n := len(e.C.Nodes)
	switch name {
	case "none":
		return none{}, nil
	case "partition-halves":
		return &partition{e: e, name: name, grudge: halves}, nil
	case "majorities-ring":
		if n < 5 {
			return nil, fmt.Errorf("nemesis %s needs 5 nodes, have %d", name, n)
		}
		return &partition{e: e, name: name, grudge: ring}, nil
	case "bridge":
		if n < 5 {
			return nil, fmt.Errorf("nemesis %s needs 5 nodes, have %d", name, n)
		}
		return &partition{e: e, name: name, grudge: bridge}, nil
	case "isolate-leader":
		return &isolateLeader{e: e}, nil
	case "kill", "kill-leader", "kill-all":
		return &kill{e: e, name: name}, nil
	case "pause", "pause-leader":
		return &pause{e: e, name: name}, nil
	case "loss":
		return &loss{e: e}, nil
	case "client-cut":
		return &clientCut{e: e}, nil
	case "clock-skew":
		return &clockSkew{e: e}, nil
	case "delay":
		if e.C.Proxy == nil {
			return nil, fmt.Errorf("nemesis delay needs a cluster with the delay proxy")
		}
		return &delay{e: e}, nil
	}
	return nil, fmt.Errorf("unknown nemesis %q (known: %s)", name, strings.Join(Names, ", "))
}

type none struct{}

func (none) Name() string                           { return "none" }
func (none) Invoke(context.Context) (string, error) { return "nothing", nil }
func (none) Heal(context.Context) error             { return nil }

// A grudge function maps shuffled nodes to who drops whom, and describes it.
type grudgeFn func(ns []*cluster.Node) (map[int][]int, string)

// halves cuts the nodes into a minority and a majority (Jepsen :majority).
func halves(ns []*cluster.Node) (map[int][]int, string) {
	k := len(ns) / 2
	minority, majority := ns[:k], ns[k:]
	g := map[int][]int{}
	for _, a := range minority {
		for _, b := range majority {
			g[a.Index] = append(g[a.Index], b.Index)
		}
	}
	return g, fmt.Sprintf("minority [%s] | majority [%s]", ids(minority), ids(majority))
}

// ring: every node sees itself and its two ring neighbours, a different
// majority per node (Jepsen :majorities-ring, for 5 nodes).
func ring(ns []*cluster.Node) (map[int][]int, string) {
	n := len(ns)
	g := map[int][]int{}
	var desc []string
	for i, a := range ns {
		for d := 2; d <= n-2; d++ {
			g[a.Index] = append(g[a.Index], ns[(i+d)%n].Index)
		}
		desc = append(desc, fmt.Sprintf("%s sees %s,%s", a.ID, ns[(i+n-1)%n].ID, ns[(i+1)%n].ID))
	}
	return g, "ring: " + strings.Join(desc, "; ")
}

// bridge: two halves that only one node (the bridge) connects.
func bridge(ns []*cluster.Node) (map[int][]int, string) {
	k := len(ns) / 2
	a, mid, b := ns[:k], ns[k], ns[k+1:]
	g := map[int][]int{}
	for _, x := range a {
		for _, y := range b {
			g[x.Index] = append(g[x.Index], y.Index)
		}
	}
	return g, fmt.Sprintf("[%s] - %s - [%s]", ids(a), mid.ID, ids(b))
}

type partition struct {
	e      *Env
	name   string
	grudge grudgeFn
}

func (p *partition) Name() string { return p.name }

func (p *partition) Invoke(ctx context.Context) (string, error) {
	g, desc := p.grudge(p.e.shuffled())
	return desc, p.e.net.setGrudge(g)
}

func (p *partition) Heal(ctx context.Context) error { return p.e.net.setGrudge(nil) }

// isolateLeader cuts the leader of the target shard from its Raft peers;
// clients still reach it (Jepsen :primaries, CHAOS T04).
type isolateLeader struct{ e *Env }

func (n *isolateLeader) Name() string { return "isolate-leader" }

func (n *isolateLeader) Invoke(ctx context.Context) (string, error) {
	l, s, err := n.e.leader(ctx)
	if err != nil {
		return "", err
	}
	var others []int
	for _, o := range n.e.C.Nodes {
		if o != l {
			others = append(others, o.Index)
		}
	}
	return fmt.Sprintf("isolate %s (leader of shard %d) from its peers", l.ID, s), n.e.net.setGrudge(map[int][]int{l.Index: others})
}

func (n *isolateLeader) Heal(ctx context.Context) error { return n.e.net.setGrudge(nil) }

type kill struct {
	e      *Env
	name   string
	mu     sync.Mutex // guards killed
	killed []*cluster.Node
}

func (k *kill) Name() string { return k.name }

func (k *kill) Invoke(ctx context.Context) (string, error) {
	var victims []*cluster.Node
	desc := ""
	switch k.name {
	case "kill":
		victims = k.e.shuffled()[:1]
	case "kill-leader":
		l, s, err := k.e.leader(ctx)
		if err != nil {
			return "", err
		}
		victims, desc = []*cluster.Node{l}, fmt.Sprintf(" (leader of shard %d)", s)
	case "kill-all":
		victims = k.e.C.Nodes
	}
	var wg sync.WaitGroup
	for _, v := range victims {
		wg.Add(1)
		go func() { defer wg.Done(); k.e.C.Kill(v) }()
	}
	wg.Wait()
	k.mu.Lock()
	k.killed = append(k.killed, victims...)
	k.mu.Unlock()
	return "SIGKILL " + ids(victims) + desc, nil
}

func (k *kill) Heal(ctx context.Context) error {
	k.mu.Lock()
	victims := k.killed
	k.killed = nil
	k.mu.Unlock()
	var errs []error
	for _, v := range victims {
		if !v.Running() {
			errs = append(errs, k.e.C.Start(v))
		}
	}
	return errors.Join(errs...)
}

type pause struct {
	e      *Env
	name   string
	mu     sync.Mutex // guards paused
	paused []*cluster.Node
}

func (p *pause) Name() string { return p.name }

func (p *pause) Invoke(ctx context.Context) (string, error) {
	v := p.e.shuffled()[0]
	desc := ""
	if p.name == "pause-leader" {
		l, s, err := p.e.leader(ctx)
		if err != nil {
			return "", err
		}
		v, desc = l, fmt.Sprintf(" (leader of shard %d)", s)
	}
	p.e.C.Pause(v)
	p.mu.Lock()
	p.paused = append(p.paused, v)
	p.mu.Unlock()
	return "SIGSTOP " + v.ID + desc, nil
}

func (p *pause) Heal(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, v := range p.paused {
		p.e.C.Resume(v)
	}
	p.paused = nil
	return nil
}

type loss struct{ e *Env }

func (l *loss) Name() string { return "loss" }

func (l *loss) Invoke(ctx context.Context) (string, error) {
	pct := 10 + l.e.intn(41)
	return fmt.Sprintf("drop %d%% of peer packets", pct), l.e.net.setLoss(pct)
}

func (l *loss) Heal(ctx context.Context) error { return l.e.net.setLoss(0) }

// clientCut cuts clients from the leader of the target shard, or from a
// majority of the nodes (CHAOS T19); Raft links stay up.
type clientCut struct{ e *Env }

func (c *clientCut) Name() string { return "client-cut" }

func (c *clientCut) Invoke(ctx context.Context) (string, error) {
	if c.e.intn(2) == 0 {
		l, s, err := c.e.leader(ctx)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("cut clients from %s (leader of shard %d)", l.ID, s), c.e.net.setClientCut([]int{l.Index})
	}
	ns := c.e.shuffled()
	maj := ns[:len(ns)/2+1]
	var idx []int
	for _, n := range maj {
		idx = append(idx, n.Index)
	}
	sort.Ints(idx)
	return "cut clients from majority " + ids(maj), c.e.net.setClientCut(idx)
}

func (c *clientCut) Heal(ctx context.Context) error { return c.e.net.setClientCut(nil) }

// clockSkew offsets the clocks of random nodes by ±100 ms to ±60 s.
type clockSkew struct{ e *Env }

func (c *clockSkew) Name() string { return "clock-skew" }

func (c *clockSkew) Invoke(ctx context.Context) (string, error) {
	var desc []string
	var errs []error
	for _, n := range c.e.C.Nodes {
		if c.e.intn(2) == 0 {
			continue
		}
		d := time.Duration(100+c.e.intn(60000)) * time.Millisecond
		if c.e.intn(2) == 0 {
			d = -d
		}
		errs = append(errs, setClock(ctx, n, d))
		desc = append(desc, fmt.Sprintf("%s:%s", n.ID, d))
	}
	return "clock " + strings.Join(desc, " "), errors.Join(errs...)
}

func (c *clockSkew) Heal(ctx context.Context) error {
	var errs []error
	for _, n := range c.e.C.Nodes {
		if n.Running() && !n.Paused() {
			errs = append(errs, setClock(ctx, n, 0))
		}
	}
	return errors.Join(errs...)
}

// mixed runs one of its parts per cycle.
type mixed struct {
	e       *Env
	name    string
	parts   []Nemesis
	mu      sync.Mutex // guards current
	current Nemesis
}

func (m *mixed) Name() string { return m.name }

func (m *mixed) Invoke(ctx context.Context) (string, error) {
	p := m.parts[m.e.intn(len(m.parts))]
	m.mu.Lock()
	m.current = p
	m.mu.Unlock()
	d, err := p.Invoke(ctx)
	return p.Name() + ": " + d, err
}

func (m *mixed) Heal(ctx context.Context) error {
	m.mu.Lock()
	p := m.current
	m.current = nil
	m.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Heal(ctx)
}

// delay slows every Raft link by 50-500 ms plus up to 100 ms of jitter,
// through the cluster's user-space proxy (CHAOS T18).
type delay struct{ e *Env }

func (d *delay) Name() string { return "delay" }

func (d *delay) Invoke(ctx context.Context) (string, error) {
	base := time.Duration(50+d.e.intn(451)) * time.Millisecond
	jit := time.Duration(d.e.intn(101)) * time.Millisecond
	d.e.C.Proxy.SetDelay(base, jit)
	return fmt.Sprintf("delay Raft links %v + up to %v jitter", base, jit), nil
}

func (d *delay) Heal(ctx context.Context) error {
	d.e.C.Proxy.SetDelay(0, 0)
	return nil
}
