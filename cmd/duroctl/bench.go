package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"sort"
	"strings"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/client"
	"github.com/duro-io/duro/cmd/duroctl/etcdbench"
	"github.com/duro-io/duro/cmd/duroctl/internal/loadgen"
	"github.com/duro-io/duro/cmd/duroctl/internal/local"
	"github.com/spf13/cobra"
)

// benchEnv is what every bench subcommand shares: where output goes, the
// cluster to target and the flags common to all of them.
type benchEnv struct {
	ctx            context.Context
	endpoints      func() []string
	endpointsSet   func() bool
	stdout, stderr io.Writer

	jsonOut string // --json
	dataDir string // --data-dir
	durod   string // --durod
	shards  int    // --shards
	ranOn   int    // shards of the cluster the last duro run used

	cpuProfile string // --cpuprofile
	profile    *os.File
}

// startProfile starts --cpuprofile, if set: a CPU profile of this process,
// the load generator and the SDK it drives (durod serves its own on
// /debug/pprof).
func (env *benchEnv) startProfile() error {
	if env.cpuProfile == "" {
		return nil
	}
	f, err := os.Create(env.cpuProfile)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	env.profile = f
	return nil
}

func (env *benchEnv) stopProfile() error {
	if env.profile == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := env.profile.Close()
	env.profile = nil
	return err
}

// workloadFlags are the flags of the workload runs (bench and bench compare).
type workloadFlags struct {
	workloads string
	callers   int
	objects   int
	duration  time.Duration
}

func (f *workloadFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.workloads, "workloads", strings.Join(loadgen.Workloads, ","), "comma-separated workloads")
	cmd.Flags().IntVar(&f.callers, "callers", loadgen.DefaultCallers, "concurrent callers (seq always uses 1)")
	cmd.Flags().IntVar(&f.objects, "objects", loadgen.DefaultObjects, "objects (hot always uses 1)")
	cmd.Flags().DurationVar(&f.duration, "duration", 10*time.Second, "time per workload")
}

func (f *workloadFlags) parse(progress io.Writer) ([]string, loadgen.Config, error) {
	ws, err := loadgen.ParseWorkloads(f.workloads)
	if err != nil {
		return nil, loadgen.Config{}, err
	}
	if f.callers < 1 || f.objects < 1 || f.duration <= 0 {
		return nil, loadgen.Config{}, fmt.Errorf("--callers and --objects must be at least 1 and --duration positive, got %d, %d and %s", f.callers, f.objects, f.duration)
	}
	return ws, loadgen.Config{Callers: f.callers, Objects: f.objects, Duration: f.duration, Progress: progress}, nil
}

