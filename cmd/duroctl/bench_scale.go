package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/client"
	"github.com/duro-io/duro/cmd/duroctl/internal/loadgen"
	"github.com/duro-io/duro/cmd/duroctl/internal/local"
	"github.com/spf13/cobra"
)

// scaleNode is one node's memory before and after activating the objects.
type scaleNode struct {
	Node string `json:"node"`
	// VmRSS from /proc/<pid>/status, after a forced GC.
	RSSBefore int64 `json:"rss_before"`
	RSSAfter  int64 `json:"rss_after"`
	// go_memstats_heap_inuse_bytes, after the same GC.
	HeapBefore int64 `json:"heap_inuse_before"`
	HeapAfter  int64 `json:"heap_inuse_after"`
	// duro_objects_active.
	ActiveBefore int64 `json:"active_before"`
	ActiveAfter  int64 `json:"active_after"`
}

// scaleResult is the JSON of `duroctl bench scale`.
type scaleResult struct {
	Objects       int     `json:"objects"`
	CreateSeconds float64 `json:"create_seconds"`
	CreatePerS    float64 `json:"create_per_s"`
	// FailedCreates counts create calls that failed and were tried again.
	FailedCreates int64 `json:"failed_creates"`
	// du of the three nodes' data directories after creating the objects;
	// per object, and per object and replica (divided by the node count).
	DiskBytes                 int64   `json:"disk_bytes"`
	DiskBytesPerObject        float64 `json:"disk_bytes_per_object"`
	DiskBytesPerObjectReplica float64 `json:"disk_bytes_per_object_replica"`
	// Memory with Active objects activated after a restart of every node:
	// deltas summed over the nodes, divided by the objects that became
	// active.
	Activated               int         `json:"activated"`
	Active                  int64       `json:"active"`
	Nodes                   []scaleNode `json:"nodes"`
	RSSBytesPerActiveObject float64     `json:"rss_bytes_per_active_object"`
	HeapBytesPerActiveObj   float64     `json:"heap_bytes_per_active_object"`
	// Latency of kv.Get from one caller: the first call to an object that
	// is not active (Cold) and the next call to the same object (Warm).
	Sample    int     `json:"sample"`
	ColdP50ms float64 `json:"cold_p50_ms"`
	ColdP99ms float64 `json:"cold_p99_ms"`
	WarmP50ms float64 `json:"warm_p50_ms"`
	WarmP99ms float64 `json:"warm_p99_ms"`
}

func scaleCmd(env *benchEnv) *cobra.Command {
	var objects, active, sample, callers int
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "create many objects with one key each; report disk per object, memory per active object and activation latency",
		Long: "scale starts a local 3-node cluster with its HTTP listeners on and creates --objects kv objects\n" +
			"with one 64-byte key each (--callers at a time), then reports the disk bytes per object (du of\n" +
			"the data directories / objects). It restarts every node so nothing is in memory, measures\n" +
			"kv.Get latency from one caller on --sample objects that are not active (cold: activation)\n" +
			"and again on the same objects (warm), activates objects up to --active in all, and reports\n" +
			"each node's VmRSS and Go heap in use before and after (both after a forced GC) and the\n" +
			"per-object cost: the summed delta divided by the objects active. The issue's figure is\n" +
			"--objects 1000000 --active 100000.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if objects < 1 || active < 1 || sample < 1 || callers < 1 || active > objects || sample > active {
				return fmt.Errorf("want 1 <= --sample <= --active <= --objects and --callers >= 1, got %d, %d, %d, %d", sample, active, objects, callers)
			}
			if env.endpointsSet() {
				return errors.New("bench scale restarts processes and reads their memory, so it always runs its own local cluster; drop --endpoints")
			}
			res, err := runScale(env, objects, active, sample, callers)
			if res != nil {
				printScale(env.stdout, res)
				if jerr := env.writeJSON(res); err == nil {
					err = jerr
				}
			}
			return err
		},
	}
	cmd.Flags().IntVar(&objects, "objects", 100000, "objects to create (the issue's figure: 1000000)")
	cmd.Flags().IntVar(&active, "active", 100000, "objects to activate for the memory figure (at most --objects)")
	cmd.Flags().IntVar(&sample, "sample", 1000, "objects whose cold and warm call latency is measured (part of --active)")
	cmd.Flags().IntVar(&callers, "callers", loadgen.DefaultCallers, "concurrent callers while creating and activating")
	return cmd
}

