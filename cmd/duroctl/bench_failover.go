package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sort"
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

// failoverTrial is one kill of the node leading the most shards.
type failoverTrial struct {
	Killed string `json:"killed"`
	// Shards the killed node led; ShardMs gives, for each, the time from the
	// kill to the first successful call (issued after the process was gone)
	// on that shard, in milliseconds; -1 if none came within the timeout.
	Shards  []int           `json:"shards"`
	ShardMs map[int]float64 `json:"shard_ms"`
	// FailoverMs is the largest of ShardMs: when every affected shard served
	// calls again.
	FailoverMs float64 `json:"failover_ms"`
	// ElectedMs is when (polling Admin.Status every 20 ms) every affected
	// shard had a new leader: the Raft part of FailoverMs. 0 if not seen
	// before every shard served calls.
	ElectedMs float64 `json:"elected_ms"`
	Recovered bool    `json:"recovered"`
	// Calls that returned an error between the kill and the end of the trial
	// (the node restarted and the cluster healthy again).
	FailedCalls        int64 `json:"failed_calls"`
	IndeterminateCalls int64 `json:"indeterminate_calls"`
}

// failoverResult is the JSON of `duroctl bench failover`.
type failoverResult struct {
	Callers int             `json:"callers"`
	Objects int             `json:"objects"`
	Trials  []failoverTrial `json:"trials"`
	// P50Ms and MaxMs are over the trials' FailoverMs.
	P50Ms float64 `json:"p50_ms"`
	MaxMs float64 `json:"max_ms"`
	// ShardP50Ms is the median over every affected shard of every trial.
	ShardP50Ms float64 `json:"shard_p50_ms"`
	// Calls: successful (acknowledged) increments, failed calls, and of those
	// the ones that may have been applied.
	Acknowledged  int64 `json:"acknowledged"`
	FailedCalls   int64 `json:"failed_calls"`
	Indeterminate int64 `json:"indeterminate"`
	// Lost counts counters whose final value is below their acknowledged
	// increments; Extra those above acknowledged + indeterminate. Both must
	// be 0.
	Lost  int `json:"lost"`
	Extra int `json:"extra"`
}

func failoverCmd(env *benchEnv) *cobra.Command {
	var (
		trials, callers, objects int
		settle, timeout          time.Duration
	)
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "under incr load, SIGKILL the node leading the most shards and time until every shard it led serves calls again",
		Long: "failover starts a local 3-node cluster and runs the incr workload. Each trial waits until the\n" +
			"cluster is healthy and the load has run for --settle, SIGKILLs the node that leads the most\n" +
			"shards (from Admin.Status), and measures, for every shard that node led, the time from the\n" +
			"kill to the first successful call issued after the process was gone. It then restarts the\n" +
			"node and waits for health. It reports p50 and max over the trials, the calls that failed,\n" +
			"and checks that no acknowledged increment was lost: every counter's final value is at\n" +
			"least its acknowledged increments and at most that plus the calls that may have applied.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if trials < 1 || callers < 1 || objects < 1 || settle < 0 || timeout <= 0 {
				return fmt.Errorf("--trials, --callers and --objects must be at least 1, --settle not negative, --recovery-timeout positive")
			}
			if env.endpointsSet() {
				return errors.New("bench failover kills processes, so it always runs its own local cluster; drop --endpoints")
			}
			res, err := runFailover(env, trials, callers, objects, settle, timeout)
			if res != nil {
				printFailover(env, res)
				if jerr := env.writeJSON(res); err == nil {
					err = jerr
				}
				if err == nil && (res.Lost > 0 || res.Extra > 0) {
					err = fmt.Errorf("failover: %d counters lost acknowledged increments, %d counted more than was sent", res.Lost, res.Extra)
				}
			}
			return err
		},
	}
	cmd.Flags().IntVar(&trials, "trials", 5, "kills")
	cmd.Flags().IntVar(&callers, "callers", loadgen.DefaultCallers, "concurrent callers of the incr load")
	cmd.Flags().IntVar(&objects, "objects", loadgen.DefaultObjects, "counters, spread evenly over the shards (at least one each)")
	cmd.Flags().DurationVar(&settle, "settle", 3*time.Second, "load time before each kill and before each restart")
	cmd.Flags().DurationVar(&timeout, "recovery-timeout", 30*time.Second, "give up waiting for a shard after this long")
	return cmd
}

// failoverLoad is the incr load with the bookkeeping of the figure.
type failoverLoad struct {
	ids    []duro.ID
	shards []int // shard of each counter

	acked, indet []atomic.Int64 // per counter
	failed       atomic.Int64
	maybe        atomic.Int64 // failed calls that may have applied

	mu       sync.Mutex // guards the fields below
	armed    bool
	issued   time.Time         // calls started at or after this count
	affected map[int]bool      // shards being timed
	firstOK  map[int]time.Time // shard → first success of a call started after issued
	allOK    chan struct{}     // closed when firstOK covers affected
}

