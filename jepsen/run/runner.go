// Package run runs chaos cases against a netns cluster of real durod
// processes and writes each run's history, results and plot.
package run

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/client"
	"github.com/duro-io/duro/jepsen/checker"
	"github.com/duro-io/duro/jepsen/cluster"
	"github.com/duro-io/duro/jepsen/nemesis"
)

// Options are the settings shared by every case of an invocation.
type Options struct {
	Binary      string        // durod
	Store       string        // jepsen/store
	Nodes       int           // 3 or 5
	Shards      int           // default 8
	Time        time.Duration // workload time per case
	Workers     int           // concurrent logical clients (≤ 10 per object)
	Rate        float64       // target ops/s over all workers
	CallTimeout time.Duration // SDK deadline per call
	Recovery    time.Duration // G-2 wait after the final heal
	Seed        uint64
	// Bug injects a known client-side bug, a negative control (CHAOS
	// T24): "definite-on-lost" reports calls that may have committed as
	// definite failures. A run with it must come out invalid.
	Bug string
	Out io.Writer // progress
}

// DefaultOptions follow CHAOS.md's defaults, scaled to a 2-core machine.
func DefaultOptions() Options {
	return Options{Binary: "bin/durod", Store: "jepsen/store", Nodes: 5, Shards: 8, Time: 60 * time.Second,
		Workers: 10, Rate: 200, CallTimeout: 5 * time.Second, Recovery: 20 * time.Second,
		Seed: uint64(time.Now().UnixNano()), Out: os.Stdout}
}

// raftArgs are CHAOS.md's Raft defaults: many elections per minute.
var raftArgs = []string{
	"--raft-heartbeat-timeout", "300ms", "--raft-election-timeout", "300ms",
	"--raft-leader-lease-timeout", "150ms", "--raft-snapshot-threshold", "1024",
	"--raft-trailing-logs", "512", "--raft-snapshot-interval", "5s",
}

// Summary is one case's outcome, a row of the final table.
type Summary struct {
	Case      string
	Nodes     int
	Dir       string
	Valid     bool
	Ops       int
	Ok        int
	Fail      int
	Info      int
	Faults    int
	Anomalies int
	Error     string `json:",omitempty"`
	Elapsed   time.Duration
}

// Results is results.json.
type Results struct {
	Case      Case                      `json:"case"`
	Nodes     int                       `json:"nodes"`
	Seed      uint64                    `json:"seed"`
	Valid     bool                      `json:"valid"`
	Error     string                    `json:"error,omitempty"`
	Checks    map[string]checker.Result `json:"checks"`
	Anomalies []checker.Anomaly         `json:"anomalies"`
	Faults    []Fault                   `json:"faults"`
	Stats     map[string]int            `json:"stats"`
}

func (o Options) logf(format string, args ...any) {
	if o.Out != nil {
		fmt.Fprintf(o.Out, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
	}
}

// Run runs one case and writes its directory.
func Run(ctx context.Context, o Options, c Case) Summary {
	t0 := time.Now()
	nodes := o.Nodes
	if c.Nodes > 0 {
		nodes = c.Nodes
	}
	label := c.Name
	if c.ID != "" {
		label = c.ID + "-" + c.Name
	}
	dir := filepath.Join(o.Store, fmt.Sprintf("%s-%s-n%d", time.Now().UTC().Format("20060102T150405"), label, nodes))
	sum := Summary{Case: label, Nodes: nodes, Dir: dir}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		sum.Error = err.Error()
		return sum
	}
	o.logf("%s: %d nodes, %s, dir %s, seed %d", label, nodes, o.Time, dir, o.Seed)
	res := run(ctx, o, c, nodes, dir)
	res.Seed = o.Seed
	sum.Valid, sum.Error = res.Valid, res.Error
	sum.Anomalies = len(res.Anomalies)
	sum.Ops, sum.Ok, sum.Fail, sum.Info = res.Stats["ops"], res.Stats["ok"], res.Stats["fail"], res.Stats["info"]
	sum.Faults = len(res.Faults)
	if b, err := json.MarshalIndent(res, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644)
	}
	sum.Elapsed = time.Since(t0).Round(time.Second)
	o.logf("%s: valid=%v anomalies=%d ops=%d ok=%d fail=%d info=%d faults=%d %s", label, sum.Valid, sum.Anomalies,
		sum.Ops, sum.Ok, sum.Fail, sum.Info, sum.Faults, sum.Error)
	return sum
}

