package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/duro-io/duro/client"
	"github.com/spf13/cobra"
)

// lifecycleResult is what bench-lifecycle measures.
type lifecycleResult struct {
	Alarms      int `json:"alarms"`
	AlarmsFired int `json:"alarms_fired"`
	AlarmsEarly int `json:"alarms_early"` // fired before their time: must be 0
	// AlarmsLateSet were acknowledged only after they were due (the
	// cluster was slower than --delay); they are left out of the lateness.
	AlarmsLateSet int     `json:"alarms_set_after_due"`
	LatenessP50ms float64 `json:"alarm_lateness_p50_ms"`
	LatenessP99ms float64 `json:"alarm_lateness_p99_ms"`
	LatenessMaxms float64 `json:"alarm_lateness_max_ms"`
	Objects       int     `json:"objects"`
	ColdP50ms     float64 `json:"cold_call_p50_ms"` // first call: activation + read
	ColdP99ms     float64 `json:"cold_call_p99_ms"`
	WarmP50ms     float64 `json:"warm_call_p50_ms"` // the same call again on the active object
	WarmP99ms     float64 `json:"warm_call_p99_ms"`
}

func lifecycleCmd(ctx context.Context, endpoints func() []string, endpointsSet func() bool, stdout, stderr io.Writer) *cobra.Command {
	var (
		alarms, objects, callers int
		delay, spread            time.Duration
		jsonOut                  string
	)
	cmd := &cobra.Command{
		Use:   "bench-lifecycle",
		Short: "measure alarm lateness (p50/p99) and the cost of activating an object",
		Long: "bench-lifecycle sets --alarms alarms on kv objects, due --delay from now spread over\n" +
			"--spread, and reports how late each handler ran (its turn's time minus the alarm's time,\n" +
			"both from the leader's clock). Then it calls Get on --objects objects never used before\n" +
			"(activation) and again (warm), and reports both latencies. Without --endpoints it starts\n" +
			"a local 3-node cluster.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, stop, err := connect(ctx, endpoints(), !endpointsSet(), "", stderr)
			if err != nil {
				return err
			}
			defer stop()
			r, err := measureLifecycle(ctx, c, alarms, objects, callers, delay, spread, stderr)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "alarms: %d set, %d fired, %d early, %d set after due; lateness p50 %.1fms p99 %.1fms max %.1fms\n",
				r.Alarms, r.AlarmsFired, r.AlarmsEarly, r.AlarmsLateSet, r.LatenessP50ms, r.LatenessP99ms, r.LatenessMaxms)
			fmt.Fprintf(stdout, "activation: %d objects; first call p50 %.2fms p99 %.2fms; warm call p50 %.2fms p99 %.2fms\n",
				r.Objects, r.ColdP50ms, r.ColdP99ms, r.WarmP50ms, r.WarmP99ms)
			if jsonOut != "" {
				b, _ := json.MarshalIndent(r, "", "  ")
				if jsonOut == "-" {
					_, err := stdout.Write(append(b, '\n'))
					return err
				}
				return os.WriteFile(jsonOut, append(b, '\n'), 0o644)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&alarms, "alarms", 500, "alarms to set (one per kv object)")
	cmd.Flags().DurationVar(&delay, "delay", 2*time.Second, "how far ahead the first alarm is due")
	cmd.Flags().DurationVar(&spread, "spread", 2*time.Second, "alarms are due evenly at random over this window")
	cmd.Flags().IntVar(&objects, "objects", 500, "objects to activate")
	cmd.Flags().IntVar(&callers, "callers", 8, "concurrent callers")
	cmd.Flags().StringVar(&jsonOut, "json", "", "write the results as JSON to this file ('-' for stdout)")
	return cmd
}

// parallelDo runs fn(i) for i in [0, n) on callers goroutines.
func parallelDo(n, callers int, fn func(i int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs error
	)
	next := make(chan int)
	for range max(callers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if errs == nil {
						errs = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return errs
}

func pctMs(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Microseconds()) / 1000
}

func measureLifecycle(ctx context.Context, c *client.Client, alarms, objects, callers int, delay, spread time.Duration, progress io.Writer) (lifecycleResult, error) {
	r := lifecycleResult{Alarms: alarms, Objects: objects}
	kv := c.Namespace("kv")
	run := time.Now().UnixNano()
	name := func(kind string, i int) string { return fmt.Sprintf("lifecycle-%d-%s-%d", run, kind, i) }

	// Alarms.
	start := time.Now().Add(delay)
	due := make([]time.Time, alarms)
	for i := range due {
		due[i] = start.Add(time.Duration(rand.Int64N(int64(max(spread, time.Millisecond))))).Truncate(time.Millisecond)
	}
	setLate := make([]bool, alarms)
	err := parallelDo(alarms, callers, func(i int) error {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		err := kv.Get(kv.IDFromName(name("alarm", i))).Call(cctx, "SetAlarm", map[string]int64{"at_ms": due[i].UnixMilli()}, nil)
		setLate[i] = time.Now().After(due[i])
		return err
	})
	if err != nil {
		return r, fmt.Errorf("setting alarms: %w", err)
	}
	if time.Now().After(start) {
		fmt.Fprintln(progress, "bench-lifecycle: warning: setting the alarms took longer than --delay; alarms acknowledged after their time are left out of the lateness")
	}
	time.Sleep(time.Until(start.Add(spread)))
	var (
		mu   sync.Mutex
		late []time.Duration
	)
	deadline := time.Now().Add(60 * time.Second)
	err = parallelDo(alarms, callers, func(i int) error {
		for {
			var g struct {
				Value *string `json:"value"`
			}
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			err := kv.Get(kv.IDFromName(name("alarm", i))).Call(cctx, "Get", map[string]string{"key": "_alarm"}, &g)
			cancel()
			if err != nil {
				return err
			}
			if g.Value != nil {
				var rec struct {
					ScheduledNs int64 `json:"scheduled_ns"`
					FiredNs     int64 `json:"fired_ns"`
				}
				if err := json.Unmarshal([]byte(*g.Value), &rec); err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				r.AlarmsFired++
				if rec.FiredNs < rec.ScheduledNs || rec.ScheduledNs != due[i].UnixNano() {
					r.AlarmsEarly++
				}
				if setLate[i] {
					r.AlarmsLateSet++
				} else {
					late = append(late, time.Duration(rec.FiredNs-rec.ScheduledNs))
				}
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("alarm %d did not fire within 60s of its time", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	if err != nil {
		return r, err
	}
	r.LatenessP50ms, r.LatenessP99ms, r.LatenessMaxms = pctMs(late, 0.5), pctMs(late, 0.99), pctMs(late, 1)

	// Activation: the first call to an object activates it on its leader
	// (instance, version read, then the call's read gate); the second finds
	// it active.
	var cold, warm []time.Duration
	err = parallelDo(objects, callers, func(i int) error {
		s := kv.Get(kv.IDFromName(name("act", i)))
		var ds [2]time.Duration
		for k := range ds {
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			t0 := time.Now()
			err := s.Call(cctx, "Get", map[string]string{"key": "k"}, nil)
			ds[k] = time.Since(t0)
			cancel()
			if err != nil {
				return err
			}
		}
		mu.Lock()
		cold, warm = append(cold, ds[0]), append(warm, ds[1])
		mu.Unlock()
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("activation: %w", err)
	}
	r.ColdP50ms, r.ColdP99ms = pctMs(cold, 0.5), pctMs(cold, 0.99)
	r.WarmP50ms, r.WarmP99ms = pctMs(warm, 0.5), pctMs(warm, 0.99)
	return r, nil
}
