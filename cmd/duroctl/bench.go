package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/duro-io/duro/client"
	"github.com/spf13/cobra"
)

type benchResult struct {
	Workload string  `json:"workload"`
	Callers  int     `json:"callers"`
	Objects  int     `json:"objects"`
	Seconds  float64 `json:"seconds"`
	Ops      int64   `json:"ops"`
	Errors   int64   `json:"errors"`
	OpsPerS  float64 `json:"ops_per_s"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	P999ms   float64 `json:"p999_ms"`
}

func benchCmd(ctx context.Context, endpoints func() []string, endpointsSet func() bool, stdout, stderr io.Writer) *cobra.Command {
	var (
		workloads string
		callers   int
		objects   int
		duration  time.Duration
		jsonOut   string
		dataDir   string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "run workloads (put, incr, hot, seq, read) through the SDK and print ops/s and latency",
		Long: "bench runs each workload for --duration. Without --endpoints it starts a local 3-node\n" +
			"cluster (fsync on) from the durod binary next to duroctl, in a temporary directory.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, stop, err := connect(ctx, endpoints(), !endpointsSet(), dataDir, stderr)
			if err != nil {
				return err
			}
			defer stop()
			var results []benchResult
			fmt.Fprintf(stdout, "%-6s %8s %8s %10s %9s %9s %9s %7s\n", "WORK", "CALLERS", "OBJECTS", "OPS/S", "P50", "P99", "P99.9", "ERRORS")
			for _, w := range strings.Split(workloads, ",") {
				r, err := runWorkload(ctx, c, strings.TrimSpace(w), callers, objects, duration, stderr)
				if err != nil {
					return err
				}
				results = append(results, r)
				fmt.Fprintf(stdout, "%-6s %8d %8d %10.0f %8.1fms %8.1fms %8.1fms %7d\n", r.Workload, r.Callers, r.Objects, r.OpsPerS, r.P50ms, r.P99ms, r.P999ms, r.Errors)
			}
			if jsonOut != "" {
				b, _ := json.MarshalIndent(results, "", "  ")
				if jsonOut == "-" {
					_, err = stdout.Write(append(b, '\n'))
					return err
				}
				return os.WriteFile(jsonOut, append(b, '\n'), 0o644)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&workloads, "workloads", "put,incr,hot,seq,read", "comma-separated workloads")
	cmd.Flags().IntVar(&callers, "callers", 64, "concurrent callers (seq always uses 1)")
	cmd.Flags().IntVar(&objects, "objects", 1000, "objects (hot always uses 1)")
	cmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "time per workload")
	cmd.Flags().StringVar(&jsonOut, "json", "", "write results as JSON to this file ('-' for stdout)")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "data directory of the local cluster (default: a temporary one)")
	return cmd
}

// connect dials endpoints, or a local 3-node cluster it starts first when
// local is set, and waits until every shard answers; stop closes both.
func connect(ctx context.Context, endpoints []string, local bool, dataDir string, stderr io.Writer) (*client.Client, func(), error) {
	stopCluster := func() {}
	if local {
		stop, addrs, err := startLocalCluster(ctx, dataDir, stderr)
		if err != nil {
			return nil, nil, err
		}
		stopCluster, endpoints = stop, addrs
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := client.Dial(dctx, endpoints)
	cancel()
	if err != nil {
		stopCluster()
		return nil, nil, err
	}
	stop := func() { c.Close(); stopCluster() }
	if err := waitReady(ctx, c); err != nil {
		stop()
		return nil, nil, err
	}
	return c, stop, nil
}

func waitReady(ctx context.Context, c *client.Client) error {
	ns := c.Namespace("counter")
	for i := 0; i < c.Shards()*4; i++ {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := ns.Get(ns.IDFromName(fmt.Sprintf("bench-ready-%d", i))).Call(cctx, "Get", nil, nil)
		cancel()
		if err != nil {
			return fmt.Errorf("cluster not ready: %w", err)
		}
	}
	return nil
}

func runWorkload(ctx context.Context, c *client.Client, w string, callers, objects int, d time.Duration, progress io.Writer) (benchResult, error) {
	r := benchResult{Workload: w, Callers: callers, Objects: objects}
	var op func(ctx context.Context, caller int, rng *rand.Rand) error
	kv, ctr := c.Namespace("kv"), c.Namespace("counter")
	value := strings.Repeat("v", 64)
	switch w {
	case "put":
		op = func(ctx context.Context, _ int, rng *rand.Rand) error {
			i := rng.IntN(objects)
			return kv.Get(kv.IDFromName(fmt.Sprintf("o%d", i))).Call(ctx, "Put", map[string]string{"key": "k", "value": value}, nil)
		}
	case "incr":
		op = func(ctx context.Context, _ int, rng *rand.Rand) error {
			return ctr.Get(ctr.IDFromName(fmt.Sprintf("c%d", rng.IntN(objects)))).Call(ctx, "Increment", 1, nil)
		}
	case "hot":
		r.Objects = 1
		hot := ctr.Get(ctr.IDFromName("hot"))
		op = func(ctx context.Context, _ int, _ *rand.Rand) error { return hot.Call(ctx, "Increment", 1, nil) }
	case "seq":
		r.Callers = 1
		op = func(ctx context.Context, _ int, rng *rand.Rand) error {
			return kv.Get(kv.IDFromName(fmt.Sprintf("o%d", rng.IntN(objects)))).Call(ctx, "Put", map[string]string{"key": "k", "value": value}, nil)
		}
	case "read":
		// Make sure the keys exist first.
		for i := 0; i < objects; i++ {
			if err := kv.Get(kv.IDFromName(fmt.Sprintf("o%d", i))).Call(ctx, "Put", map[string]string{"key": "k", "value": value}, nil); err != nil {
				return r, fmt.Errorf("read: preparing keys: %w", err)
			}
		}
		op = func(ctx context.Context, _ int, rng *rand.Rand) error {
			return kv.Get(kv.IDFromName(fmt.Sprintf("o%d", rng.IntN(objects)))).Call(ctx, "Get", map[string]string{"key": "k"}, nil)
		}
	default:
		return r, fmt.Errorf("unknown workload %q (want put, incr, hot, seq or read)", w)
	}
	var (
		mu   sync.Mutex // guards lats
		lats []time.Duration
		ops  atomic.Int64
		errs atomic.Int64
		wg   sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				fmt.Fprintf(progress, "\r%*s\r", 60, "")
				return
			case <-t.C:
				el := time.Since(start).Seconds()
				fmt.Fprintf(progress, "\r%s: %4.0fs  %8d ops  %8.0f ops/s  %d errors", w, el, ops.Load(), float64(ops.Load())/el, errs.Load())
			}
		}
	}()
	for i := 0; i < r.Callers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			local := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				t0 := time.Now()
				err := op(cctx, i, rng)
				cancel()
				if err != nil {
					errs.Add(1)
					continue
				}
				local = append(local, time.Since(t0))
				ops.Add(1)
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	close(stopProgress)
	el := time.Since(start)
	slices.Sort(lats)
	pct := func(p float64) float64 {
		if len(lats) == 0 {
			return 0
		}
		return float64(lats[min(len(lats)-1, int(p*float64(len(lats))))].Microseconds()) / 1000
	}
	r.Seconds, r.Ops, r.Errors = el.Seconds(), ops.Load(), errs.Load()
	r.OpsPerS = float64(r.Ops) / el.Seconds()
	r.P50ms, r.P99ms, r.P999ms = pct(0.50), pct(0.99), pct(0.999)
	return r, nil
}

// startLocalCluster starts 3 durod processes on free loopback ports.
func startLocalCluster(ctx context.Context, dir string, stderr io.Writer) (func(), []string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	durod := filepath.Join(filepath.Dir(self), "durod")
	if _, err := os.Stat(durod); err != nil {
		if p, lerr := exec.LookPath("durod"); lerr == nil {
			durod = p
		} else {
			return nil, nil, fmt.Errorf("bench: durod not found next to duroctl (%s) or on PATH; build it (make build) or pass --endpoints", durod)
		}
	}
	tmp := dir == ""
	if tmp {
		if dir, err = os.MkdirTemp("", "duro-bench-*"); err != nil {
			return nil, nil, err
		}
	}
	var addrs, peers []string
	for i := 1; i <= 3; i++ {
		a, err := freeAddr()
		if err != nil {
			return nil, nil, err
		}
		addrs = append(addrs, a)
		peers = append(peers, fmt.Sprintf("n%d=%s", i, a))
	}
	var procs []*exec.Cmd
	stop := func() {
		for _, p := range procs {
			p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			p.Wait()
		}
		if tmp {
			os.RemoveAll(dir)
		}
	}
	for i, a := range addrs {
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("n%d.log", i+1)))
		if err != nil {
			stop()
			return nil, nil, err
		}
		p := exec.Command(durod, "--node-id", fmt.Sprintf("n%d", i+1), "--data-dir", filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			"--listen", a, "--http", "", "--peers", strings.Join(peers, ","), "--log-level", "warn")
		p.Stdout, p.Stderr = logf, logf
		if err := p.Start(); err != nil {
			stop()
			return nil, nil, err
		}
		procs = append(procs, p)
	}
	fmt.Fprintf(stderr, "bench: local 3-node cluster on %s (data in %s)\n", strings.Join(addrs, ","), dir)
	return stop, addrs, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
