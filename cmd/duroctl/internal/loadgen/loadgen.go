// Package loadgen runs the benchmark workloads of issue #4 against any
// system: a Target turns a workload name into an operation, and Run calls it
// from many goroutines for a fixed time, recording latency and errors. duro
// and etcd share this code so that both are measured the same way.
package loadgen

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Workloads are the workload names in the order they run by default.
var Workloads = []string{"put", "incr", "hot", "seq", "read"}

// Defaults of the issue: 64 callers over 1,000 objects, 64-byte values.
const (
	DefaultCallers = 64
	DefaultObjects = 1000
	ValueBytes     = 64
)

// Op is one call of a workload. It returns an error when the call failed; a
// failed call is counted and not timed.
type Op func(ctx context.Context, rng *rand.Rand) error

// Target prepares workloads on one system.
type Target interface {
	// Prepare returns the operation of workload w over objects objects,
	// after creating whatever it must read (read: every key exists).
	Prepare(ctx context.Context, w string, objects int) (Op, error)
}

// Result is what one workload measured. The JSON names are the stable,
// machine-readable shape of `duroctl bench --json`.
type Result struct {
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
	// Retries counts compare-and-swap conflicts that were retried (etcd
	// incr and hot only).
	Retries int64 `json:"retries,omitempty"`
}

// Shape returns the callers and objects workload w runs with: seq has one
// caller, hot one object.
func Shape(w string, callers, objects int) (int, int) {
	switch w {
	case "seq":
		callers = 1
	case "hot":
		objects = 1
	}
	return callers, objects
}

// ParseWorkloads splits a comma-separated list and rejects unknown names.
func ParseWorkloads(s string) ([]string, error) {
	var out []string
	for _, w := range strings.Split(s, ",") {
		w = strings.TrimSpace(w)
		if w == "" {
			continue
		}
		if !slices.Contains(Workloads, w) {
			return nil, fmt.Errorf("unknown workload %q (want %s)", w, strings.Join(Workloads, ", "))
		}
		out = append(out, w)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no workload given (want some of %s)", strings.Join(Workloads, ", "))
	}
	return out, nil
}

// Config is how long and how hard a workload runs.
type Config struct {
	Callers  int
	Objects  int
	Duration time.Duration
	// CallTimeout bounds each call; default 10 s.
	CallTimeout time.Duration
	// Progress receives a line, rewritten every second, while a workload
	// runs; nil for none.
	Progress io.Writer
}

// RunWorkload prepares workload w on t and runs it.
func RunWorkload(ctx context.Context, t Target, w string, cfg Config) (Result, error) {
	callers, objects := Shape(w, cfg.Callers, cfg.Objects)
	if callers < 1 || objects < 1 {
		return Result{}, fmt.Errorf("%s: callers and objects must be at least 1, got %d and %d", w, callers, objects)
	}
	op, err := t.Prepare(ctx, w, objects)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", w, err)
	}
	r := Run(ctx, w, callers, cfg, op)
	r.Objects = objects
	if rt, ok := t.(interface{ TakeRetries() int64 }); ok {
		r.Retries = rt.TakeRetries()
	}
	return r, ctx.Err()
}

// Run calls op from callers goroutines until cfg.Duration has passed and
// returns throughput and latency percentiles of the calls that succeeded.
func Run(ctx context.Context, name string, callers int, cfg Config, op Op) Result {
	timeout := cfg.CallTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	var (
		mu   sync.Mutex // guards lats
		lats []time.Duration
		ops  atomic.Int64
		errs atomic.Int64
		wg   sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	stop := Progress(cfg.Progress, func() string {
		el := time.Since(start).Seconds()
		return fmt.Sprintf("%s: %4.0fs  %8d ops  %8.0f ops/s  %d errors", name, el, ops.Load(), float64(ops.Load())/el, errs.Load())
	})
	seed := uint64(start.UnixNano())
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), seed))
			local := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, timeout)
				t0 := time.Now()
				err := op(cctx, rng)
				d := time.Since(t0)
				cancel()
				if err != nil {
					errs.Add(1)
					// Do not spin against a system that fails fast.
					time.Sleep(10 * time.Millisecond)
					continue
				}
				local = append(local, d)
				ops.Add(1)
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	stop()
	el := time.Since(start)
	slices.Sort(lats)
	r := Result{Workload: name, Callers: callers, Seconds: el.Seconds(), Ops: ops.Load(), Errors: errs.Load()}
	r.OpsPerS = float64(r.Ops) / el.Seconds()
	r.P50ms, r.P99ms, r.P999ms = Ms(Percentile(lats, 0.50)), Ms(Percentile(lats, 0.99)), Ms(Percentile(lats, 0.999))
	return r
}

// Percentile returns the p-quantile (0 < p < 1) of sorted, the smallest
// value with at least p of the values at or below it; 0 when sorted is empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Ms converts d to fractional milliseconds.
func Ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Progress rewrites line() on w every second until the returned function is
// called, which erases the line. A nil w prints nothing.
func Progress(w io.Writer, line func() string) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		width := 0
		for {
			select {
			case <-done:
				if width > 0 {
					fmt.Fprintf(w, "\r%*s\r", width, "")
				}
				return
			case <-t.C:
				s := line()
				fmt.Fprintf(w, "\r%-*s", width, s)
				width = max(width, len(s))
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// Parallel runs fn(i) for i in [0, n) on workers goroutines, stopping at the
// first error, which it returns. It updates a progress line on w (nil for
// none) labelled what.
func Parallel(ctx context.Context, n, workers int, what string, w io.Writer, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next, done atomic.Int64
		once       sync.Once
		first      error
		wg         sync.WaitGroup
	)
	start := time.Now()
	stop := Progress(w, func() string {
		d := done.Load()
		return fmt.Sprintf("%s: %d/%d (%.0f/s)", what, d, n, float64(d)/time.Since(start).Seconds())
	})
	defer stop()
	for range max(1, min(workers, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}