func runScale(env *benchEnv, objects, active, sample, callers int) (*scaleResult, error) {
	ctx := env.ctx
	// No idle eviction during the run and room for every active object, so
	// the figure counts what activation costs, not what the cap allows.
	cl, err := env.startLocal(env.dataDir, true, "--idle-timeout", "24h", "--max-active", fmt.Sprint(2*active+1000))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	dial := func() (*client.Client, error) {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		c, err := client.Dial(dctx, cl.Endpoints())
		if err != nil {
			return nil, err
		}
		if err := waitReady(ctx, c); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	c, err := dial()
	if err != nil {
		return nil, err
	}
	kv := c.Namespace("kv")
	id := func(i int) duro.ID { return kv.IDFromName("scale-" + strconv.Itoa(i)) }

	res := &scaleResult{Objects: objects, Sample: sample}
	start := time.Now()
	// A Put is idempotent, so a call that failed (even one that may have
	// applied) is tried again, up to 3 times; the failures are reported.
	var failedCreates atomic.Int64
	err = loadgen.Parallel(ctx, objects, callers, "scale: creating objects", env.stderr, func(ctx context.Context, i int) error {
		var err error
		for range 3 {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, err = kv.Get(id(i)).CallRaw(cctx, "Put", putArg)
			cancel()
			if err == nil || ctx.Err() != nil {
				break
			}
			failedCreates.Add(1)
			fmt.Fprintf(env.stderr, "\nscale: creating object %d failed, trying again: %v\n", i, err)
		}
		if err != nil {
			return fmt.Errorf("creating object %d: %w", i, err)
		}
		return nil
	})
	res.FailedCreates = failedCreates.Load()
	c.Close()
	if err != nil {
		return nil, err
	}
	res.CreateSeconds = time.Since(start).Seconds()
	res.CreatePerS = float64(objects) / res.CreateSeconds
	fmt.Fprintf(env.stderr, "scale: created %d objects in %.0f s (%.0f/s)\n", objects, res.CreateSeconds, res.CreatePerS)
	for _, n := range cl.Nodes {
		b, err := local.DiskBytes(n.DataDir)
		if err != nil {
			return nil, err
		}
		res.DiskBytes += b
	}
	res.DiskBytesPerObject = float64(res.DiskBytes) / float64(objects)
	res.DiskBytesPerObjectReplica = res.DiskBytesPerObject / float64(len(cl.Nodes))

	// Restart every node: nothing active, memory as after a fresh start.
	fmt.Fprintln(env.stderr, "scale: restarting every node")
	var wg sync.WaitGroup
	for _, n := range cl.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.Stop() }()
	}
	wg.Wait()
	for _, n := range cl.Nodes {
		if err := n.Start(); err != nil {
			return res, err
		}
	}
	hctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = cl.WaitHealthy(hctx)
	cancel()
	if err != nil {
		return res, err
	}
	if c, err = dial(); err != nil {
		return res, err
	}
	defer c.Close()
	kv = c.Namespace("kv")
	fmt.Fprintln(env.stderr, "scale: healthy again; measuring")
	before, err := scaleMemory(ctx, cl)
	if err != nil {
		return res, err
	}

	// Cold, then warm, from one caller: latency without queueing.
	get := func(ctx context.Context, i int) (time.Duration, error) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		t0 := time.Now()
		raw, err := kv.Get(id(i)).CallRaw(cctx, "Get", getArg)
		if err == nil && !strings.Contains(string(raw), `"found":true`) {
			err = fmt.Errorf("object %d lost its key: %s", i, raw)
		}
		return time.Since(t0), err
	}
	var cold, warm []time.Duration
	for _, lats := range []*[]time.Duration{&cold, &warm} {
		for i := range sample {
			d, err := get(ctx, i)
			if err != nil {
				return res, err
			}
			*lats = append(*lats, d)
		}
	}
	slices.Sort(cold)
	slices.Sort(warm)
	res.ColdP50ms, res.ColdP99ms = loadgen.Ms(loadgen.Percentile(cold, 0.5)), loadgen.Ms(loadgen.Percentile(cold, 0.99))
	res.WarmP50ms, res.WarmP99ms = loadgen.Ms(loadgen.Percentile(warm, 0.5)), loadgen.Ms(loadgen.Percentile(warm, 0.99))

	err = loadgen.Parallel(ctx, active-sample, callers, "scale: activating objects", env.stderr, func(ctx context.Context, i int) error {
		_, err := get(ctx, sample+i)
		return err
	})
	if err != nil {
		return res, err
	}
	res.Activated = active
	after, err := scaleMemory(ctx, cl)
	if err != nil {
		return res, err
	}
	var dRSS, dHeap int64
	for i, n := range cl.Nodes {
		b, a := before[i], after[i]
		res.Nodes = append(res.Nodes, scaleNode{Node: n.ID, RSSBefore: b.rss, RSSAfter: a.rss, HeapBefore: b.heap, HeapAfter: a.heap,
			ActiveBefore: b.active, ActiveAfter: a.active})
		dRSS += a.rss - b.rss
		dHeap += a.heap - b.heap
		res.Active += a.active - b.active
	}
	if res.Active > 0 {
		res.RSSBytesPerActiveObject = float64(dRSS) / float64(res.Active)
		res.HeapBytesPerActiveObj = float64(dHeap) / float64(res.Active)
	}
	return res, nil
}