func benchCmd(ctx context.Context, endpoints func() []string, endpointsSet func() bool, stdout, stderr io.Writer) *cobra.Command {
	env := &benchEnv{ctx: ctx, endpoints: endpoints, endpointsSet: endpointsSet, stdout: stdout, stderr: stderr}
	var wf workloadFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "run workloads (put, incr, hot, seq, read) through the SDK and print ops/s and latency",
		Long: "bench runs each workload for --duration and prints ops/s, p50, p99, p99.9 and errors;\n" +
			"a progress line on stderr updates while it runs. Without --endpoints it starts a local\n" +
			"3-node cluster (fsync on) from the durod binary next to duroctl, in a temporary directory.\n\n" +
			"  put   64 callers, 1,000 kv objects, kv.Put of a 64-byte value\n" +
			"  incr  64 callers, 1,000 counters, counter.Increment\n" +
			"  hot   64 callers, one counter\n" +
			"  seq   one caller, sequential kv.Put (latency)\n" +
			"  read  64 callers, kv.Get of keys written first\n\n" +
			"The subcommands compare with etcd and measure failover and scale. bench ignores --timeout.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ws, cfg, err := wf.parse(stderr)
			if err != nil {
				return err
			}
			results, err := env.runDuro(env.dataDir, ws, cfg, func(r loadgen.Result) {
				if r.Workload == ws[0] {
					fmt.Fprintln(stdout, benchHeader)
				}
				fmt.Fprintln(stdout, benchRow(r))
			})
			if err != nil {
				return err
			}
			return env.writeJSON(results)
		},
	}
	wf.add(cmd)
	cmd.PersistentFlags().StringVar(&env.jsonOut, "json", "", "also write the results as JSON to this file ('-' for stdout)")
	cmd.PersistentFlags().StringVar(&env.dataDir, "data-dir", "", "data directory of the local cluster(s) (default: a temporary one, removed afterwards)")
	cmd.PersistentFlags().StringVar(&env.durod, "durod", "", "durod binary of the local cluster (default: next to duroctl, then PATH)")
	cmd.PersistentFlags().IntVar(&env.shards, "shards", 0, "shards (Raft groups) of the local cluster; 0: durod's default for a new cluster, one per node")
	cmd.PersistentFlags().StringVar(&env.cpuProfile, "cpuprofile", "", "write a CPU profile of duroctl itself (load generator and SDK) to this file")
	cmd.PersistentPreRunE = func(*cobra.Command, []string) error { return env.startProfile() }
	cmd.PersistentPostRunE = func(*cobra.Command, []string) error { return env.stopProfile() }
	cmd.AddCommand(compareCmd(env), failoverCmd(env), scaleCmd(env))
	// cobra skips PersistentPostRunE when RunE fails; the profile of a failed
	// run is the one most worth reading, so stop it there too.
	for _, c := range append(cmd.Commands(), cmd) {
		if run := c.RunE; run != nil {
			c.RunE = func(c *cobra.Command, args []string) error {
				err := run(c, args)
				if err != nil {
					env.stopProfile()
				}
				return err
			}
		}
	}
	return cmd
}

const benchHeader = "WORK    CALLERS  OBJECTS      OPS/S        P50        P99      P99.9   ERRORS"

func benchRow(r loadgen.Result) string {
	return fmt.Sprintf("%-6s %8d %8d %10.0f %8.2fms %8.2fms %8.2fms %8d", r.Workload, r.Callers, r.Objects, r.OpsPerS, r.P50ms, r.P99ms, r.P999ms, r.Errors)
}

// writeJSON writes v to --json, if set.
func (env *benchEnv) writeJSON(v any) error {
	if env.jsonOut == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if env.jsonOut == "-" {
		_, err = env.stdout.Write(b)
		return err
	}
	return os.WriteFile(env.jsonOut, b, 0o644)
}

// startLocal starts a local cluster and waits until every shard has a
// leader known to every node, then (up to balanceWait) until leadership is
// spread over the nodes, so that figures are of the cluster as it runs
// rather than of its first seconds.
func (env *benchEnv) startLocal(dir string, http bool, args ...string) (*local.Cluster, error) {
	if env.shards < 0 {
		return nil, fmt.Errorf("--shards must be 0 (durod's default) or more, got %d", env.shards)
	}
	if env.shards > 0 {
		args = append(args, "--shards", fmt.Sprint(env.shards))
	}
	c, err := local.Start(env.ctx, local.Options{Durod: env.durod, Dir: dir, HTTP: http, Args: args, Log: env.stderr})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(env.ctx, time.Minute)
	defer cancel()
	if err := c.WaitHealthy(ctx); err != nil {
		c.Close()
		return nil, err
	}
	bctx, bcancel := context.WithTimeout(env.ctx, balanceWait)
	defer bcancel()
	if err := c.WaitBalanced(bctx); err != nil {
		if env.ctx.Err() != nil {
			c.Close()
			return nil, env.ctx.Err()
		}
		fmt.Fprintf(env.stderr, "bench: going on unbalanced: %v\n", err)
	}
	return c, nil
}

// balanceWait bounds the wait for leadership to spread over a new local
// cluster's nodes: each node checks every 5 s (shard.DefaultBalanceEvery)
// whether it leads more than its share.
const balanceWait = 20 * time.Second