func (l *failoverLoad) call(ctx context.Context, ns *client.Namespace, rng *mrand.Rand) {
	i := rng.IntN(len(l.ids))
	t0 := time.Now()
	_, err := ns.Get(l.ids[i]).CallRaw(ctx, "Increment", oneArg)
	t1 := time.Now()
	if err != nil {
		l.failed.Add(1)
		var e *duro.Error
		if !errors.As(err, &e) || !e.Retryable || e.Indeterminate {
			// Anything not known to be unapplied may have applied.
			l.indet[i].Add(1)
			l.maybe.Add(1)
		}
		return
	}
	l.acked[i].Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.shards[i]; l.armed && l.affected[s] && !t0.Before(l.issued) {
		if _, ok := l.firstOK[s]; !ok {
			l.firstOK[s] = t1
			if len(l.firstOK) == len(l.affected) {
				close(l.allOK)
			}
		}
	}
}

func runFailover(env *benchEnv, trials, callers, objects int, settle, timeout time.Duration) (*failoverResult, error) {
	ctx := env.ctx
	cl, err := env.startLocal(env.dataDir, false)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := client.Dial(dctx, cl.Endpoints())
	cancel()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := waitReady(ctx, c); err != nil {
		return nil, err
	}
	ns := c.Namespace("counter")
	// Fresh counters, so each starts at 0.
	var run [6]byte
	rand.Read(run[:])
	// Spread the counters evenly over the shards, so that every shard
	// carries load and its recovery can be seen.
	if objects < c.Shards() {
		return nil, fmt.Errorf("--objects %d: want at least one counter per shard (%d shards)", objects, c.Shards())
	}
	l := &failoverLoad{acked: make([]atomic.Int64, objects), indet: make([]atomic.Int64, objects)}
	per := make([]int, c.Shards())
	quota := func(s int) int {
		if s < objects%len(per) {
			return objects/len(per) + 1
		}
		return objects / len(per)
	}
	for i := 0; len(l.ids) < objects; i++ {
		id := ns.IDFromName(fmt.Sprintf("failover-%s-%d", hex.EncodeToString(run[:]), i))
		if s := duro.ShardOf(id, c.Shards()); per[s] < quota(s) {
			per[s]++
			l.ids = append(l.ids, id)
			l.shards = append(l.shards, s)
		}
	}

	// Stopping the load lets calls in flight finish (each has its own
	// timeout) rather than cancelling them, so that no call fails because
	// the benchmark ended.
	var stopping atomic.Bool
	var wg sync.WaitGroup
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			for !stopping.Load() && ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				l.call(cctx, ns, rng)
				cancel()
			}
		}()
	}
	stop := func() {
		stopping.Store(true)
		wg.Wait()
	}
	defer stop()

	res := &failoverResult{Callers: callers, Objects: objects}
	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	for trial := 1; trial <= trials; trial++ {
		hctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := cl.WaitHealthy(hctx)
		cancel()
		if err != nil {
			return res, err
		}
		if err := sleep(settle); err != nil {
			return res, err
		}
		leaders, err := cl.Leaders(ctx)
		if err != nil {
			return res, err
		}
		var victim *local.Node
		for _, n := range cl.Nodes {
			if victim == nil || len(leaders[n]) > len(leaders[victim]) {
				victim = n
			}
		}
		t := failoverTrial{Killed: victim.ID, Shards: slices.Sorted(slices.Values(leaders[victim])), ShardMs: map[int]float64{}}
		if len(t.Shards) == 0 {
			return res, errors.New("failover: no node leads any shard")
		}
		failed0, maybe0 := l.failed.Load(), l.maybe.Load()
		fmt.Fprintf(env.stderr, "failover: trial %d: SIGKILL %s (pid %d), leader of shards %v\n", trial, victim.ID, victim.PID(), t.Shards)

		l.mu.Lock()
		l.armed, l.issued, l.firstOK, l.allOK = false, time.Time{}, map[int]time.Time{}, make(chan struct{})
		l.affected = map[int]bool{}
		for _, s := range t.Shards {
			l.affected[s] = true
		}
		allOK := l.allOK
		l.mu.Unlock()
		killAt := time.Now()
		victim.Kill() // returns once the process is reaped
		l.mu.Lock()
		l.armed, l.issued = true, time.Now()
		l.mu.Unlock()

		// Meanwhile, poll the survivors for the new leaders, to tell the
		// election apart from the rest of the path to a successful call.
		elected := map[int]time.Time{}
		poll := time.NewTicker(20 * time.Millisecond)
		giveUp := time.After(timeout)
	wait:
		for {
			select {
			case <-allOK:
				t.Recovered = true
				break wait
			case <-giveUp:
				break wait
			case <-ctx.Done():
				poll.Stop()
				return res, ctx.Err()
			case <-poll.C:
				if len(elected) == len(t.Shards) {
					continue
				}
				pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				now, err := cl.Leaders(pctx)
				cancel()
				if err != nil {
					continue
				}
				for _, shards := range now {
					for _, s := range shards {
						if _, ok := elected[s]; !ok && l.affected[s] {
							elected[s] = time.Now()
						}
					}
				}
			}
		}
		poll.Stop()
		for _, s := range t.Shards {
			if at, ok := elected[s]; ok {
				t.ElectedMs = max(t.ElectedMs, loadgen.Ms(at.Sub(killAt)))
			}
		}
		l.mu.Lock()
		l.armed = false
		for _, s := range t.Shards {
			if at, ok := l.firstOK[s]; ok {
				t.ShardMs[s] = loadgen.Ms(at.Sub(killAt))
				t.FailoverMs = max(t.FailoverMs, t.ShardMs[s])
			} else {
				t.ShardMs[s] = -1
			}
		}
		l.mu.Unlock()
		if !t.Recovered {
			t.FailoverMs = loadgen.Ms(timeout)
		}
		fmt.Fprintf(env.stderr, "failover: trial %d: every shard of %s served again after %.0f ms\n", trial, victim.ID, t.FailoverMs)

		if err := sleep(settle); err != nil {
			return res, err
		}
		if err := victim.Start(); err != nil {
			return res, err
		}
		hctx, cancel = context.WithTimeout(ctx, time.Minute)
		err = cl.WaitHealthy(hctx)
		cancel()
		t.FailedCalls, t.IndeterminateCalls = l.failed.Load()-failed0, l.maybe.Load()-maybe0
		res.Trials = append(res.Trials, t)
		if err != nil {
			return res, fmt.Errorf("after restarting %s: %w", victim.ID, err)
		}
	}
	stop()

	// Every call has ended: compare each counter with what was acknowledged.
	var shardMs, trialMs []float64
	for _, t := range res.Trials {
		trialMs = append(trialMs, t.FailoverMs)
		for _, ms := range t.ShardMs {
			shardMs = append(shardMs, ms)
		}
	}
	res.P50Ms, res.MaxMs, res.ShardP50Ms = median(trialMs), slices.Max(trialMs), median(shardMs)
	res.FailedCalls, res.Indeterminate = l.failed.Load(), l.maybe.Load()
	err = loadgen.Parallel(ctx, objects, 16, "failover: reading counters", env.stderr, func(ctx context.Context, i int) error {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		raw, err := ns.Get(l.ids[i]).CallRaw(cctx, "Get", []byte("null"))
		if err != nil {
			return fmt.Errorf("reading counter %d: %w", i, err)
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		if err != nil {
			return fmt.Errorf("counter %d: odd value %q", i, raw)
		}
		acked, indet := l.acked[i].Load(), l.indet[i].Load()
		l.mu.Lock()
		defer l.mu.Unlock()
		res.Acknowledged += acked
		if v < acked {
			res.Lost++
			fmt.Fprintf(env.stderr, "failover: LOST: counter %d is %d after %d acknowledged increments\n", i, v, acked)
		}
		if v > acked+indet {
			res.Extra++
			fmt.Fprintf(env.stderr, "failover: EXTRA: counter %d is %d after %d acknowledged and %d indeterminate increments\n", i, v, acked, indet)
		}
		return nil
	})
	return res, err
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	return s[(len(s)-1)/2]
}

