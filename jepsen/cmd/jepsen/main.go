// Command jepsen runs duro's chaos cases (CHAOS.md) against real durod
// processes in network namespaces. It needs root.
//
//	go run ./jepsen/cmd/jepsen --case T05
//	go run ./jepsen/cmd/jepsen --nodes 5 --time 60s --workload register --nemesis partition-halves
//	go run ./jepsen/cmd/jepsen --smoke
//	go run ./jepsen/cmd/jepsen --matrix --nodes 3
//
// Each run writes jepsen/store/<time>-<name>/; a summary table prints at the
// end and the exit status is 1 if any case found an anomaly.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/duro-io/duro/jepsen/nemesis"
	"github.com/duro-io/duro/jepsen/run"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first Ctrl-C stops the runs, which heal and clean up; a
		// second one kills the harness (the nodes die with it, and the next
		// run removes the namespaces).
		<-sigs
		fmt.Fprintln(os.Stderr, "jepsen: interrupted; cleaning up (Ctrl-C again to abort)")
		signal.Reset(os.Interrupt, syscall.SIGTERM)
		cancel()
	}()
	code := realMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}

func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := run.DefaultOptions()
	o.Out = stdout
	fs := flag.NewFlagSet("jepsen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.Nodes, "nodes", o.Nodes, "cluster size, 3 or 5 (cases that need 5 use 5)")
	fs.DurationVar(&o.Time, "time", o.Time, "workload time per case")
	fs.StringVar(&o.Binary, "binary", o.Binary, "durod binary (built when missing)")
	fs.StringVar(&o.Store, "store", o.Store, "directory for run outputs")
	fs.IntVar(&o.Shards, "shards", o.Shards, "shards in the cluster")
	fs.IntVar(&o.Workers, "workers", o.Workers, "concurrent clients (at most 10 per object)")
	fs.Float64Var(&o.Rate, "rate", o.Rate, "target calls per second over all clients")
	fs.DurationVar(&o.CallTimeout, "call-timeout", o.CallTimeout, "SDK deadline per call")
	fs.DurationVar(&o.Recovery, "recovery", o.Recovery, "convergence wait after the final heal (G-2)")
	fs.StringVar(&o.Bug, "bug", "", "negative control: definite-on-lost (the run must come out invalid)")
	seed := fs.Uint64("seed", 0, "random seed (0: from the clock); logged so a run replays")
	cases := fs.String("case", "", "comma-separated cases: T-numbers (T05), CHAOS names, or <workload>-<nemesis>")
	workload := fs.String("workload", "", "workload: "+strings.Join(run.Workloads, ", ")+" (with --nemesis)")
	nem := fs.String("nemesis", "", "nemesis: "+strings.Join(nemesis.Names, ", ")+"; a+b mixes")
	smoke := fs.Bool("smoke", false, "run the smoke subset (≤ 3 min): "+strings.Join(run.Smoke, ", "))
	matrix := fs.Bool("matrix", false, "run every workload × nemesis")
	chaos := fs.Bool("chaos-cases", false, "run every numbered CHAOS.md case")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *seed != 0 {
		o.Seed = *seed
	}
	if o.Nodes != 3 && o.Nodes != 5 {
		fmt.Fprintf(stderr, "jepsen: --nodes must be 3 or 5, got %d\n", o.Nodes)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "jepsen: needs root (network namespaces, nftables)")
		return 2
	}

	var todo []run.Case
	switch {
	case *smoke:
		for _, n := range run.Smoke {
			c, err := run.Lookup(n, o.Nodes)
			if err != nil {
				fmt.Fprintln(stderr, "jepsen:", err)
				return 2
			}
			todo = append(todo, c)
		}
	case *matrix:
		todo = run.Matrix(o.Nodes)
	case *chaos:
		todo = run.Cases
	case *cases != "":
		for _, n := range strings.Split(*cases, ",") {
			c, err := run.Lookup(strings.TrimSpace(n), o.Nodes)
			if err != nil {
				fmt.Fprintln(stderr, "jepsen:", err)
				return 2
			}
			todo = append(todo, c)
		}
	case *workload != "" && *nem != "":
		todo = []run.Case{{Name: *workload + "-" + *nem, Workload: *workload, Nemesis: *nem, Shard: -1}}
	default:
		fmt.Fprintln(stderr, "jepsen: say what to run: --case, --workload with --nemesis, --smoke, --matrix or --chaos-cases")
		fs.Usage()
		return 2
	}
	if _, err := os.Stat(o.Binary); err != nil {
		fmt.Fprintf(stdout, "building %s\n", o.Binary)
		cmd := exec.Command("go", "build", "-o", o.Binary, "./cmd/durod")
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(stderr, "jepsen: build durod:", err)
			return 2
		}
	}

	var sums []run.Summary
	for i, c := range todo {
		if ctx.Err() != nil {
			break
		}
		o2 := o
		o2.Seed = o.Seed + uint64(i)
		sums = append(sums, run.Run(ctx, o2, c))
	}
	return report(stdout, sums, ctx.Err() != nil)
}

func report(w io.Writer, sums []run.Summary, interrupted bool) int {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CASE\tNODES\tVALID\tOPS\tOK\tFAIL\tINFO\tFAULTS\tANOMALIES\tTIME\tDIR")
	code := 0
	for _, s := range sums {
		valid := "yes"
		if !s.Valid {
			valid, code = "NO", 1
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", s.Case, s.Nodes, valid, s.Ops, s.Ok, s.Fail, s.Info,
			s.Faults, s.Anomalies, s.Elapsed.Round(time.Second), s.Dir)
		if s.Error != "" {
			fmt.Fprintf(tw, "\terror: %s\n", s.Error)
		}
	}
	tw.Flush()
	if interrupted {
		fmt.Fprintln(w, "interrupted")
		code = 1
	}
	return code
}