// dial connects to --endpoints, or to a local cluster it starts (stopped by
// the returned function), and waits until calls succeed on every shard.
func (env *benchEnv) dial(dir string) (*client.Client, func(), error) {
	eps, stop := env.endpoints(), func() {}
	if !env.endpointsSet() {
		c, err := env.startLocal(dir, false)
		if err != nil {
			return nil, nil, err
		}
		eps, stop = c.Endpoints(), c.Close
	}
	dctx, cancel := context.WithTimeout(env.ctx, 30*time.Second)
	c, err := client.Dial(dctx, eps)
	cancel()
	if err != nil {
		stop()
		return nil, nil, err
	}
	if err := waitReady(env.ctx, c); err != nil {
		c.Close()
		stop()
		return nil, nil, err
	}
	return c, func() { c.Close(); stop() }, nil
}

// runDuro runs workloads against duro one after the other, calling each with
// every result as it comes.
func (env *benchEnv) runDuro(dir string, ws []string, cfg loadgen.Config, each func(loadgen.Result)) ([]loadgen.Result, error) {
	c, stop, err := env.dial(dir)
	if err != nil {
		return nil, err
	}
	defer stop()
	env.ranOn = c.Shards()
	fmt.Fprintf(env.stderr, "duro: %s\n", shardsWord(env.ranOn))
	t := duroTarget{c}
	var out []loadgen.Result
	for _, w := range ws {
		r, err := loadgen.RunWorkload(env.ctx, t, w, cfg)
		if err != nil {
			return out, err
		}
		out = append(out, r)
		each(r)
	}
	return out, nil
}

// waitReady makes a call on many objects, so that (with high probability)
// every shard has a leader that serves calls.
func waitReady(ctx context.Context, c *client.Client) error {
	ns := c.Namespace("counter")
	return loadgen.Parallel(ctx, c.Shards()*4, 16, "", nil, func(ctx context.Context, i int) error {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if err := ns.Get(ns.IDFromName(fmt.Sprintf("bench-ready-%d", i))).Call(cctx, "Get", nil, nil); err != nil {
			return fmt.Errorf("cluster not ready: %w", err)
		}
		return nil
	})
}

// duroTarget runs the workloads through the Go SDK with the builtin kv and
// counter classes. IDs and arguments are computed before the run so the load
// generator spends its CPU on calls.
type duroTarget struct{ c *client.Client }

