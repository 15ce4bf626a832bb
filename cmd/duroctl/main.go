// Command duroctl is duro's command-line client: cluster status and object
// calls.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/client"
	"github.com/duro-io/duro/rpc/pb"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ee exitError
		if !errors.As(err, &ee) {
			fmt.Fprintln(os.Stderr, "duroctl:", err)
		}
		os.Exit(1)
	}
}

// exitError is an error already reported to the user.
type exitError struct{ error }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var endpoints string
	var timeout time.Duration
	root := &cobra.Command{
		Use:           "duroctl",
		Short:         "duroctl talks to a duro cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&endpoints, "endpoints", envOr("DURO_ENDPOINTS", "127.0.0.1:7071"), "comma-separated node addresses (env DURO_ENDPOINTS)")
	root.PersistentFlags().DurationVar(&timeout, "timeout", 30*time.Second, "deadline of the whole command")
	eps := func() []string {
		var out []string
		for _, e := range strings.Split(endpoints, ",") {
			if e = strings.TrimSpace(e); e != "" {
				out = append(out, e)
			}
		}
		return out
	}

	status := &cobra.Command{
		Use:   "status",
		Short: "print nodes, shards and leaders; exit 0 only when every shard has a leader",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			return printStatus(ctx, eps(), stdout)
		},
	}
	call := &cobra.Command{
		Use:   "call <namespace> <name> <method> [json-arg]",
		Short: "call a method of the object named <name> (or with ID <name>) and print the JSON result",
		Args:  cobra.RangeArgs(3, 4),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			arg := json.RawMessage("null")
			if len(a) == 4 {
				if !json.Valid([]byte(a[3])) {
					fmt.Fprintf(stderr, "duroctl: json-arg is not valid JSON: %s\n", a[3])
					return exitError{errors.New("bad json")}
				}
				arg = json.RawMessage(a[3])
			}
			c, err := client.Dial(ctx, eps())
			if err != nil {
				return err
			}
			defer c.Close()
			ns := c.Namespace(a[0])
			id := ns.IDFromName(a[1])
			if len(a[1]) == 2*duro.IDLen {
				if parsed, err := ns.IDFromString(a[1]); err == nil {
					id = parsed
				}
			}
			reply, err := ns.Get(id).CallRaw(ctx, a[2], arg)
			if err != nil {
				fmt.Fprintln(stderr, "duroctl: "+describe(err))
				return exitError{err}
			}
			fmt.Fprintln(stdout, string(reply))
			return nil
		},
	}
	endpointsSet := func() bool {
		return root.PersistentFlags().Changed("endpoints") || os.Getenv("DURO_ENDPOINTS") != ""
	}
	root.AddCommand(status, call, benchCmd(ctx, eps, endpointsSet, stdout, stderr),
		lifecycleCmd(ctx, eps, endpointsSet, stdout, stderr))
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

func describe(err error) string {
	var e *duro.Error
	if !errors.As(err, &e) {
		return err.Error()
	}
	s := e.Code.String() + ": " + e.Message
	switch {
	case e.Indeterminate:
		s += " (indeterminate: the call may have been applied)"
	case e.Retryable:
		s += " (retryable: the call was not applied)"
	}
	return s
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func printStatus(ctx context.Context, endpoints []string, w io.Writer) error {
	type nodeView struct {
		st  *pb.StatusResponse
		err error
	}
	views := map[string]nodeView{}
	var nodes []string
	seen := map[string]bool{}
	queue := append([]string{}, endpoints...)
	for len(queue) > 0 {
		addr := queue[0]
		queue = queue[1:]
		if seen[addr] {
			continue
		}
		seen[addr] = true
		nodes = append(nodes, addr)
		st, err := fetchStatus(ctx, addr)
		views[addr] = nodeView{st, err}
		if err == nil {
			for _, n := range st.Nodes {
				queue = append(queue, n.Addr)
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tSTATE\tLEADS")
	shardLeader := map[int32]string{}
	nshards := int32(0)
	for _, addr := range nodes {
		v := views[addr]
		if v.err != nil {
			fmt.Fprintf(tw, "?\t%s\tunreachable: %v\t-\n", addr, shortErr(v.err))
			continue
		}
		nshards = max(nshards, v.st.Shards)
		leads := 0
		for _, s := range v.st.Shard {
			if s.State == "Leader" {
				leads++
				shardLeader[s.Id] = v.st.NodeId
			}
		}
		fmt.Fprintf(tw, "%s\t%s\tup\t%d\n", v.st.NodeId, addr, leads)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tLEADER\tTERM\tAPPLIED\tVOTERS")
	missing := 0
	ids := make([]int, 0, nshards)
	for i := int32(0); i < nshards; i++ {
		ids = append(ids, int(i))
	}
	sort.Ints(ids)
	for _, i := range ids {
		leader := shardLeader[int32(i)]
		var term, applied uint64
		var voters []string
		for _, addr := range nodes {
			v := views[addr]
			if v.err != nil || i >= len(v.st.Shard) {
				continue
			}
			s := v.st.Shard[i]
			if s.Term > term {
				term = s.Term
			}
			if s.Applied > applied {
				applied = s.Applied
			}
			voters = s.Voters
		}
		if leader == "" {
			leader = "NONE"
			missing++
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\n", i, leader, term, applied, strings.Join(voters, ","))
	}
	tw.Flush()
	printFailedAlarms(w, nodes, func(addr string) *pb.StatusResponse { return views[addr].st })
	if nshards == 0 {
		return fmt.Errorf("no node answered")
	}
	if missing > 0 {
		return fmt.Errorf("%d of %d shards have no leader", missing, nshards)
	}
	return nil
}

// printFailedAlarms lists the alarms that leaders gave up on after every
// retry failed (they stay set), if any.
func printFailedAlarms(w io.Writer, nodes []string, status func(string) *pb.StatusResponse) {
	var fired, failures uint64
	var rows []string
	for _, addr := range nodes {
		st := status(addr)
		if st == nil {
			continue
		}
		for _, s := range st.Shard {
			fired += s.AlarmsFired
			failures += s.AlarmFailures
			for _, f := range s.FailedAlarms {
				rows = append(rows, fmt.Sprintf("%d\t%s\t%s/%x\t%s\t%d\t%s", s.Id, st.NodeId, f.Namespace, f.ObjectId,
					time.UnixMilli(f.AtUnixMs).UTC().Format(time.RFC3339Nano), f.Attempts, f.Error))
			}
		}
	}
	fmt.Fprintf(w, "\nalarms: %d fired, %d failed attempts, %d given up\n", fired, failures, len(rows))
	if len(rows) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tLEADER\tOBJECT\tDUE\tATTEMPTS\tLAST ERROR")
	for _, r := range rows {
		fmt.Fprintln(tw, r)
	}
	tw.Flush()
}

func shortErr(err error) string {
	s := err.Error()
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return s
}

func fetchStatus(ctx context.Context, addr string) (*pb.StatusResponse, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return pb.NewAdminClient(cc).Status(ctx, &pb.StatusRequest{})
}
