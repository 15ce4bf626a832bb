package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/client"
	"github.com/duro-io/duro/client/clienttest"
	"github.com/duro-io/duro/rpc/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestMain(m *testing.M) { os.Exit(clienttest.Main(m)) }

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: starts durod processes")
	}
}

func dial(t *testing.T, c *clienttest.Cluster, opts ...client.Option) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, c.Endpoints(), opts...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// kv argument and result shapes (see cmd/durod/builtin/kv.go).
type putArg struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type keyArg struct {
	Key string `json:"key"`
}

type getResult struct {
	Value *string `json:"value"`
	Found bool    `json:"found"`
}

type appendResult struct {
	Values []string `json:"values"`
}

type listResult struct {
	Items []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	} `json:"items"`
}

type kill struct {
	node  *clienttest.Node
	leads int   // shards it led
	acked int64 // calls acknowledged before
}

// TestKillLeaderMidRun SIGKILLs the node leading the most shards while 16
// goroutines increment 100 counters: every call must still succeed, exactly
// once, and the restarted node must converge with the others.
func TestKillLeaderMidRun(t *testing.T) {
	skipShort(t)
	c := clienttest.StartCluster(t, 3)
	cl := dial(t, c, client.WithCallTimeout(20*time.Second))
	ctx := c.Context(t.Context())

	const calls, counters, workers, killAfter = 1000, 100, 16, 300
	ns := cl.Namespace("counter")
	stubs := make([]*client.Stub, counters)
	for i := range stubs {
		stubs[i] = ns.Get(ns.IDFromName(fmt.Sprintf("c%d", i)))
	}
	var (
		acked    [counters]atomic.Int64
		total    atomic.Int64
		trigger  = make(chan struct{})
		killed   = make(chan kill, 1)
		errMu    sync.Mutex
		errs     []error
		jobs     = make(chan int)
		wg       sync.WaitGroup
		afterKil atomic.Int64 // calls started after the kill
		killDone atomic.Bool
	)
	go func() {
		select {
		case <-trigger:
		case <-ctx.Done():
			return
		}
		leads := c.Leaders(ctx)
		var victim *clienttest.Node
		for _, nd := range c.Nodes {
			if victim == nil || leads[nd.Addr] > leads[victim.Addr] {
				victim = nd
			}
		}
		acks := total.Load()
		victim.Kill()
		killDone.Store(true)
		killed <- kill{victim, leads[victim.Addr], acks}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				k := i % counters
				if killDone.Load() {
					afterKil.Add(1)
				}
				var n int64
				if err := stubs[k].Call(ctx, "Increment", 1, &n); err != nil {
					errMu.Lock()
					errs = append(errs, fmt.Errorf("call %d (c%d): %w", i, k, err))
					errMu.Unlock()
					continue
				}
				acked[k].Add(1)
				if total.Add(1) == killAfter {
					close(trigger)
				}
			}
		}()
	}
	var victim *clienttest.Node
	for i := range calls {
		if i == killAfter+50 {
			// Hold the rest back until the kill happened, so that most calls
			// run against the damaged cluster.
			select {
			case k := <-killed:
				victim = k.node
				t.Logf("after %d acknowledged calls: killed %s, leader of %d of %d shards", k.acked, victim.ID, k.leads, c.Shards)
			case <-time.After(60 * time.Second):
				errMu.Lock()
				defer errMu.Unlock()
				t.Fatalf("kill did not happen (acknowledged %d, errors %v)", total.Load(), errs)
			}
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	clusterOK(t, c)
	for i, err := range errs {
		if i == 10 {
			t.Fatalf("... %d errors in all", len(errs))
		}
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if afterKil.Load() < calls/2 {
		t.Fatalf("only %d calls started after the kill", afterKil.Load())
	}

	for k, st := range stubs {
		var n int64
		if err := st.Call(ctx, "Get", nil, &n); err != nil {
			t.Fatalf("c%d.Get: %v", k, err)
		}
		if want := acked[k].Load(); n != want {
			t.Errorf("c%d = %d, want %d acknowledged increments", k, n, want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	victim.Start()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c.WaitReady(wctx)
	c.WaitConverged(wctx)
}

// TestCrashAllRestart SIGKILLs every node at once and checks that every
// acknowledged Put survives the restart.
func TestCrashAllRestart(t *testing.T) {
	skipShort(t)
	c := clienttest.StartCluster(t, 3)
	ctx := c.Context(t.Context())
	cl := dial(t, c)
	const puts, objects = 300, 30
	stub := func(cl *client.Client, i int) *client.Stub {
		ns := cl.Namespace("kv")
		return ns.Get(ns.IDFromName(fmt.Sprintf("o%d", i%objects)))
	}
	parallel(t, puts, 8, func(i int) error {
		return stub(cl, i).Call(ctx, "Put", putArg{Key: fmt.Sprintf("k%d", i), Value: fmt.Sprintf("v%d", i)}, nil)
	})
	if t.Failed() {
		t.FailNow()
	}
	cl.Close()

	clusterOK(t, c)
	c.KillAll()
	for _, nd := range c.Nodes {
		nd.Start()
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c.WaitReady(rctx)

	cl2 := dial(t, c)
	parallel(t, puts, 8, func(i int) error {
		var r getResult
		if err := stub(cl2, i).Call(ctx, "Get", keyArg{Key: fmt.Sprintf("k%d", i)}, &r); err != nil {
			return err
		}
		if want := fmt.Sprintf("v%d", i); !r.Found || r.Value == nil || *r.Value != want {
			return fmt.Errorf("got %+v, want %q", r, want)
		}
		return nil
	})
}

// clusterOK stops the test if a node exited without the test asking: the
// failures that follow would only be noise.
func clusterOK(t *testing.T, c *clienttest.Cluster) {
	t.Helper()
	if err := c.Err(); err != nil {
		t.Fatalf("cluster broken from outside the test: %v", err)
	}
}

// parallel runs fn(0..n-1) on workers goroutines and reports every error.
func parallel(t *testing.T, n, workers int, fn func(i int) error) {
	t.Helper()
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("%d: %v", i, err))
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	for i, e := range errs {
		if i == 10 {
			t.Errorf("... %d errors in all", len(errs))
			break
		}
		t.Error(e)
	}
}

// TestExactlyOnceDroppedReplies runs against nodes that drop 30% of the
// replies of committed calls: the SDK's retries must not apply any call
// twice.
func TestExactlyOnceDroppedReplies(t *testing.T) {
	skipShort(t)
	c := clienttest.StartCluster(t, 3, clienttest.Options{Env: []string{"DURO_FAILPOINTS=drop-reply-after-commit=0.3"}})
	ctx := c.Context(t.Context())
	cl := dial(t, c, client.WithCallTimeout(20*time.Second))
	ns := cl.Namespace("counter")
	st := ns.Get(ns.IDFromName("once"))
	for i := range 200 {
		var n int64
		if err := st.Call(ctx, "Increment", 1, &n); err != nil {
			t.Fatalf("Increment %d: %v", i, err)
		}
		if n != int64(i+1) {
			t.Fatalf("Increment %d returned %d, want %d", i, n, i+1)
		}
	}
	var n int64
	if err := st.Call(ctx, "Get", nil, &n); err != nil {
		t.Fatalf("Get: %v", err)
	}
	if n != 200 {
		t.Fatalf("counter = %d after 200 increments", n)
	}

	raw := dial(t, c, client.WithoutRetries())
	rns := raw.Namespace("counter")
	rid := rns.IDFromName("raw")
	rst := rns.Get(rid)
	var ok, indet, unavail int
	for i := range 100 {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := rst.Call(cctx, "Increment", 1, nil)
		cancel()
		switch {
		case err == nil:
			ok++
		case errors.Is(err, client.ErrIndeterminate):
			indet++
		case errors.Is(err, client.ErrUnavailable):
			// Not applied: after a dropped reply the SDK forgets the
			// shard's leader, so the next raw call may hit a follower.
			unavail++
		default:
			t.Fatalf("raw Increment %d: %v", i, err)
		}
	}
	if err := ns.Get(rid).Call(ctx, "Get", nil, &n); err != nil {
		t.Fatalf("Get raw: %v", err)
	}
	t.Logf("raw: %d ok, %d indeterminate, %d unavailable; counter = %d", ok, indet, unavail, n)
	if indet == 0 {
		t.Errorf("no raw call came back indeterminate")
	}
	if n < int64(ok) || n > int64(ok+indet) {
		t.Errorf("raw counter = %d, want between %d and %d", n, ok, ok+indet)
	}
}

// TestEOrderPipelined issues 1,000 Appends on one stub without waiting: they
// must apply in issue order.
func TestEOrderPipelined(t *testing.T) {
	skipShort(t)
	c := clienttest.StartCluster(t, 3)
	ctx := c.Context(t.Context())
	cl := dial(t, c)
	ns := cl.Namespace("kv")
	st := ns.Get(ns.IDFromName("eorder"))
	const n = 1000
	ps := make([]*client.Pending, n)
	start := time.Now()
	bad := 0
	for i := range n {
		ps[i] = st.Go(ctx, "Append", putArg{Key: "l", Value: strconv.Itoa(i)})
	}
	var errs []string
	for i, p := range ps {
		reply, err := p.Wait()
		if err != nil {
			errs = append(errs, fmt.Sprintf("Append %d: %v", i, err))
			continue
		}
		var r appendResult
		if err := json.Unmarshal(reply, &r); err != nil {
			t.Fatalf("Append %d: reply %s: %v", i, reply, err)
		}
		if len(r.Values) != i+1 || r.Values[i] != strconv.Itoa(i) {
			bad++
			if bad <= 3 {
				t.Errorf("Append %d returned %d values, want %d: %s", i, len(r.Values), i+1, describeList(r.Values))
			}
		}
	}
	if bad > 3 {
		t.Errorf("... and %d more Appends returned a wrong list", bad-3)
	}
	clusterOK(t, c)
	for i, e := range errs {
		if i == 3 {
			t.Errorf("... %d Appends failed in all", len(errs))
			break
		}
		t.Error(e)
	}
	t.Logf("%d pipelined appends in %v", n, time.Since(start))
	var g getResult
	if err := st.Call(ctx, "Get", keyArg{Key: "l"}, &g); err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !g.Found || g.Value == nil {
		t.Fatalf("Get l: %+v", g)
	}
	var list []string
	if err := json.Unmarshal([]byte(*g.Value), &list); err != nil {
		t.Fatalf("Get l: %v", err)
	}
	want := make([]string, n)
	for i := range want {
		want[i] = strconv.Itoa(i)
	}
	if !slices.Equal(list, want) {
		t.Fatalf("final list has %d items, want 0..%d in order: %s", len(list), n-1, describeList(list))
	}
}

// describeList summarises how list differs from "0", "1", ...: where it
// first departs from that sequence and which numbers are missing or repeated.
func describeList(list []string) string {
	first := -1
	seen := map[string]int{}
	for i, v := range list {
		seen[v]++
		if first < 0 && v != strconv.Itoa(i) {
			first = i
		}
	}
	var missing, dup []string
	for i := range len(list) + 1 {
		if seen[strconv.Itoa(i)] == 0 {
			missing = append(missing, strconv.Itoa(i))
		}
	}
	for v, k := range seen {
		if k > 1 {
			dup = append(dup, v)
		}
	}
	slices.Sort(dup)
	if len(missing) > 10 {
		missing = append(missing[:10], "...")
	}
	from := max(first-3, 0)
	to := min(from+10, len(list))
	if first < 0 {
		return fmt.Sprintf("in order, last %q", list[len(list)-1])
	}
	return fmt.Sprintf("first out of order at index %d: %v; missing %v; repeated %v", first, list[from:to], missing, dup)
}

// TestBadInput checks that bad input is rejected with the right class and
// changes nothing.
func TestBadInput(t *testing.T) {
	skipShort(t)
	c := clienttest.StartCluster(t, 1)
	ctx := c.Context(t.Context())
	cl := dial(t, c)
	kvns, cns := cl.Namespace("kv"), cl.Namespace("counter")
	kvID, cID := kvns.IDFromName("x"), cns.IDFromName("x")
	kst, cst := kvns.Get(kvID), cns.Get(cID)

	if _, err := kvns.IDFromString("zz"); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("IDFromString(zz): err = %v, want ErrInvalidArgument", err)
	}
	if _, err := cns.IDFromString(kvID.String()); !errors.Is(err, client.ErrInvalidArgument) {
		t.Errorf("IDFromString(kv id) in counter: err = %v, want ErrInvalidArgument", err)
	}

	cc, err := grpc.NewClient(c.Nodes[0].Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	objs := pb.NewObjectsClient(cc)
	rawCall := func(what string, req *pb.CallRequest, want int32) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		resp, err := objs.Call(rctx, req)
		if err != nil {
			t.Errorf("%s: gRPC error %v", what, err)
			return
		}
		if resp.Error == nil || resp.Error.Code != want {
			t.Errorf("%s: response %v, want error code %d", what, resp, want)
		}
	}
	rawCall("31-byte object id", &pb.CallRequest{Namespace: "counter", ObjectId: cID[:duro.IDLen-1], Method: "Increment", Arg: []byte("1")}, 3)
	rawCall("kv id in counter", &pb.CallRequest{Namespace: "counter", ObjectId: kvID[:], Method: "Increment", Arg: []byte("1")}, 3)
	rawCall("unknown namespace (raw)", &pb.CallRequest{Namespace: "nosuch", ObjectId: cID[:], Method: "Get"}, 5)
	rawCall("unknown method (raw)", &pb.CallRequest{Namespace: "counter", ObjectId: cID[:], Method: "NoSuch"}, 5)
	rawCall("counter bad JSON (raw)", &pb.CallRequest{Namespace: "counter", ObjectId: cID[:], Method: "Increment", Arg: []byte("{bad")}, 3)

	check := func(what string, err error, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: err = %v, want %v", what, err, want)
		}
	}
	nons := cl.Namespace("nosuch")
	check("unknown namespace", nons.Get(nons.IDFromName("x")).Call(ctx, "Get", nil, nil), client.ErrNotFound)
	check("unknown method", cst.Call(ctx, "NoSuch", 1, nil), client.ErrNotFound)
	check("unknown kv method", kst.Call(ctx, "Increment", 1, nil), client.ErrNotFound)
	check("3000-byte key", kst.Call(ctx, "Put", putArg{Key: strings.Repeat("k", 3000), Value: "v"}, nil), client.ErrInvalidArgument)
	check("200 KiB value", kst.Call(ctx, "Put", putArg{Key: "k", Value: strings.Repeat("v", 200<<10)}, nil), client.ErrInvalidArgument)
	_, err = kst.CallRaw(ctx, "Put", []byte("{bad"))
	check("kv.Put {bad", err, client.ErrInvalidArgument)
	_, err = cst.CallRaw(ctx, "Increment", []byte("{bad"))
	check("counter.Increment {bad", err, client.ErrInvalidArgument)
	check("kv.Put empty key", kst.Call(ctx, "Put", putArg{Key: "", Value: "v"}, nil), client.ErrInvalidArgument)
	check("unencodable argument", kst.Call(ctx, "Put", func() {}, nil), client.ErrInvalidArgument)

	var l listResult
	if err := kst.Call(ctx, "List", struct{}{}, &l); err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(l.Items) != 0 {
		t.Errorf("kv x holds %+v after rejected calls", l.Items)
	}
	var n int64
	if err := cst.Call(ctx, "Get", nil, &n); err != nil {
		t.Fatalf("Get: %v", err)
	}
	if n != 0 {
		t.Errorf("counter x = %d after rejected calls", n)
	}
	// The session is still healthy.
	if err := cst.Call(ctx, "Increment", 2, &n); err != nil || n != 2 {
		t.Errorf("Increment after rejected calls: %d, %v", n, err)
	}
}

// TestDuroctl runs the duroctl binary against a cluster.
func TestDuroctl(t *testing.T) {
	skipShort(t)
	c := clienttest.StartCluster(t, 3)
	_, duroctl := clienttest.Binaries(t)
	eps := strings.Join(c.Endpoints(), ",")
	run := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(c.Context(t.Context()), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, duroctl, append([]string{"--endpoints", eps}, args...)...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			code = ee.ExitCode()
		default:
			t.Fatalf("duroctl %v: %v", args, err)
		}
		return o.String(), e.String(), code
	}

	out, errOut, code := run("status")
	if code != 0 {
		t.Fatalf("status: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	shards := map[string]string{}
	inShards := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == "SHARD" {
			inShards = true
			continue
		}
		if inShards && len(f) >= 2 {
			shards[f[0]] = f[1]
		}
	}
	for i := range c.Shards {
		leader, ok := shards[strconv.Itoa(i)]
		if !ok || leader == "NONE" || !strings.HasPrefix(leader, "n") {
			t.Errorf("status: shard %d has leader %q\n%s", i, leader, out)
		}
	}

	out, errOut, code = run("call", "counter", "x", "Increment", "5")
	if code != 0 || out != "5\n" {
		t.Errorf("call Increment 5: exit %d, stdout %q, stderr %q; want exit 0, stdout \"5\\n\"", code, out, errOut)
	}

	out, errOut, code = run("call", "counter", "x", "NoSuch")
	if code != 1 || out != "" || !strings.Contains(errOut, "NoSuch") {
		t.Errorf("call NoSuch: exit %d, stdout %q, stderr %q; want exit 1, no stdout, the error on stderr", code, out, errOut)
	}
}
