package shard_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/fsm"
	"github.com/duro-io/duro/shard"
	"github.com/duro-io/duro/shard/shardtest"
)

// waitResult is how long a test waits for any single call to end.
const waitResult = 10 * time.Second

func callCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitResult)
	t.Cleanup(cancel)
	return ctx
}

// submitAll submits reqs to h one after another without waiting and returns
// their results in submission order.
func submitAll(t *testing.T, h *shard.Host, reqs ...*shard.Request) []shard.Result {
	t.Helper()
	ctx := callCtx(t)
	out := make([]shard.Result, len(reqs))
	var wg sync.WaitGroup
	wg.Add(len(reqs))
	for i, r := range reqs {
		h.Submit(ctx, r, func(res shard.Result) { out[i] = res; wg.Done() })
	}
	waitGroup(t, &wg)
	return out
}

func waitGroup(t *testing.T, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitResult):
		t.Fatalf("calls did not complete within %v", waitResult)
	}
}

// callWithin runs req on h with a context deadline of d and fails the test if
// no result arrives within waitResult.
func callWithin(t *testing.T, h *shard.Host, req *shard.Request, d time.Duration) shard.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	ch := make(chan shard.Result, 1)
	h.Submit(ctx, req, func(r shard.Result) { ch <- r })
	select {
	case r := <-ch:
		return r
	case <-time.After(waitResult):
		t.Fatalf("call %s.%s got no result within %v", req.Namespace, req.Method, waitResult)
		return shard.Result{}
	}
}

func mustInt(t *testing.T, r shard.Result) int64 {
	t.Helper()
	n, err := shardtest.Int(r)
	if err != nil {
		t.Fatalf("call failed: %v (%+v)", err, r.Err)
	}
	return n
}

func mustResults(t *testing.T, r shard.Result) []shardtest.OpResult {
	t.Helper()
	out, err := shardtest.Results(r)
	if err != nil {
		t.Fatalf("call failed: %v (%+v)", err, r.Err)
	}
	return out
}

func client(b byte) fsm.ClientID {
	var c fsm.ClientID
	c[0], c[15] = 0xc1, b
	return c
}

func withSession(r *shard.Request, c fsm.ClientID, seq uint64) *shard.Request {
	r.Client, r.Seq = c, seq
	return r
}