func ids(ns *client.Namespace, prefix string, n int) []duro.ID {
	out := make([]duro.ID, n)
	for i := range out {
		out[i] = ns.IDFromName(fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

var (
	putArg = []byte(`{"key":"k","value":"` + strings.Repeat("v", loadgen.ValueBytes) + `"}`)
	getArg = []byte(`{"key":"k"}`)
	oneArg = []byte(`1`)
)

func (t duroTarget) Prepare(ctx context.Context, w string, objects int) (loadgen.Op, error) {
	kv, ctr := t.c.Namespace("kv"), t.c.Namespace("counter")
	call := func(ns *client.Namespace, ids []duro.ID, method string, arg []byte) loadgen.Op {
		return func(ctx context.Context, rng *rand.Rand) error {
			_, err := ns.Get(ids[rng.IntN(len(ids))]).CallRaw(ctx, method, arg)
			return err
		}
	}
	switch w {
	case "put", "seq":
		return call(kv, ids(kv, "o", objects), "Put", putArg), nil
	case "incr":
		return call(ctr, ids(ctr, "c", objects), "Increment", oneArg), nil
	case "hot":
		return call(ctr, []duro.ID{ctr.IDFromName("hot")}, "Increment", oneArg), nil
	case "read":
		keys := ids(kv, "o", objects)
		err := loadgen.Parallel(ctx, len(keys), loadgen.DefaultCallers, "", nil, func(ctx context.Context, i int) error {
			_, err := kv.Get(keys[i]).CallRaw(ctx, "Put", putArg)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("writing the keys to read: %w", err)
		}
		return func(ctx context.Context, rng *rand.Rand) error {
			var r struct{ Found bool }
			if err := kv.Get(keys[rng.IntN(len(keys))]).Call(ctx, "Get", json.RawMessage(getArg), &r); err != nil {
				return err
			}
			if !r.Found {
				return fmt.Errorf("kv: key written before the run is missing")
			}
			return nil
		}, nil
	}
	return nil, fmt.Errorf("unknown workload %q", w)
}

// compareResult is the JSON of `duroctl bench compare`: duro, etcd and
// ratio are the first round's; with --rounds above 1, rounds has every
// round and median_ratio the median of their ratios.
type compareResult struct {
	compareRound
	DuroShards  int            `json:"duro_shards"`
	Rounds      []compareRound `json:"rounds,omitempty"`
	MedianRatio []ratio        `json:"median_ratio,omitempty"`
}

// compareRound is one run of duro and then of etcd.
type compareRound struct {
	Duro  []loadgen.Result `json:"duro"`
	Etcd  []loadgen.Result `json:"etcd"`
	Ratio []ratio          `json:"ratio"`
}

// medianRatios is, per workload and figure, the median of the rounds'
// ratios (the mean of the middle two for an even count).
func medianRatios(rounds []compareRound) []ratio {
	if len(rounds) == 0 {
		return nil
	}
	median := func(f func(ratio) float64, i int) float64 {
		v := make([]float64, len(rounds))
		for r, rd := range rounds {
			v[r] = f(rd.Ratio[i])
		}
		sort.Float64s(v)
		n := len(v)
		if n%2 == 1 {
			return v[n/2]
		}
		return (v[n/2-1] + v[n/2]) / 2
	}
	var out []ratio
	for i, q := range rounds[0].Ratio {
		out = append(out, ratio{Workload: q.Workload,
			OpsPerS: median(func(q ratio) float64 { return q.OpsPerS }, i),
			P50:     median(func(q ratio) float64 { return q.P50 }, i),
			P99:     median(func(q ratio) float64 { return q.P99 }, i),
			P999:    median(func(q ratio) float64 { return q.P999 }, i)})
	}
	return out
}

// ratio is duro's figure divided by etcd's: above 1 is better for ops/s,
// below 1 is better for latencies.
type ratio struct {
	Workload string  `json:"workload"`
	OpsPerS  float64 `json:"ops_per_s"`
	P50      float64 `json:"p50"`
	P99      float64 `json:"p99"`
	P999     float64 `json:"p999"`
}

func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func compareCmd(env *benchEnv) *cobra.Command {
	var wf workloadFlags
	var etcdBin string
	var install bool
	var etcdClients, rounds int
	cmd := &cobra.Command{
		Use:   "compare",
		Short: "run the bench workloads on duro, then on a local 3-member etcd, and print one table with the ratios",
		Long: "compare runs every workload on duro (a local 3-node cluster, or --endpoints), then starts\n" +
			"a 3-member etcd cluster on loopback (fsync on, data in a temporary directory) and runs the\n" +
			"same workloads with the same callers and objects through go.etcd.io/etcd/client/v3:\n" +
			"put = Put; incr and hot = Get then Txn compare-and-swap on ModRevision, retried on\n" +
			"conflict; seq = sequential Put; read = linearizable Get. The two never run at once.\n" +
			"etcd-server is installed with apt-get when etcd is not on PATH (root only).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ws, cfg, err := wf.parse(env.stderr)
			if err != nil {
				return err
			}
			bin, err := etcdbench.FindEtcd(env.ctx, etcdBin, install, env.stderr)
			if err != nil {
				return err
			}
			if rounds < 1 {
				return fmt.Errorf("--rounds must be 1 or more, got %d", rounds)
			}
			var res compareResult
			for n := range rounds {
				// --data-dir names the first round's directories, as
				// before --rounds; later rounds get fresh ones beside them.
				duroDir, etcdDir := "", ""
				if env.dataDir != "" {
					duroDir, etcdDir = env.dataDir, env.dataDir+"-etcd"
					if n > 0 {
						duroDir, etcdDir = fmt.Sprintf("%s-%d", duroDir, n+1), fmt.Sprintf("%s-%d", etcdDir, n+1)
					}
				}
				if rounds > 1 {
					fmt.Fprintf(env.stdout, "round %d of %d\n", n+1, rounds)
				}
				var rd compareRound
				if rd.Duro, err = env.runDuro(duroDir, ws, cfg, func(r loadgen.Result) { fmt.Fprintln(env.stderr, "duro", benchRow(r)) }); err != nil {
					return err
				}
				res.DuroShards = env.ranOn
				if rd.Etcd, err = etcdbench.Run(env.ctx, bin, etcdDir, etcdClients, ws, cfg, env.stderr); err != nil {
					return err
				}
				for i, d := range rd.Duro {
					e := rd.Etcd[i]
					rd.Ratio = append(rd.Ratio, ratio{Workload: d.Workload, OpsPerS: div(d.OpsPerS, e.OpsPerS),
						P50: div(d.P50ms, e.P50ms), P99: div(d.P99ms, e.P99ms), P999: div(d.P999ms, e.P999ms)})
				}
				if n == 0 {
					res.compareRound = rd
				}
				if rounds > 1 {
					res.Rounds = append(res.Rounds, rd)
				}
				printCompare(env.stdout, rd, res.DuroShards)
			}
			if rounds > 1 {
				res.MedianRatio = medianRatios(res.Rounds)
				printMedian(env.stdout, res.MedianRatio, rounds)
			}
			return env.writeJSON(res)
		},
	}
	wf.add(cmd)
	cmd.Flags().StringVar(&etcdBin, "etcd", "", "etcd server binary (default: etcd on PATH, installed with apt-get when absent)")
	cmd.Flags().BoolVar(&install, "install-etcd", true, "install Debian's etcd-server with apt-get when etcd is not found")
	cmd.Flags().IntVar(&rounds, "rounds", 1, "run duro then etcd this many times, on fresh clusters each, and print the median of the rounds' ratios too (the machine's speed drifts between runs)")
	cmd.Flags().IntVar(&etcdClients, "etcd-clients", 1, "etcd clients (connections) the callers share; each call picks one at random")
	return cmd
}

func printCompare(w io.Writer, res compareRound, shards int) {
	fmt.Fprintln(w, "WORK    CALLERS  OBJECTS  SYSTEM          OPS/S        P50        P99      P99.9   ERRORS  CAS-RETRIES")
	for i, d := range res.Duro {
		e := res.Etcd[i]
		row := func(sys string, r loadgen.Result, retries string) {
			fmt.Fprintf(w, "%-6s %8d %8d  %-9s %10.0f %8.2fms %8.2fms %8.2fms %8d  %11s\n",
				r.Workload, r.Callers, r.Objects, sys, r.OpsPerS, r.P50ms, r.P99ms, r.P999ms, r.Errors, retries)
		}
		row("duro", d, "-")
		row("etcd", e, fmt.Sprint(e.Retries))
		q := res.Ratio[i]
		fmt.Fprintf(w, "%-6s %8s %8s  %-9s %9.2fx %9.2fx %9.2fx %9.2fx\n", d.Workload, "", "", "duro/etcd", q.OpsPerS, q.P50, q.P99, q.P999)
	}
	fmt.Fprintln(w, "duro/etcd: above 1 is better for OPS/S, below 1 is better for latencies. Both clusters ran on this machine, one after the other.")
	fmt.Fprintf(w, "duro ran %s (Raft groups); etcd is one.\n", shardsWord(shards))
}

func printMedian(w io.Writer, med []ratio, rounds int) {
	fmt.Fprintf(w, "median of %d rounds' ratios (duro/etcd)\n", rounds)
	fmt.Fprintln(w, "WORK        OPS/S        P50        P99      P99.9")
	for _, q := range med {
		fmt.Fprintf(w, "%-6s %9.2fx %9.2fx %9.2fx %9.2fx\n", q.Workload, q.OpsPerS, q.P50, q.P99, q.P999)
	}
}

func shardsWord(n int) string {
	if n == 1 {
		return "1 shard"
	}
	return fmt.Sprintf("%d shards", n)
}

// connect dials endpoints, or a local 3-node cluster it starts first when
// local is set, and waits until every shard answers; stop closes both.
func connect(ctx context.Context, endpoints []string, local bool, dataDir string, stderr io.Writer) (*client.Client, func(), error) {
	env := &benchEnv{ctx: ctx, endpoints: func() []string { return endpoints }, endpointsSet: func() bool { return !local }, stderr: stderr}
	return env.dial(dataDir)
}