func printFailover(env *benchEnv, res *failoverResult) {
	w := env.stdout
	fmt.Fprintln(w, "TRIAL  KILLED  SHARDS   ELECTED  FAILOVER   SLOWEST-SHARD  FAILED-CALLS  INDETERMINATE")
	for i, t := range res.Trials {
		slow := -1
		for s, ms := range t.ShardMs {
			if slow < 0 || ms > t.ShardMs[slow] || ms < 0 {
				slow = s
			}
		}
		status := fmt.Sprintf("%7.0fms", t.FailoverMs)
		if !t.Recovered {
			status = "NOT RECOVERED"
		}
		fmt.Fprintf(w, "%5d  %-6s  %6d  %6.0fms  %9s  %13d  %12d  %13d\n", i+1, t.Killed, len(t.Shards), t.ElectedMs, status, slow, t.FailedCalls, t.IndeterminateCalls)
	}
	fmt.Fprintf(w, "failover over %d trials: p50 %.0f ms, max %.0f ms (per shard p50 %.0f ms); %d callers on %d counters\n",
		len(res.Trials), res.P50Ms, res.MaxMs, res.ShardP50Ms, res.Callers, res.Objects)
	fmt.Fprintln(w, "ELECTED: every shard of the killed node had a new leader (Admin.Status polled every 20 ms); FAILOVER: every one served a call issued after the kill.")
	fmt.Fprintf(w, "calls: %d acknowledged, %d failed (%d may have applied); lost acknowledged increments: %d counters; over-counted: %d counters\n",
		res.Acknowledged, res.FailedCalls, res.Indeterminate, res.Lost, res.Extra)
}