type memSample struct{ rss, heap, active int64 }

// scaleMemory forces a GC on every node (pprof's heap?gc=1), waits a moment,
// and reads VmRSS, the heap in use and the active objects.
func scaleMemory(ctx context.Context, cl *local.Cluster) ([]memSample, error) {
	hc := &http.Client{Timeout: 30 * time.Second}
	fetch := func(url string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	for _, n := range cl.Nodes {
		if _, err := fetch("http://" + n.HTTP + "/debug/pprof/heap?gc=1"); err != nil {
			return nil, err
		}
	}
	// The Go runtime returns freed memory to the OS gradually: wait until
	// every node's VmRSS has held within 1 MiB for 3 s (at most 30 s).
	rss := make([]int64, len(cl.Nodes))
	for stable, start := 0, time.Now(); stable < 3 && time.Since(start) < 30*time.Second; {
		time.Sleep(time.Second)
		stable++
		for i, n := range cl.Nodes {
			v, err := n.RSS()
			if err != nil {
				return nil, err
			}
			if d := v - rss[i]; d > 1<<20 || d < -(1<<20) {
				stable = 0
			}
			rss[i] = v
		}
	}
	var out []memSample
	for i, n := range cl.Nodes {
		m := memSample{rss: rss[i]}
		body, err := fetch("http://" + n.HTTP + "/metrics")
		if err != nil {
			return nil, err
		}
		vals := metricValues(body, "go_memstats_heap_inuse_bytes", "duro_objects_active")
		var ok bool
		if m.heap, ok = vals["go_memstats_heap_inuse_bytes"]; !ok {
			return nil, fmt.Errorf("%s: /metrics has no go_memstats_heap_inuse_bytes", n.ID)
		}
		if m.active, ok = vals["duro_objects_active"]; !ok {
			return nil, fmt.Errorf("%s: /metrics has no duro_objects_active (durod too old?)", n.ID)
		}
		out = append(out, m)
	}
	return out, nil
}

// metricValues reads unlabelled samples of the named metrics from a
// Prometheus text exposition.
func metricValues(body []byte, names ...string) map[string]int64 {
	out := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || !slices.Contains(names, f[0]) {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[f[0]] = int64(v)
		}
	}
	return out
}

func printScale(w io.Writer, r *scaleResult) {
	fmt.Fprintf(w, "objects created: %d in %.0f s (%.0f/s), one 64-byte key each; %d create calls failed and were tried again\n",
		r.Objects, r.CreateSeconds, r.CreatePerS, r.FailedCreates)
	fmt.Fprintf(w, "disk: %d bytes in all = %.0f bytes/object (%.0f per object per replica)\n", r.DiskBytes, r.DiskBytesPerObject, r.DiskBytesPerObjectReplica)
	if len(r.Nodes) == 0 {
		return
	}
	fmt.Fprintln(w, "NODE   ACTIVE-BEFORE  ACTIVE-AFTER   RSS-BEFORE    RSS-AFTER  HEAP-BEFORE   HEAP-AFTER")
	for _, n := range r.Nodes {
		fmt.Fprintf(w, "%-5s  %13d  %12d  %9.1fMiB %9.1fMiB  %9.1fMiB  %9.1fMiB\n", n.Node, n.ActiveBefore, n.ActiveAfter,
			mib(n.RSSBefore), mib(n.RSSAfter), mib(n.HeapBefore), mib(n.HeapAfter))
	}
	fmt.Fprintf(w, "memory per active object (%d activated, %d newly active): RSS %.0f bytes, Go heap in use %.0f bytes\n",
		r.Activated, r.Active, r.RSSBytesPerActiveObject, r.HeapBytesPerActiveObj)
	fmt.Fprintf(w, "kv.Get latency, one caller, %d objects: cold (activation) p50 %.2f ms p99 %.2f ms; warm p50 %.2f ms p99 %.2f ms\n",
		r.Sample, r.ColdP50ms, r.ColdP99ms, r.WarmP50ms, r.WarmP99ms)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