func run(ctx context.Context, o Options, c Case, nodes int, dir string) (res Results) {
	res = Results{Case: c, Nodes: nodes, Checks: map[string]checker.Result{}, Stats: map[string]int{}, Anomalies: []checker.Anomaly{}}
	fail := func(err error) Results {
		res.Valid, res.Error = false, err.Error()
		return res
	}
	bin, err := filepath.Abs(o.Binary)
	if err != nil {
		return fail(err)
	}
	adir, _ := filepath.Abs(dir)
	cl, err := cluster.New(cluster.Config{Nodes: nodes, Shards: o.Shards, Binary: bin, Dir: adir,
		Args: raftArgs, Env: []string{"DURO_FAILPOINTS=clock-control=1"},
		// Delay needs Raft links through the proxy, which hides peer
		// addresses, so it is not mixed with partitions.
		Proxy: strings.Contains(c.Nemesis, "delay")})
	if err != nil {
		return fail(err)
	}
	defer cl.Close()
	if err := cl.StartAll(); err != nil {
		return fail(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = cl.WaitReady(rctx)
	cancel()
	if err != nil {
		return fail(err)
	}

	wl, err := newWorkload(c.Workload, o.Shards, c.Shard)
	if err != nil {
		return fail(err)
	}
	env := nemesis.NewEnv(cl, o.Seed, c.Shard)
	used := map[int]bool{}
	for _, id := range wl.ids() {
		if s := duro.ShardOf(id, o.Shards); !used[s] {
			used[s] = true
			env.Used = append(env.Used, s)
		}
	}
	nem, err := nemesis.New(c.Nemesis, env)
	if err != nil {
		return fail(err)
	}
	copts := []client.Option{client.WithCallTimeout(o.CallTimeout)}
	if c.Raw {
		copts = append(copts, client.WithoutRetries())
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var clients []*client.Client
	for i := 0; i < (o.Workers+4)/5; i++ {
		sc, err := client.Dial(dctx, cl.Endpoints(), copts...)
		if err != nil {
			return fail(err)
		}
		defer sc.Close()
		clients = append(clients, sc)
	}

	// pinTarget is the node pinned workers call in "leader" mode: the
	// leader of the case's shard, looked up before every fault.
	var pinMu sync.Mutex
	pinNode := cl.Leader(ctx, max(c.Shard, 0))
	if pinNode == nil {
		pinNode = cl.Nodes[0]
	}
	repin := func() {
		if n := cl.Leader(ctx, max(c.Shard, 0)); n != nil {
			pinMu.Lock()
			pinNode = n
			pinMu.Unlock()
		}
	}

	rec := newRecorder()
	var procs atomic.Int64
	workers := make([]*worker, o.Workers)
	for i := range workers {
		w := &worker{id: i, proc: &procs, rng: rand.New(rand.NewPCG(o.Seed, uint64(i))), lastSeen: map[string]*string{}}
		w.newProc()
		switch {
		case c.Pin == "all":
			n := cl.Nodes[i%len(cl.Nodes)]
			w.c = newPinned(func() (string, string) { return n.ID, n.Addr })
		case c.Pin == "leader" && i%2 == 0:
			w.c = newPinned(func() (string, string) {
				pinMu.Lock()
				defer pinMu.Unlock()
				return pinNode.ID, pinNode.Addr
			})
		default:
			w.c = sdkCaller{clients[i%len(clients)]}
		}
		if o.Bug == "definite-on-lost" {
			w.c = definiteOnLost{w.c}
		}
		workers[i] = w
	}

	wctx, stopWork := context.WithTimeout(ctx, o.Time)
	defer stopWork()
	var wg sync.WaitGroup
	// Between faults, pinned clients follow the shard's leader (once a
	// second); during a fault they stay on the node they had.
	var faulting atomic.Bool
	if c.Pin == "leader" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for wctx.Err() == nil {
				if !faulting.Load() {
					repin()
				}
				select {
				case <-wctx.Done():
				case <-time.After(time.Second):
				}
			}
		}()
	}
	interval := time.Duration(float64(time.Second) * float64(o.Workers) / o.Rate)
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for wctx.Err() == nil {
				start := time.Now()
				// The op's own deadline is the SDK's, not the run's end:
				// an op started is finished.
				octx, cancel := context.WithTimeout(context.Background(), o.CallTimeout)
				r := wl.op(octx, w, rec)
				cancel()
				rec.add(r)
				if r.Type == checker.Info {
					w.newProc()
				}
				if d := interval - time.Since(start); d > 0 {
					select {
					case <-wctx.Done():
					case <-time.After(time.Duration(float64(d) * (0.5 + w.rng.Float64()))):
					}
				}
			}
		}()
	}

	// The nemesis: heal for HealMin-HealMax s, fault for FaultMin-FaultMax s.
	fmin, fmax, hmin, hmax := 5.0, 15.0, 5.0, 10.0
	if c.FaultMax > 0 {
		fmin, fmax, hmin, hmax = c.FaultMin, c.FaultMax, c.HealMin, c.HealMax
	}
	nrng := rand.New(rand.NewPCG(o.Seed, 99))
	between := func(a, b float64) time.Duration {
		return time.Duration((a + nrng.Float64()*(b-a)) * float64(time.Second))
	}
	sleep := func(d time.Duration) bool {
		select {
		case <-wctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for cycle := 0; c.Cycles == 0 || cycle < c.Cycles; cycle++ {
		if !sleep(between(hmin, hmax)) {
			break
		}
		if c.Pin == "leader" {
			repin()
		}
		faulting.Store(true)
		f := Fault{Name: nem.Name(), Start: rec.now()}
		desc, err := nem.Invoke(ctx)
		f.Desc = desc
		if err != nil {
			f.Err = err.Error()
		}
		if strings.HasPrefix(desc, "minority [") || strings.Contains(desc, ": minority [") {
			f.Minority = parseMinority(desc)
		}
		fi := rec.addFault(f)
		o.logf("  fault %s: %s %s", nem.Name(), desc, f.Err)
		d := between(fmin, fmax)
		if dl, ok := wctx.Deadline(); ok && time.Until(dl) < d {
			d = max(time.Until(dl), 0)
		}
		time.Sleep(d)
		herr := nem.Heal(ctx)
		rec.endFault(fi, rec.now(), herr)
		faulting.Store(false)
	}
	<-wctx.Done()
	wg.Wait()

	// Final heal, recovery, liveness probe, final reads.
	healAt := time.Now()
	if err := env.HealAll(ctx); err != nil {
		res.Stats["heal-errors"]++
		o.logf("  heal: %v", err)
	}
	o.logf("  healed; recovering")
	liveness := checkLiveness(ctx, cl, o)
	res.Checks["G-3 liveness"] = liveness
	fdctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
	fc, err := client.Dial(fdctx, cl.Endpoints(), client.WithCallTimeout(10*time.Second))
	fcancel()
	if err == nil {
		fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		for _, r := range wl.final(fctx, sdkCaller{fc}, rec) {
			rec.add(r)
		}
		cancel()
		fc.Close()
	} else {
		res.Checks["G-3 liveness"] = checker.Result{Anomalies: []checker.Anomaly{{Kind: "unavailable", Detail: "final client: " + err.Error()}}}
	}
	res.Checks["G-2 convergence"] = checkConvergence(ctx, cl, healAt.Add(o.Recovery))

	h, faults := rec.history()
	res.Faults = faults
	for _, r := range h {
		res.Stats["ops"]++
		res.Stats[r.Type.String()]++
		if r.Code != "" {
			res.Stats[r.Type.String()+"/"+r.Code]++
		}
	}
	if err := writeJSONLines(filepath.Join(dir, "history.jsonl"), h); err != nil {
		res.Error = err.Error()
	}
	for k, v := range wl.check(h, dir) {
		res.Checks["G-1 "+k] = v
	}
	res.Checks["G-3 deadlines"] = checkDeadlines(h, o.CallTimeout)
	if c.MinorityOK {
		res.Checks["T21 minority"] = checkMinority(h, faults)
	}
	cl.Close() // stop the nodes so their logs are complete
	res.Checks["G-4 hygiene"] = checkLogs(cl)
	res.Checks["leader-per-term"], res.Checks["epochs"] = checkLeaders(cl)
	if err := plotRun(filepath.Join(dir, "latency.png"), label(c), h, faults); err != nil {
		res.Checks["G-5 reporting"] = checker.Result{Anomalies: []checker.Anomaly{{Kind: "plot", Detail: err.Error()}}}
	}

	res.Valid = res.Error == ""
	keys := make([]string, 0, len(res.Checks))
	for k := range res.Checks {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := res.Checks[k]
		v.Valid = len(v.Anomalies) == 0
		res.Checks[k] = v
		for _, a := range v.Anomalies {
			a.Kind = k + ": " + a.Kind
			res.Anomalies = append(res.Anomalies, a)
		}
		if !v.Valid {
			res.Valid = false
		}
	}
	return res
}

func label(c Case) string {
	if c.ID != "" {
		return c.ID + " " + c.Name
	}
	return c.Name
}

// parseMinority extracts node IDs from "minority [n1,n2] | ...".
func parseMinority(desc string) []string {
	i := strings.Index(desc, "minority [")
	if i < 0 {
		return nil
	}
	rest := desc[i+len("minority ["):]
	j := strings.Index(rest, "]")
	if j <= 0 {
		return nil
	}
	return strings.Split(rest[:j], ",")
}

// checkLiveness (G-3): every shard completes a write and a read within 10 s
// of the heal (after the cluster reports leaders again).
func checkLiveness(ctx context.Context, cl *cluster.Cluster, o Options) checker.Result {
	res := checker.Result{Stats: map[string]int{}}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cl.WaitReady(rctx); err != nil {
		res.Anomalies = append(res.Anomalies, checker.Anomaly{Kind: "no-leader", Detail: err.Error()})
	}
	c, err := client.Dial(rctx, cl.Endpoints(), client.WithCallTimeout(10*time.Second))
	if err != nil {
		res.Anomalies = append(res.Anomalies, checker.Anomaly{Kind: "unavailable", Detail: err.Error()})
		return res
	}
	defer c.Close()
	ns := c.Namespace(builtinKV)
	for s := 0; s < cl.Shards(); s++ {
		name := objects(builtinKV, "probe", 1, cl.Shards(), s)[0]
		stub := ns.Get(ns.IDFromName(name))
		t0 := time.Now()
		err := stub.Call(ctx, "Put", map[string]string{"key": "p", "value": "1"}, nil)
		if err == nil {
			err = stub.Call(ctx, "Get", map[string]string{"key": "p"}, nil)
		}
		res.Stats[fmt.Sprintf("shard%d-ms", s)] = int(time.Since(t0).Milliseconds())
		if err != nil {
			res.Anomalies = append(res.Anomalies, checker.Anomaly{Kind: "unavailable", Object: name,
				Detail: fmt.Sprintf("shard %d: write+read within 10 s: %v", s, err)})
		}
	}
	return res
}

// checkDeadlines (G-3): every call finished within the SDK deadline + 1 s.
func checkDeadlines(h []Rec, deadline time.Duration) checker.Result {
	res := checker.Result{Stats: map[string]int{}}
	for i, r := range h {
		if r.Final {
			continue
		}
		if d := r.End - r.Start; d > deadline+time.Second {
			res.Anomalies = append(res.Anomalies, checker.Anomaly{Kind: "slow", Object: r.Object, Ops: []int{i},
				Detail: fmt.Sprintf("%s took %v (deadline %v)", r.F, d, deadline)})
		}
	}
	return res
}

// checkMinority (T21): no pinned call succeeded on a minority node while it
// was cut off, after its lease and heartbeat window (1 s grace).
func checkMinority(h []Rec, faults []Fault) checker.Result {
	const grace = time.Second
	res := checker.Result{Stats: map[string]int{}}
	for i, r := range h {
		if r.Node == "" {
			continue
		}
		for _, f := range faults {
			if len(f.Minority) == 0 || r.Start < f.Start+grace || r.End > f.End {
				continue
			}
			for _, m := range f.Minority {
				if m != r.Node {
					continue
				}
				res.Stats["minority-calls"]++
				if r.Type == checker.Ok {
					res.Anomalies = append(res.Anomalies, checker.Anomaly{Kind: "minority-ok", Object: r.Object, Ops: []int{i},
						Detail: fmt.Sprintf("%s on %s succeeded while it was in the minority (%s)", r.F, r.Node, f.Desc)})
				}
			}
		}
	}
	return res
}

// checkConvergence (G-2): by the deadline, every voter of each shard has
// the same applied index and state hash, and every shard has a leader.
func checkConvergence(ctx context.Context, cl *cluster.Cluster, deadline time.Time) checker.Result {
	var last []checker.Anomaly
	polls := 0
	for {
		polls++
		last = convergence(ctx, cl)
		if len(last) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	return checker.Result{Anomalies: last, Stats: map[string]int{"shards": cl.Shards(), "voters": len(cl.Nodes), "polls": polls}}
}

func convergence(ctx context.Context, cl *cluster.Cluster) []checker.Anomaly {
	type view struct {
		node    string
		applied uint64
		hash    string
	}
	views := map[int32][]view{}
	leaders := map[int32]string{}
	var an []checker.Anomaly
	for _, n := range cl.Nodes {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := cl.Status(sctx, n, true)
		cancel()
		if err != nil {
			an = append(an, checker.Anomaly{Kind: "unreachable", Detail: n.ID + ": " + err.Error()})
			continue
		}
		for _, s := range st.Shard {
			views[s.Id] = append(views[s.Id], view{n.ID, s.Applied, fmt.Sprintf("%x", s.StateHash)})
			if s.LeaderId != "" {
				leaders[s.Id] = s.LeaderId
			}
		}
	}
	for s, vs := range views {
		if leaders[s] == "" {
			an = append(an, checker.Anomaly{Kind: "no-leader", Detail: fmt.Sprintf("shard %d", s)})
		}
		for _, v := range vs[1:] {
			if v.applied != vs[0].applied || v.hash != vs[0].hash {
				// Replicas at different indexes have not caught up (a
				// liveness failure); at the same index with different
				// hashes they disagree on the state (a safety one).
				kind := "diverged"
				if v.applied != vs[0].applied {
					kind = "behind"
				}
				an = append(an, checker.Anomaly{Kind: kind, Detail: fmt.Sprintf("shard %d: %s applied %d hash %.12s, %s applied %d hash %.12s",
					s, vs[0].node, vs[0].applied, vs[0].hash, v.node, v.applied, v.hash)})
			}
		}
	}
	return an
}