func appliedCounter(t *testing.T, s *shard.Shard, id duro.ID) int64 {
	t.Helper()
	v, ok, err := s.Machine().Get(id, shardtest.CounterKey)
	if err != nil {
		t.Fatalf("machine get: %v", err)
	}
	if !ok {
		return 0
	}
	n, err := shardtest.ParseCounter(v)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSingleNodeIncrement(t *testing.T) {
	c := shardtest.New(t, 1, 2)
	for s := 0; s < 2; s++ {
		if l := c.LeaderOf(s); l != 0 {
			t.Fatalf("shard %d: leader %d", s, l)
		}
		id := c.ObjectIn(shardtest.CounterNamespace, s, "single")
		for i := int64(1); i <= 10; i++ {
			if got := mustInt(t, c.Call(callCtx(t), 0, shardtest.Increment(id, 1))); got != i {
				t.Fatalf("shard %d: increment %d returned %d", s, i, got)
			}
		}
		if got := mustInt(t, c.Call(callCtx(t), 0, shardtest.Increment(id, -3))); got != 7 {
			t.Fatalf("increment by -3 returned %d, want 7", got)
		}
		if got := mustInt(t, c.Call(callCtx(t), 0, shardtest.Get(id))); got != 7 {
			t.Fatalf("get returned %d, want 7", got)
		}
		if got := appliedCounter(t, c.Shard(0, s), id); got != 7 {
			t.Fatalf("applied state holds %d, want 7", got)
		}
		if v := c.Shard(0, s).Machine().Version(id); v != 11 {
			t.Fatalf("object version %d, want 11 (one per write)", v)
		}
	}
}

// TestPipelinedSubmits checks E-order (calls on one object run in submission
// order, each seeing the pending writes of the ones before) and the output
// gate (a reply is released only once its entry is applied).
func TestPipelinedSubmits(t *testing.T) {
	c := shardtest.New(t, 1, 1)
	c.LeaderOf(0)
	h, sh := c.Host(0), c.Shard(0, 0)
	id := c.ObjectIn(shardtest.CounterNamespace, 0, "pipelined")
	cl := client(1)
	const n = 500
	replies := make([]int64, n)
	var mu sync.Mutex
	var gateErrs []string
	var wg sync.WaitGroup
	wg.Add(n)
	ctx := callCtx(t)
	for i := 0; i < n; i++ {
		req := withSession(shardtest.Increment(id, 1), cl, uint64(i+1))
		h.Submit(ctx, req, func(r shard.Result) {
			defer wg.Done()
			got, err := shardtest.Int(r)
			// Output gate: the applied state already holds this call.
			v, ok, gerr := sh.Machine().Get(id, shardtest.CounterKey)
			applied := int64(-1)
			if gerr == nil && ok {
				applied, _ = shardtest.ParseCounter(v)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				gateErrs = append(gateErrs, fmt.Sprintf("call %d: %v", i+1, err))
				return
			}
			replies[i] = got
			if applied < got {
				gateErrs = append(gateErrs, fmt.Sprintf("call %d replied %d while applied state held %d", i+1, got, applied))
			}
		})
	}
	waitGroup(t, &wg)
	for _, e := range gateErrs {
		t.Error(e)
	}
	for i, r := range replies {
		if r != int64(i+1) {
			t.Fatalf("reply %d is %d, want %d (replies %v...)", i+1, r, i+1, replies[:min(len(replies), i+3)])
		}
	}
	if got := mustInt(t, c.Call(callCtx(t), 0, shardtest.Get(id))); got != n {
		t.Fatalf("get returned %d, want %d", got, n)
	}
	if v := sh.Machine().Version(id); v != n {
		t.Fatalf("object version %d, want %d", v, n)
	}
}

func TestExactlyOnce(t *testing.T) {
	c := shardtest.New(t, 1, 1)
	c.LeaderOf(0)
	h, sh := c.Host(0), c.Shard(0, 0)
	id := c.ObjectIn(shardtest.CounterNamespace, 0, "once")
	cl := client(2)

	// Sequential duplicate: answered from the session table.
	r1 := mustInt(t, h.Call(callCtx(t), withSession(shardtest.Increment(id, 5), cl, 1)))
	r2 := mustInt(t, h.Call(callCtx(t), withSession(shardtest.Increment(id, 5), cl, 1)))
	if r1 != 5 || r2 != 5 {
		t.Fatalf("replies %d, %d; want 5, 5", r1, r2)
	}
	// The duplicate's argument is ignored: the stored reply wins.
	if r := mustInt(t, h.Call(callCtx(t), withSession(shardtest.Increment(id, 100), cl, 1))); r != 5 {
		t.Fatalf("duplicate with another argument replied %d, want 5", r)
	}
	if got := mustInt(t, h.Call(callCtx(t), shardtest.Get(id))); got != 5 {
		t.Fatalf("counter %d after a duplicate, want 5", got)
	}

	// Concurrent duplicates: the second is submitted while the first is in
	// flight (and, from another goroutine, possibly before or after it ran).
	want := int64(5)
	for seq := uint64(2); seq < 22; seq++ {
		want += 7
		reqs := []*shard.Request{
			withSession(shardtest.Increment(id, 7), cl, seq),
			withSession(shardtest.Increment(id, 7), cl, seq),
		}
		res := submitAll(t, h, reqs...)
		var wg sync.WaitGroup
		var third shard.Result
		wg.Add(1)
		go func() {
			defer wg.Done()
			third = h.Call(callCtx(t), withSession(shardtest.Increment(id, 7), cl, seq))
		}()
		wg.Wait()
		for i, r := range append(res, third) {
			if got := mustInt(t, r); got != want {
				t.Fatalf("seq %d: copy %d replied %d, want %d", seq, i, got, want)
			}
		}
	}
	if got := mustInt(t, h.Call(callCtx(t), shardtest.Get(id))); got != want {
		t.Fatalf("counter %d, want %d", got, want)
	}
	if v := sh.Machine().Version(id); v != 21 {
		t.Fatalf("object version %d, want 21 (one write per seq)", v)
	}

	// Many in-flight copies of one (client, seq), pipelined behind a write.
	reqs := []*shard.Request{withSession(shardtest.Increment(id, 1), cl, 100)}
	for i := 0; i < 10; i++ {
		reqs = append(reqs, withSession(shardtest.Increment(id, 1), cl, 101))
	}
	res := submitAll(t, h, reqs...)
	want++
	if got := mustInt(t, res[0]); got != want {
		t.Fatalf("seq 100 replied %d, want %d", got, want)
	}
	want++
	for i, r := range res[1:] {
		if got := mustInt(t, r); got != want {
			t.Fatalf("copy %d of seq 101 replied %d, want %d", i, got, want)
		}
	}
	if got := appliedCounter(t, sh, id); got != want {
		t.Fatalf("applied counter %d, want %d", got, want)
	}

	// Acknowledged sequences are not run again.
	ack := withSession(shardtest.Increment(id, 1), cl, 102)
	ack.AckedBelow = 102
	mustInt(t, h.Call(callCtx(t), ack))
	want++
	r := h.Call(callCtx(t), withSession(shardtest.Increment(id, 1), cl, 101))
	if r.Err == nil || r.Err.Code != duro.CodeFailedPrecondition {
		t.Fatalf("acknowledged seq: got %+v, want failed precondition", r)
	}
	if got := appliedCounter(t, sh, id); got != want {
		t.Fatalf("applied counter %d, want %d", got, want)
	}
}

// kvModel is the reference semantics of the kv class's storage.
type kvModel map[string]string

func (m kvModel) clone() kvModel {
	c := kvModel{}
	for k, v := range m {
		c[k] = v
	}
	return c
}

func (m kvModel) list(l *shardtest.List) []shardtest.Pair {
	if l == nil {
		l = &shardtest.List{}
	}
	var keys []string
	for k := range m {
		if k >= l.Start && (l.End == "" || k < l.End) && strings.HasPrefix(k, l.Prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if l.Reverse {
		for i, j := 0, len(keys)-1; i < j; i, j = i+1, j-1 {
			keys[i], keys[j] = keys[j], keys[i]
		}
	}
	if l.Limit > 0 && len(keys) > l.Limit {
		keys = keys[:l.Limit]
	}
	var out []shardtest.Pair
	for _, k := range keys {
		out = append(out, shardtest.Pair{Key: k, Value: m[k]})
	}
	return out
}

// run applies ops to *m as the kv class does; ok is false if the call fails.
func (m *kvModel) run(ops []shardtest.Op) (out []shardtest.OpResult, ok bool) {
	for _, op := range ops {
		var r shardtest.OpResult
		switch op.Kind {
		case "put":
			(*m)[op.Key] = op.Value
		case "get":
			r.Value, r.Found = (*m)[op.Key]
		case "delete":
			_, r.Found = (*m)[op.Key]
			delete(*m, op.Key)
		case "list":
			r.KVs = m.list(op.List)
		case "deleteall":
			*m = kvModel{}
		case "putmany":
			for _, p := range op.KVs {
				(*m)[p.Key] = p.Value
			}
		case "getmany":
			for _, k := range op.Keys {
				if v, ok := (*m)[k]; ok {
					r.KVs = append(r.KVs, shardtest.Pair{Key: k, Value: v})
				}
			}
		case "deletemany":
			for _, k := range op.Keys {
				if _, ok := (*m)[k]; ok {
					r.Count++
					delete(*m, k)
				}
			}
		case "txn":
			saved := m.clone()
			sub, ok := m.run(op.Ops)
			r.Sub = sub
			if !ok {
				return nil, false
			}
			if op.Fail {
				*m = saved
				r.Err = shardtest.ErrRollback.Error()
				r.Code = duro.CodeUnknown
			}
		case "fail":
			return nil, false
		}
		out = append(out, r)
	}
	return out, true
}

func kvRun(t *testing.T, c *shardtest.Cluster, id duro.ID, ops ...shardtest.Op) []shardtest.OpResult {
	t.Helper()
	return mustResults(t, c.Call(callCtx(t), 0, shardtest.Run(id, ops...)))
}

func put(k, v string) shardtest.Op { return shardtest.Op{Kind: "put", Key: k, Value: v} }
func get(k string) shardtest.Op    { return shardtest.Op{Kind: "get", Key: k} }
func del(k string) shardtest.Op    { return shardtest.Op{Kind: "delete", Key: k} }
func list(l shardtest.List) shardtest.Op {
	return shardtest.Op{Kind: "list", List: &l}
}

func pairs(kv ...string) []shardtest.Pair {
	var out []shardtest.Pair
	for i := 0; i < len(kv); i += 2 {
		out = append(out, shardtest.Pair{Key: kv[i], Value: kv[i+1]})
	}
	return out
}

func TestStorageSemantics(t *testing.T) {
	c := shardtest.New(t, 1, 1)
	c.LeaderOf(0)
	h := c.Host(0)
	id := c.ObjectIn(shardtest.KVNamespace, 0, "storage")

	// A turn sees its own writes.
	res := kvRun(t, c, id, put("a", "1"), put("b", "2"), get("a"), list(shardtest.List{}), del("b"), get("b"), list(shardtest.List{}))
	if !res[2].Found || res[2].Value != "1" {
		t.Fatalf("own put not visible: %+v", res[2])
	}
	if !reflect.DeepEqual(res[3].KVs, pairs("a", "1", "b", "2")) {
		t.Fatalf("list of own writes: %+v", res[3].KVs)
	}
	if !res[4].Found || res[5].Found || !reflect.DeepEqual(res[6].KVs, pairs("a", "1")) {
		t.Fatalf("own delete: %+v", res[4:])
	}

	// Pipelined calls see earlier pending calls' writes.
	out := submitAll(t, h,
		shardtest.Run(id, put("c", "3")),
		shardtest.Run(id, list(shardtest.List{}), put("d", "4")),
		shardtest.Run(id, del("a"), list(shardtest.List{})),
		shardtest.Run(id, shardtest.Op{Kind: "deleteall"}, list(shardtest.List{}), put("e", "5")),
		shardtest.Run(id, list(shardtest.List{}), get("c")),
	)
	if r := mustResults(t, out[1]); !reflect.DeepEqual(r[0].KVs, pairs("a", "1", "c", "3")) {
		t.Fatalf("pending put not visible: %+v", r[0].KVs)
	}
	if r := mustResults(t, out[2]); !r[0].Found || !reflect.DeepEqual(r[1].KVs, pairs("c", "3", "d", "4")) {
		t.Fatalf("after pending delete: %+v", r)
	}
	if r := mustResults(t, out[3]); len(r[1].KVs) != 0 {
		t.Fatalf("list after DeleteAll: %+v", r[1].KVs)
	}
	if r := mustResults(t, out[4]); !reflect.DeepEqual(r[0].KVs, pairs("e", "5")) || r[1].Found {
		t.Fatalf("after pending DeleteAll: %+v", r)
	}

	// List options over applied state, with the turn's own writes on top.
	kvRun(t, c, id, shardtest.Op{Kind: "deleteall"}, put("p/1", "a"), put("p/2", "b"), put("p/3", "c"), put("q/1", "d"), put("r", "e"))
	cases := []struct {
		l    shardtest.List
		want []shardtest.Pair
	}{
		{shardtest.List{Prefix: "p/"}, pairs("p/1", "a", "p/2", "b", "p/3", "c")},
		{shardtest.List{Prefix: "p/", Reverse: true, Limit: 2}, pairs("p/3", "c", "p/2", "b")},
		{shardtest.List{Start: "p/2", End: "q/1"}, pairs("p/2", "b", "p/3", "c")},
		{shardtest.List{Start: "q"}, pairs("q/1", "d", "r", "e")},
		{shardtest.List{Limit: 1}, pairs("p/1", "a")},
		{shardtest.List{Reverse: true}, pairs("r", "e", "q/1", "d", "p/3", "c", "p/2", "b", "p/1", "a")},
		{shardtest.List{Prefix: "p/", Start: "p/25"}, pairs("p/3", "c")},
		{shardtest.List{Prefix: "p/", End: "p/2"}, pairs("p/1", "a")},
		{shardtest.List{Prefix: "x"}, nil},
	}
	for _, tc := range cases {
		if r := kvRun(t, c, id, list(tc.l)); !reflect.DeepEqual(r[0].KVs, tc.want) {
			t.Errorf("list %+v = %+v, want %+v", tc.l, r[0].KVs, tc.want)
		}
	}
	// A failing call writes nothing.
	if r := c.Call(callCtx(t), 0, shardtest.Run(id, del("p/1"), put("p/0", "x"), shardtest.Op{Kind: "fail"})); r.Err == nil || r.Err.Code != duro.CodeUnknown {
		t.Fatalf("failing call: %+v", r)
	}
	res = kvRun(t, c, id, del("p/2"), put("p/25", "x"),
		list(shardtest.List{Prefix: "p/"}),
		list(shardtest.List{Prefix: "p/", Limit: 2}),
		list(shardtest.List{Prefix: "p/", Reverse: true, Limit: 2}))
	if !reflect.DeepEqual(res[2].KVs, pairs("p/1", "a", "p/25", "x", "p/3", "c")) ||
		!reflect.DeepEqual(res[3].KVs, pairs("p/1", "a", "p/25", "x")) ||
		!reflect.DeepEqual(res[4].KVs, pairs("p/3", "c", "p/25", "x")) {
		t.Fatalf("lists over mixed layers: %+v", res[2:])
	}

	// Transaction rollback undoes only its own writes.
	res = kvRun(t, c, id, shardtest.Op{Kind: "deleteall"}, put("a", "1"),
		shardtest.Op{Kind: "txn", Fail: true, Tolerate: true, Ops: []shardtest.Op{put("b", "2"), del("a"), get("a"), shardtest.Op{Kind: "deleteall"}}},
		get("a"), get("b"),
		shardtest.Op{Kind: "txn", Ops: []shardtest.Op{put("c", "3")}},
		put("d", "4"))
	if res[2].Err == "" || len(res[2].Sub) != 4 || res[2].Sub[2].Found {
		t.Fatalf("failed transaction: %+v", res[2])
	}
	if !res[3].Found || res[3].Value != "1" || res[4].Found {
		t.Fatalf("after rollback: a=%+v b=%+v", res[3], res[4])
	}
	res = kvRun(t, c, id, list(shardtest.List{}))
	if !reflect.DeepEqual(res[0].KVs, pairs("a", "1", "c", "3", "d", "4")) {
		t.Fatalf("committed after rollback: %+v", res[0].KVs)
	}

	// Oversize keys and values: invalid argument, nothing written.
	bigKey := strings.Repeat("k", duro.DefaultMaxKeyBytes+1)
	bigVal := strings.Repeat("v", duro.DefaultMaxValueBytes+1)
	for name, op := range map[string]shardtest.Op{
		"key":        put(bigKey, "v"),
		"value":      put("big", bigVal),
		"get key":    get(bigKey),
		"delete key": del(bigKey),
		"putmany":    {Kind: "putmany", KVs: pairs("fine", "1", "big", bigVal)},
		"deletemany": {Kind: "deletemany", Keys: []string{"a", bigKey}},
	} {
		r := c.Call(callCtx(t), 0, shardtest.Run(id, put("z", "1"), del("a"), op))
		if r.Err == nil || !errors.Is(r.Err, duro.ErrInvalidArgument) {
			t.Errorf("oversize %s: got %+v, want invalid argument", name, r)
		}
	}
	res = kvRun(t, c, id, list(shardtest.List{}))
	if !reflect.DeepEqual(res[0].KVs, pairs("a", "1", "c", "3", "d", "4")) {
		t.Fatalf("after rejected oversize writes: %+v", res[0].KVs)
	}
	// The limits are inclusive, and the error is visible to the method.
	okKey := strings.Repeat("k", duro.DefaultMaxKeyBytes)
	okVal := strings.Repeat("v", duro.DefaultMaxValueBytes)
	res = kvRun(t, c, id, put(okKey, okVal), shardtest.Op{Kind: "put", Key: "big", Value: bigVal, Tolerate: true}, get(okKey))
	if res[1].Code != duro.CodeInvalidArgument || !res[2].Found || res[2].Value != okVal {
		t.Fatalf("at the limits: %+v / found=%v", res[1], res[2].Found)
	}
	res = kvRun(t, c, id, get(okKey), get("big"))
	if !res[0].Found || res[1].Found {
		t.Fatalf("after limit writes: %v %v", res[0].Found, res[1].Found)
	}
}

func TestStorageModel(t *testing.T) {
	c := shardtest.New(t, 1, 1)
	c.LeaderOf(0)
	h := c.Host(0)
	id := c.ObjectIn(shardtest.KVNamespace, 0, "model")
	rng := rand.New(rand.NewSource(1))
	keys := []string{"a", "a/1", "a/2", "a/3", "ab", "b", "b/1", "b/x", "c", "cc", "d"}
	key := func() string { return keys[rng.Intn(len(keys))] }
	randList := func() *shardtest.List {
		l := &shardtest.List{Reverse: rng.Intn(2) == 0}
		if rng.Intn(3) == 0 {
			l.Prefix = key()[:1]
			if rng.Intn(2) == 0 {
				l.Prefix += "/"
			}
		}
		if rng.Intn(3) == 0 {
			l.Start = key()
		}
		if rng.Intn(3) == 0 {
			l.End = key()
		}
		if rng.Intn(2) == 0 {
			l.Limit = 1 + rng.Intn(4)
		}
		return l
	}
	var randOps func(depth int) []shardtest.Op
	randOps = func(depth int) []shardtest.Op {
		var ops []shardtest.Op
		for n := 1 + rng.Intn(5); n > 0; n-- {
			switch p := rng.Intn(100); {
			case p < 30:
				ops = append(ops, put(key(), fmt.Sprint(rng.Intn(1000))))
			case p < 45:
				ops = append(ops, del(key()))
			case p < 55:
				ops = append(ops, get(key()))
			case p < 75:
				ops = append(ops, shardtest.Op{Kind: "list", List: randList()})
			case p < 78:
				ops = append(ops, shardtest.Op{Kind: "deleteall"})
			case p < 83:
				ops = append(ops, shardtest.Op{Kind: "putmany", KVs: pairs(key(), "m1", key(), "m2")})
			case p < 86:
				ops = append(ops, shardtest.Op{Kind: "getmany", Keys: []string{key(), key()}})
			case p < 89:
				ops = append(ops, shardtest.Op{Kind: "deletemany", Keys: []string{key(), key()}})
			case p < 98 && depth < 2:
				ops = append(ops, shardtest.Op{Kind: "txn", Fail: rng.Intn(2) == 0, Tolerate: true, Ops: randOps(depth + 1)})
			case depth == 0:
				ops = append(ops, shardtest.Op{Kind: "fail"})
			}
		}
		return ops
	}
	model := kvModel{}
	for round := 0; round < 6; round++ {
		var reqs []*shard.Request
		var want [][]shardtest.OpResult
		var wantOK []bool
		for i := 0; i < 60; i++ {
			ops := randOps(0)
			reqs = append(reqs, shardtest.Run(id, ops...))
			next := model.clone()
			w, ok := next.run(ops)
			if ok {
				model = next
			}
			want, wantOK = append(want, w), append(wantOK, ok)
		}
		// Every second round runs the calls pipelined; the others one by one.
		var got []shard.Result
		if round%2 == 0 {
			got = submitAll(t, h, reqs...)
		} else {
			for _, r := range reqs {
				got = append(got, c.Call(callCtx(t), 0, r))
			}
		}
		for i, r := range got {
			if !wantOK[i] {
				if r.Err == nil || r.Err.Code != duro.CodeUnknown {
					t.Fatalf("round %d call %d: got %+v, want an application error", round, i, r)
				}
				continue
			}
			res := mustResults(t, r)
			if !equalResults(res, want[i]) {
				t.Fatalf("round %d call %d:\n got %+v\nwant %+v", round, i, res, want[i])
			}
		}
	}
	res := kvRun(t, c, id, list(shardtest.List{}))
	if !reflect.DeepEqual(res[0].KVs, model.list(nil)) {
		t.Fatalf("final state %+v, model %+v", res[0].KVs, model.list(nil))
	}
}

func equalResults(a, b []shardtest.OpResult) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Value != y.Value || x.Found != y.Found || x.Count != y.Count || x.Code != y.Code ||
			(x.Err == "") != (y.Err == "") || len(x.KVs) != len(y.KVs) || !equalResults(x.Sub, y.Sub) {
			return false
		}
		for j := range x.KVs {
			if x.KVs[j] != y.KVs[j] {
				return false
			}
		}
	}
	return true
}

func TestRequestValidation(t *testing.T) {
	c := shardtest.New(t, 1, 1)
	c.LeaderOf(0)
	kvID := c.ObjectIn(shardtest.KVNamespace, 0, "v")
	ctrID := c.ObjectIn(shardtest.CounterNamespace, 0, "v")
	for _, tc := range []struct {
		name string
		req  *shard.Request
		code duro.Code
	}{
		{"unknown namespace", &shard.Request{Namespace: "nope", Object: duro.IDFromName("nope", "x"), Method: "Get"}, duro.CodeNotFound},
		{"unknown method", &shard.Request{Namespace: shardtest.CounterNamespace, Object: ctrID, Method: "Nope"}, duro.CodeNotFound},
		{"foreign id", &shard.Request{Namespace: shardtest.CounterNamespace, Object: kvID, Method: "Get"}, duro.CodeInvalidArgument},
		{"zero id", &shard.Request{Namespace: shardtest.CounterNamespace, Method: "Get"}, duro.CodeInvalidArgument},
		{"bad argument", &shard.Request{Namespace: shardtest.CounterNamespace, Object: ctrID, Method: "Increment", Arg: []byte(`"x"`)}, duro.CodeInvalidArgument},
		{"bad op", shardtest.Run(kvID, shardtest.Op{Kind: "nope"}), duro.CodeInvalidArgument},
	} {
		r := c.Call(callCtx(t), 0, tc.req)
		if r.Err == nil || r.Err.Code != tc.code {
			t.Errorf("%s: got %+v, want code %v", tc.name, r, tc.code)
		}
	}
	if v := c.Shard(0, 0).Machine().Version(ctrID); v != 0 {
		t.Fatalf("rejected calls wrote: version %d", v)
	}
}

// Leadership may move at any time (a slow, raced test binary can miss a
// heartbeat), so the multi-node tests find the leader again and retry, with
// sessions for writes, instead of assuming a stable leader.

func TestFollowerRedirectAndReplication(t *testing.T) {
	c := shardtest.New(t, 3, 2)
	want := map[duro.ID]int64{}
	cl := client(6)
	seq := uint64(0)
	for s := 0; s < 2; s++ {
		id := c.ObjectIn(shardtest.CounterNamespace, s, "redirect")
		// Calls to followers, reads and writes, are refused as retryable and
		// name the leader.
		ran := int64(0)
		c.Eventually(t, func() bool {
			l := c.LeaderOf(s)
			for f := 0; f < 3; f++ {
				if f == l {
					continue
				}
				for _, req := range []*shard.Request{shardtest.Get(id), shardtest.Increment(id, 1)} {
					r := callWithin(t, c.Host(f), req, time.Second)
					if r.Err == nil {
						// f leads now (a new election); look again.
						if req.Method == "Increment" {
							ran++
						}
						return false
					}
					if !r.Err.Retryable || r.Err.Indeterminate {
						t.Fatalf("shard %d: follower %d: %+v, want retryable", s, f, *r.Err)
					}
					if r.Err.Leader != shardtest.Addr(l) {
						return false
					}
				}
			}
			return true
		}, 10*time.Second)
		want[id] = ran

		// Pipelined writes to the leader; any refused by a leadership change
		// are retried with the same session sequence.
		for i := 0; i < 3; i++ {
			oid := c.ObjectIn(shardtest.CounterNamespace, s, fmt.Sprint("obj", i))
			by := int64(i + 1)
			var reqs []*shard.Request
			for j := 0; j < 20; j++ {
				seq++
				reqs = append(reqs, withSession(shardtest.Increment(oid, by), cl, seq))
			}
			res := submitAll(t, c.Host(c.LeaderOf(s)), reqs...)
			failed := false
			for j, r := range res {
				if r.Err != nil {
					failed = true
					t.Logf("shard %d obj %d call %d: %v; retrying", s, i, j, r.Err)
					mustInt(t, onLeader(t, c, s, reqs[j]))
				} else if got := mustInt(t, r); !failed && got != int64(j+1)*by {
					t.Fatalf("shard %d obj %d call %d replied %d, want %d", s, i, j, got, int64(j+1)*by)
				}
			}
			want[oid] = 20 * by
		}
	}
	c.WaitConverged(t, 15*time.Second)
	for i := 0; i < 3; i++ {
		for id, n := range want {
			s := duro.ShardOf(id, 2)
			if got := appliedCounter(t, c.Shard(i, s), id); got != n {
				t.Fatalf("node %d shard %d: counter %d, want %d", i, s, got, n)
			}
		}
	}

	// A restarted follower catches up.
	f := (c.LeaderOf(0) + 1) % 3
	c.Restart(f)
	id := c.ObjectIn(shardtest.CounterNamespace, 0, "after-restart")
	for i := 1; i <= 5; i++ {
		incrementOnce(t, c, 0, id, client(9), uint64(i))
	}
	c.WaitConverged(t, 15*time.Second)
	if got := appliedCounter(t, c.Shard(f, 0), id); got != 5 {
		t.Fatalf("restarted follower: counter %d, want 5", got)
	}
}

// onLeader runs req on whichever node leads shard s, retrying while the
// result is a retryable or indeterminate error. Writes must carry a session,
// so a retry cannot apply twice.
func onLeader(t *testing.T, c *shardtest.Cluster, s int, req *shard.Request) shard.Result {
	t.Helper()
	var last shard.Result
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		last = callWithin(t, c.Host(c.LeaderOf(s)), req, 2*time.Second)
		if last.Err == nil || !last.Err.Retryable && !last.Err.Indeterminate {
			return last
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s.%s never succeeded; last %+v", req.Namespace, req.Method, last.Err)
	return last
}

// incrementOnce increments id by one with session (cl, seq) on the leader of
// shard s, retrying until it succeeds: exactly once.
func incrementOnce(t *testing.T, c *shardtest.Cluster, s int, id duro.ID, cl fsm.ClientID, seq uint64) int64 {
	t.Helper()
	return mustInt(t, onLeader(t, c, s, withSession(shardtest.Increment(id, 1), cl, seq)))
}

func TestPartitionedOldLeader(t *testing.T) {
	c := shardtest.New(t, 3, 1)
	id := c.ObjectIn(shardtest.CounterNamespace, 0, "partition")
	other := c.ObjectIn(shardtest.CounterNamespace, 0, "partition-read")
	cl := client(3)
	seq := uint64(0)
	next := func() uint64 { seq++; return seq }
	incrementOnce(t, c, 0, id, cl, next())
	old := -1
	c.Eventually(t, func() bool { // activate both objects on the leader
		old = c.LeaderOf(0)
		return callWithin(t, c.Host(old), shardtest.Get(other), time.Second).Err == nil &&
			callWithin(t, c.Host(old), shardtest.Get(id), time.Second).Err == nil
	}, 10*time.Second)

	// Once another node leads and took a write, the old leader must not
	// answer anything.
	mustFail := func(when string) {
		t.Helper()
		oh := c.Host(old)
		stray := client(4) // never retried: if applied, the final count is off
		for i, req := range []*shard.Request{
			shardtest.Get(other),
			shardtest.Get(id),
			withSession(shardtest.Increment(id, 1), stray, uint64(time.Now().UnixNano())),
			shardtest.Increment(other, 1000),
		} {
			r := callWithin(t, oh, req, 300*time.Millisecond)
			if r.Err == nil {
				t.Fatalf("%s: call %d (%s) on the partitioned old leader succeeded: %s", when, i, req.Method, r.Reply)
			}
			t.Logf("%s: call %d (%s): %+v", when, i, req.Method, *r.Err)
		}
		// Pipelined write then read on one object.
		for i, r := range submitAll(t, oh, shardtest.Increment(other, 1000), shardtest.Get(other)) {
			if r.Err == nil {
				t.Fatalf("%s: pipelined call %d on the partitioned old leader succeeded: %s", when, i, r.Reply)
			}
		}
	}

	c.Isolate(old)
	// Until another node can have been elected, the old leader may still
	// answer reads (a heartbeat in flight at the cut may confirm it), but
	// only with the committed state.
	for _, tc := range []struct {
		id   duro.ID
		want int64
	}{{other, 0}, {id, 1}} {
		r := callWithin(t, c.Host(old), shardtest.Get(tc.id), 300*time.Millisecond)
		if r.Err == nil {
			if got := mustInt(t, r); got != tc.want {
				t.Fatalf("right after isolation: read %d, want %d", got, tc.want)
			}
		}
	}
	c.Eventually(t, func() bool {
		nl := c.LeaderOfExcept(0, old)
		r := callWithin(t, c.Host(nl), withSession(shardtest.Increment(id, 1), cl, seq+1), time.Second)
		return r.Err == nil
	}, 10*time.Second)
	next()
	mustFail("after a new leader took writes")

	c.Heal()
	for i := 0; i < 5; i++ {
		incrementOnce(t, c, 0, id, cl, next())
	}
	c.WaitConverged(t, 20*time.Second)
	if got := mustInt(t, onLeader(t, c, 0, shardtest.Get(id))); got != int64(seq) {
		t.Fatalf("counter %d, want %d (one per successful session seq)", got, seq)
	}
	if got := mustInt(t, onLeader(t, c, 0, shardtest.Get(other))); got != 0 {
		t.Fatalf("a write submitted to the partitioned leader was applied: %d", got)
	}
	for i := 0; i < 3; i++ {
		if got := appliedCounter(t, c.Shard(i, 0), id); got != int64(seq) {
			t.Fatalf("node %d: counter %d, want %d", i, got, seq)
		}
	}
}

func TestRestart(t *testing.T) {
	c := shardtest.New(t, 1, 2)
	c.LeaderOf(0)
	c.LeaderOf(1)
	ids := []duro.ID{c.ObjectIn(shardtest.CounterNamespace, 0, "restart"), c.ObjectIn(shardtest.CounterNamespace, 1, "restart")}
	kvID := c.ObjectIn(shardtest.KVNamespace, 1, "restart")
	cl := client(5)
	seq := uint64(0)
	for i := 0; i < 10; i++ {
		for _, id := range ids {
			seq++
			mustInt(t, c.Call(callCtx(t), 0, withSession(shardtest.Increment(id, 1), cl, seq)))
		}
	}
	kvRun(t, c, kvID, put("k", "v"), put("gone", "x"))
	kvRun(t, c, kvID, del("gone"))
	before := [2][32]byte{}
	for s := range before {
		_, before[s], _ = c.Shard(0, s).Machine().Hash()
	}

	c.Restart(0)
	for s := range before {
		if _, sum, err := c.Shard(0, s).Machine().Hash(); err != nil || sum != before[s] {
			t.Fatalf("shard %d: state changed across restart (err %v)", s, err)
		}
	}
	c.LeaderOf(0)
	c.LeaderOf(1)
	for _, id := range ids {
		if got := mustInt(t, c.Call(callCtx(t), 0, shardtest.Get(id))); got != 10 {
			t.Fatalf("after restart: counter %d, want 10", got)
		}
	}
	res := kvRun(t, c, kvID, list(shardtest.List{}))
	if !reflect.DeepEqual(res[0].KVs, pairs("k", "v")) {
		t.Fatalf("after restart: kv %+v", res[0].KVs)
	}
	// Sessions survive: the last seq is a duplicate, answered as before.
	if got := mustInt(t, c.Call(callCtx(t), 0, withSession(shardtest.Increment(ids[1], 1), cl, seq))); got != 10 {
		t.Fatalf("duplicate after restart replied %d, want 10", got)
	}
	// Versions survive: new writes apply on top.
	if got := mustInt(t, c.Call(callCtx(t), 0, withSession(shardtest.Increment(ids[0], 1), cl, seq+1))); got != 11 {
		t.Fatalf("increment after restart returned %d, want 11", got)
	}
}

// TestRebuildAfterMachineCrash: a state file the fsm no longer trusts (the
// machine rebooted after it was written without fsync) is discarded, and the
// node rebuilds the same state from its newest snapshot and its log.
func TestRebuildAfterMachineCrash(t *testing.T) {
	c := shardtest.New(t, 3, 2)
	ids := []duro.ID{c.ObjectIn(shardtest.CounterNamespace, 0, "crash"), c.ObjectIn(shardtest.CounterNamespace, 1, "crash")}
	incr := func(n int) {
		for i := 0; i < n; i++ {
			for s, id := range ids {
				mustInt(t, c.Call(callCtx(t), c.LeaderOf(s), shardtest.Increment(id, 1)))
			}
		}
	}
	incr(5)
	c.WaitConverged(t, 10*time.Second)
	// Node 2's shard 0 gets a snapshot, so its rebuild restores it and
	// replays the rest; its shard 1 has none and replays its whole log.
	if err := c.Shard(2, 0).Raft().Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	incr(5)
	c.WaitConverged(t, 10*time.Second)
	c.RestartAfter(2, func(dir string) {
		for s := 0; s < 2; s++ {
			marker := filepath.Join(dir, fmt.Sprintf("shard-%04d", s), "state.db.boot")
			if err := os.WriteFile(marker, []byte("some-earlier-boot dirty\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	})
	for s := range ids {
		if !c.Shard(2, s).Machine().Discarded() {
			t.Fatalf("shard %d: state file from another boot was trusted", s)
		}
	}
	incr(1)
	c.WaitConverged(t, 10*time.Second)
	for s, id := range ids {
		if v, ok, err := c.Shard(2, s).Machine().Get(id, shardtest.CounterKey); err != nil || !ok || string(v) != "11" {
			t.Fatalf("shard %d: rebuilt replica has counter %q (found %v, err %v), want 11", s, v, ok, err)
		}
		if got := mustInt(t, c.Call(callCtx(t), c.LeaderOf(s), shardtest.Get(id))); got != 11 {
			t.Fatalf("after rebuild: counter %d, want 11", got)
		}
	}
}

// An object's outgoing call is output, like a reply: it leaves only once a
// quorum confirmed that its node still leads, so a leader cut off from its
// peers (and about to be deposed) does not act on what it read.
func TestOutgoingCallNeedsConfirmedLeader(t *testing.T) {
	var sent atomic.Int64
	var sink duro.ID // set before the first call
	reg := shardtest.Registry()
	relay := duro.NewClass("relay", func() *struct{} { return &struct{}{} })
	duro.Method(relay, "Send", func(_ *struct{}, ctx duro.Context, _ struct{}) (bool, error) {
		return true, ctx.Stub(shardtest.CounterNamespace, sink).Call(ctx, "Hit", nil, nil)
	})
	reg.Register(relay)
	// A lease long enough that the cut-off leader still believes it leads
	// when the call runs.
	timing := shardtest.Timing
	timing.HeartbeatTimeout, timing.ElectionTimeout, timing.LeaderLeaseTimeout = time.Second, time.Second, time.Second
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 3, Shards: 1, Registry: reg, Timing: &timing,
		Caller: func(context.Context, string, duro.ID, string, []byte) ([]byte, error) {
			sent.Add(1)
			return []byte("null"), nil
		}})
	id := c.ObjectIn("relay", 0, "r")
	sink = c.ObjectIn(shardtest.CounterNamespace, 0, "sink")
	send := &shard.Request{Namespace: "relay", Object: id, Method: "Send", Arg: []byte("{}")}
	old := c.LeaderOf(0)
	if r := callWithin(t, c.Host(old), send, waitResult); r.Err != nil {
		t.Fatalf("Send on the leader: %v", r.Err)
	}
	if n := sent.Load(); n != 1 {
		t.Fatalf("%d calls left, want 1", n)
	}

	c.Isolate(old)
	// Let heartbeats already in flight at the cut finish: one could still
	// confirm the old leadership.
	time.Sleep(100 * time.Millisecond)
	r := callWithin(t, c.Host(old), send, 3*time.Second)
	if r.Err == nil {
		t.Fatalf("Send on a leader cut off from its peers succeeded")
	}
	if n := sent.Load(); n != 1 {
		t.Fatalf("a leader cut off from its peers let a call out (%d calls, want 1); its reply: %v", n, r.Err)
	}
	c.Heal()
}
