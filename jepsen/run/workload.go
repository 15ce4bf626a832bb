package run

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/client"
	"github.com/duro-io/duro/jepsen/checker"
	"github.com/duro-io/duro/rpc/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// caller sends one call: through the SDK (routing and retries as
// configured) or raw to one pinned node.
type caller interface {
	call(ctx context.Context, ns string, id duro.ID, method string, arg any) ([]byte, error)
	node() string
}

// definiteOnLost is the negative control "definite-on-lost": it turns
// "may have been applied" into a definite failure, the bug class of
// Redis-Raft #23 that CHAOS T08 exists to catch.
type definiteOnLost struct{ caller }

func (d definiteOnLost) call(ctx context.Context, ns string, id duro.ID, method string, arg any) ([]byte, error) {
	reply, err := d.caller.call(ctx, ns, id, method, arg)
	var e *duro.Error
	if errors.As(err, &e) && e.Indeterminate {
		e2 := *e
		e2.Indeterminate = false
		return nil, &e2
	}
	return reply, err
}

type sdkCaller struct{ c *client.Client }

func (s sdkCaller) call(ctx context.Context, ns string, id duro.ID, method string, arg any) ([]byte, error) {
	raw, err := json.Marshal(arg)
	if err != nil {
		return nil, err
	}
	return s.c.Namespace(ns).Get(id).CallRaw(ctx, method, raw)
}

func (sdkCaller) node() string { return "" }

// pinnedCaller calls one node directly: no redirect, no retry, no session.
// A node that is not the leader must answer with a definite error.
type pinnedCaller struct {
	addr func() (id, addr string) // the node to call now
	cc   map[string]pb.ObjectsClient
	last string
}

func newPinned(addr func() (string, string)) *pinnedCaller {
	return &pinnedCaller{addr: addr, cc: map[string]pb.ObjectsClient{}}
}

func (p *pinnedCaller) call(ctx context.Context, ns string, id duro.ID, method string, arg any) ([]byte, error) {
	raw, err := json.Marshal(arg)
	if err != nil {
		return nil, err
	}
	nid, addr := p.addr()
	p.last = nid
	oc, ok := p.cc[addr]
	if !ok {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		oc = pb.NewObjectsClient(conn)
		p.cc[addr] = oc
	}
	resp, err := oc.Call(ctx, &pb.CallRequest{Namespace: ns, ObjectId: id[:], Method: method, Arg: raw})
	if err != nil {
		// The request may have reached the node.
		return nil, &duro.Error{Code: duro.CodeUnavailable, Indeterminate: true, Message: err.Error()}
	}
	if e := resp.Error; e != nil {
		return nil, &duro.Error{Code: duro.Code(e.Code), Message: e.Message, Retryable: e.Retryable,
			Overloaded: e.Overloaded, Indeterminate: e.Indeterminate, Leader: e.Leader}
	}
	return resp.Reply, nil
}

func (p *pinnedCaller) node() string { return p.last }

// worker is one logical client. proc is its process number in the history;
// it changes after an Info op, as in Jepsen, since that op may still be in
// flight.
type worker struct {
	id   int
	proc *atomic.Int64 // next process number, shared
	p    int
	rng  *rand.Rand
	c    caller
	// lastSeen is the last value this worker saw per register key, for CAS.
	lastSeen map[string]*string
}

func (w *worker) newProc() { w.p = int(w.proc.Add(1)) }

// workload generates operations and checks their history.
type workload interface {
	name() string
	// op performs one random operation.
	op(ctx context.Context, w *worker, r *recorder) Rec
	// final reads every object through a fresh SDK client after the heal.
	final(ctx context.Context, c caller, r *recorder) []Rec
	// check validates the history, writing extra files to dir.
	check(h []Rec, dir string) map[string]checker.Result
	// ids returns the IDs of the objects the workload uses.
	ids() []duro.ID
}

func idsOf(ns string, objs []string) []duro.ID {
	var out []duro.ID
	for _, o := range objs {
		out = append(out, duro.IDFromName(ns, o))
	}
	return out
}

func (g *register) ids() []duro.ID   { return idsOf(builtinKV, g.objs) }
func (g *counterW) ids() []duro.ID   { return idsOf(builtinCounter, g.objs) }
func (g *listAppend) ids() []duro.ID { return idsOf(builtinKV, g.objs) }
func (g *setW) ids() []duro.ID       { return idsOf(builtinKV, g.objs) }
func (g *memW) ids() []duro.ID       { return idsOf(builtinMem, g.objs) }
func (m mixedW) ids() []duro.ID {
	var out []duro.ID
	for _, p := range m.parts {
		out = append(out, p.ids()...)
	}
	return out
}

var uniq atomic.Int64

// objects picks n object names of namespace ns; when shard >= 0 they all lie
// in that shard.
func objects(ns, prefix string, n, shards, shard int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		name := fmt.Sprintf("%s%d", prefix, i)
		if shard >= 0 && duro.ShardOf(duro.IDFromName(ns, name), shards) != shard {
			continue
		}
		out = append(out, name)
	}
	return out
}

// do runs one call and fills in the record's outcome and times.
func do(ctx context.Context, c caller, r *recorder, rec *Rec, ns, obj, method string, arg any) []byte {
	rec.Start = r.now()
	reply, err := c.call(ctx, ns, duro.IDFromName(ns, obj), method, arg)
	rec.End = r.now()
	rec.Type = classify(err)
	rec.Node = c.node()
	if err != nil {
		rec.Err = err.Error()
		rec.Code = "other"
		var e *duro.Error
		if errors.As(err, &e) {
			rec.Code = fmt.Sprint(e.Code)
		}
	}
	return reply
}

// ---- register: kv Get/Put/CAS on a few keys per object ----

type register struct {
	objs []string
	keys int
}

func (register) name() string { return "register" }

func regKey(obj string, k int) (string, string) {
	return obj + "/k" + strconv.Itoa(k), "k" + strconv.Itoa(k)
}

func parseReg(s *string) any {
	if s == nil {
		return nil
	}
	n, err := strconv.ParseInt(*s, 10, 64)
	if err != nil {
		return *s // malformed: the checker reports it
	}
	return n
}

func (g *register) op(ctx context.Context, w *worker, r *recorder) Rec {
	obj := g.objs[w.rng.IntN(len(g.objs))]
	full, key := regKey(obj, w.rng.IntN(g.keys))
	rec := Rec{Op: checker.Op{Client: w.p, Object: full}}
	switch x := w.rng.IntN(4); {
	case x < 2:
		rec.F = "get"
		reply := do(ctx, w.c, r, &rec, builtinKV, obj, "Get", map[string]string{"key": key})
		if rec.Type == checker.Ok {
			var res struct{ Value *string }
			if err := json.Unmarshal(reply, &res); err != nil {
				rec.Type, rec.Err = checker.Info, err.Error()
			}
			rec.Result = parseReg(res.Value)
			w.lastSeen[full] = res.Value
		}
		if rec.Type == checker.Info { // a read has no effect: it is a fail
			rec.Type = checker.Fail
		}
	case x == 2:
		v := uniq.Add(1)
		rec.F, rec.Value = "put", v
		do(ctx, w.c, r, &rec, builtinKV, obj, "Put", map[string]string{"key": key, "value": strconv.FormatInt(v, 10)})
	default:
		v := uniq.Add(1)
		vs := strconv.FormatInt(v, 10)
		expect := w.lastSeen[full]
		rec.F, rec.Value, rec.Expect = "cas", v, parseReg(expect)
		reply := do(ctx, w.c, r, &rec, builtinKV, obj, "CAS", map[string]any{"key": key, "expect": expect, "value": vs})
		if rec.Type == checker.Ok {
			var res struct {
				OK    bool `json:"ok"`
				Value *string
			}
			_ = json.Unmarshal(reply, &res)
			if !res.OK {
				rec.Type = checker.Fail // definitely did not swap
			}
			w.lastSeen[full] = res.Value
		}
	}
	return rec
}

func (g *register) final(ctx context.Context, c caller, r *recorder) []Rec {
	var out []Rec
	for _, obj := range g.objs {
		for k := 0; k < g.keys; k++ {
			full, key := regKey(obj, k)
			rec := Rec{Op: checker.Op{Client: -1, Object: full, F: "get"}, Final: true}
			reply := do(ctx, c, r, &rec, builtinKV, obj, "Get", map[string]string{"key": key})
			if rec.Type == checker.Ok {
				var res struct{ Value *string }
				_ = json.Unmarshal(reply, &res)
				rec.Result = parseReg(res.Value)
			} else {
				rec.Type = checker.Fail
			}
			out = append(out, rec)
		}
	}
	return out
}

func (g *register) check(h []Rec, dir string) map[string]checker.Result {
	return map[string]checker.Result{"linearizable": checker.Register(ops(h), dir+"/porcupine.html"),
		"final-read": finalReads(h, len(g.objs)*g.keys), "failed-visible": failedVisible(h)}
}

const (
	builtinKV      = "kv"
	builtinCounter = "counter"
	builtinMem     = "memcounter"
)

// failedVisible counts writes reported as definitely failed whose unique
// value a read later returned (CHAOS T08, G1a): the SDK must never call
// something that may commit a definite failure.
func failedVisible(h []Rec) checker.Result {
	res := checker.Result{Stats: map[string]int{}}
	failed := map[int64]int{}
	for i, r := range h {
		if r.Type == checker.Fail && (r.F == "put" || r.F == "cas") {
			if v, ok := r.Value.(int64); ok {
				failed[v] = i
				res.Stats["failed-writes"]++
			}
		}
	}
	for i, r := range h {
		if r.Type != checker.Ok || r.F != "get" {
			continue
		}
		if v, ok := r.Result.(int64); ok {
			if fi, bad := failed[v]; bad {
				res.Anomalies = append(res.Anomalies, checker.Anomaly{Kind: "failed-but-visible", Object: r.Object, Ops: []int{fi, i},
					Detail: fmt.Sprintf("%s of %d failed (%s) but a read returned it", h[fi].F, v, h[fi].Err)})
			}
		}
	}
	return res
}

// ---- counter: counter.Increment with SDK retries ----

type counterW struct{ objs []string }

func (counterW) name() string { return "counter" }

func (g *counterW) op(ctx context.Context, w *worker, r *recorder) Rec {
	obj := g.objs[w.rng.IntN(len(g.objs))]
	rec := Rec{Op: checker.Op{Client: w.p, Object: obj}}
	if w.rng.IntN(10) == 0 {
		rec.F = "read"
		reply := do(ctx, w.c, r, &rec, builtinCounter, obj, "Get", nil)
		rec.Result = decodeInt(&rec, reply)
		return rec
	}
	rec.F, rec.Value = "add", int64(1)
	do(ctx, w.c, r, &rec, builtinCounter, obj, "Increment", 1)
	return rec
}

func decodeInt(rec *Rec, reply []byte) any {
	if rec.Type != checker.Ok {
		rec.Type = checker.Fail // a failed read has no effect
		return nil
	}
	var n int64
	if err := json.Unmarshal(reply, &n); err != nil {
		rec.Type, rec.Err = checker.Fail, err.Error()
		return nil
	}
	return n
}

func (g *counterW) final(ctx context.Context, c caller, r *recorder) []Rec {
	var out []Rec
	for _, obj := range g.objs {
		rec := Rec{Op: checker.Op{Client: -1, Object: obj, F: "read"}, Final: true}
		reply := do(ctx, c, r, &rec, builtinCounter, obj, "Get", nil)
		rec.Result = decodeInt(&rec, reply)
		out = append(out, rec)
	}
	return out
}

func (g *counterW) check(h []Rec, dir string) map[string]checker.Result {
	return map[string]checker.Result{"counter": checker.Counter(ops(h)), "final-read": finalReads(h, len(g.objs))}
}

// finalReads reports objects whose final read failed (G-3).
func finalReads(h []Rec, want int) checker.Result {
	ok := 0
	var an []checker.Anomaly
	for _, r := range h {
		if !r.Final {
			continue
		}
		if r.Type == checker.Ok {
			ok++
		} else {
			an = append(an, checker.Anomaly{Kind: "unread", Object: r.Object, Detail: "final read failed: " + r.Err})
		}
	}
	if ok < want && len(an) == 0 {
		an = append(an, checker.Anomaly{Kind: "unread", Detail: fmt.Sprintf("%d of %d final reads", ok, want)})
	}
	return checker.Result{Valid: len(an) == 0, Anomalies: an, Stats: map[string]int{"final-reads": ok}}
}

// ---- list-append: kv.Append of unique values ----

type listAppend struct{ objs []string }

func (listAppend) name() string { return "list-append" }

func decodeList(rec *Rec, reply []byte, get bool) {
	if rec.Type != checker.Ok {
		return
	}
	if get {
		var res struct{ Value *string }
		if err := json.Unmarshal(reply, &res); err != nil {
			rec.Type, rec.Err = checker.Fail, err.Error()
			return
		}
		vals := []string{}
		if res.Value != nil {
			if err := json.Unmarshal([]byte(*res.Value), &vals); err != nil {
				rec.Err = "stored list: " + err.Error()
				rec.Result = []string{"<malformed>"}
				return
			}
		}
		rec.Result = vals
		return
	}
	var res struct{ Values []string }
	if err := json.Unmarshal(reply, &res); err == nil {
		rec.Result = res.Values
	}
}

func (g *listAppend) op(ctx context.Context, w *worker, r *recorder) Rec {
	obj := g.objs[w.rng.IntN(len(g.objs))]
	rec := Rec{Op: checker.Op{Client: w.p, Object: obj}}
	if w.rng.IntN(5) == 0 {
		rec.F = "read"
		reply := do(ctx, w.c, r, &rec, builtinKV, obj, "Get", map[string]string{"key": "l"})
		decodeList(&rec, reply, true)
		if rec.Type != checker.Ok {
			rec.Type = checker.Fail
		}
		return rec
	}
	v := "v" + strconv.FormatInt(uniq.Add(1), 10)
	rec.F, rec.Value = "append", v
	reply := do(ctx, w.c, r, &rec, builtinKV, obj, "Append", map[string]string{"key": "l", "value": v})
	decodeList(&rec, reply, false)
	return rec
}

func (g *listAppend) final(ctx context.Context, c caller, r *recorder) []Rec {
	var out []Rec
	for _, obj := range g.objs {
		rec := Rec{Op: checker.Op{Client: -1, Object: obj, F: "read"}, Final: true}
		reply := do(ctx, c, r, &rec, builtinKV, obj, "Get", map[string]string{"key": "l"})
		decodeList(&rec, reply, true)
		out = append(out, rec)
	}
	return out
}

func (g *listAppend) check(h []Rec, dir string) map[string]checker.Result {
	return map[string]checker.Result{"list-append": checker.ListAppend(ops(h)), "final-read": finalReads(h, len(g.objs))}
}

// ---- set: kv.Put of unique keys, read back with kv.List ----

type setW struct{ objs []string }

func (setW) name() string { return "set" }

func decodeSet(rec *Rec, reply []byte) {
	if rec.Type != checker.Ok {
		rec.Type = checker.Fail
		return
	}
	var res struct {
		Items []struct{ Key, Value string }
	}
	if err := json.Unmarshal(reply, &res); err != nil {
		rec.Type, rec.Err = checker.Fail, err.Error()
		return
	}
	vals := []string{}
	for _, it := range res.Items {
		vals = append(vals, it.Value)
	}
	rec.Result = vals
}

func (g *setW) op(ctx context.Context, w *worker, r *recorder) Rec {
	obj := g.objs[w.rng.IntN(len(g.objs))]
	rec := Rec{Op: checker.Op{Client: w.p, Object: obj}}
	if w.rng.IntN(10) == 0 {
		rec.F = "read"
		reply := do(ctx, w.c, r, &rec, builtinKV, obj, "List", map[string]string{"prefix": "e/"})
		decodeSet(&rec, reply)
		return rec
	}
	v := "e" + strconv.FormatInt(uniq.Add(1), 10)
	rec.F, rec.Value = "add", v
	do(ctx, w.c, r, &rec, builtinKV, obj, "Put", map[string]string{"key": "e/" + v, "value": v})
	return rec
}

func (g *setW) final(ctx context.Context, c caller, r *recorder) []Rec {
	var out []Rec
	for _, obj := range g.objs {
		rec := Rec{Op: checker.Op{Client: -1, Object: obj, F: "read"}, Final: true}
		reply := do(ctx, c, r, &rec, builtinKV, obj, "List", map[string]string{"prefix": "e/"})
		decodeSet(&rec, reply)
		out = append(out, rec)
	}
	return out
}

func (g *setW) check(h []Rec, dir string) map[string]checker.Result {
	return map[string]checker.Result{"set": checker.Set(ops(h)), "final-read": finalReads(h, len(g.objs))}
}

// ---- memcounter: Hit with a unique token; exactly once and single owner ----

type memW struct{ objs []string }

func (memW) name() string { return "memcounter" }

func (g *memW) op(ctx context.Context, w *worker, r *recorder) Rec {
	obj := g.objs[w.rng.IntN(len(g.objs))]
	tok := "t" + strconv.FormatInt(uniq.Add(1), 10)
	rec := Rec{Op: checker.Op{Client: w.p, Object: obj, F: "hit", Value: tok}}
	reply := do(ctx, w.c, r, &rec, builtinMem, obj, "Hit", map[string]string{"token": tok})
	if rec.Type == checker.Ok {
		var st struct{ Mem, Stored, Activations int64 }
		if err := json.Unmarshal(reply, &st); err == nil {
			rec.Extra = map[string]int64{"mem": st.Mem, "stored": st.Stored, "activations": st.Activations}
		}
	}
	return rec
}

func (g *memW) final(ctx context.Context, c caller, r *recorder) []Rec {
	var out []Rec
	for _, obj := range g.objs {
		rec := Rec{Op: checker.Op{Client: -1, Object: obj, F: "read"}, Final: true}
		reply := do(ctx, c, r, &rec, builtinMem, obj, "Read", nil)
		if rec.Type == checker.Ok {
			var st struct {
				Mem, Stored int64
				Tokens      []string
			}
			if err := json.Unmarshal(reply, &st); err == nil {
				rec.Result = st.Tokens
				rec.Extra = map[string]int64{"mem": st.Mem, "stored": st.Stored}
			}
		} else {
			rec.Type = checker.Fail
		}
		out = append(out, rec)
	}
	return out
}

// check runs the counter bounds on the stored value, the list checker on the
// tokens (exactly once, real-time order) and the ownership rule: every reply
// has the in-memory value equal to the committed one, and the final counter
// equals the number of distinct tokens.
func (g *memW) check(h []Rec, dir string) map[string]checker.Result {
	var counterOps, listOps []checker.Op
	own := checker.Result{Valid: true, Stats: map[string]int{}}
	for i, r := range h {
		switch r.F {
		case "hit":
			c := r.Op
			c.F, c.Value = "add", int64(1)
			counterOps = append(counterOps, c)
			l := r.Op
			l.F = "append"
			listOps = append(listOps, l)
			if r.Type == checker.Ok && r.Extra != nil {
				own.Stats["replies"]++
				if r.Extra["mem"] != r.Extra["stored"] {
					own.Anomalies = append(own.Anomalies, checker.Anomaly{Kind: "double-ownership", Object: r.Object, Ops: []int{i},
						Detail: fmt.Sprintf("reply from node %q: in-memory %d != committed %d", r.Node, r.Extra["mem"], r.Extra["stored"])})
				}
			}
		case "read":
			if r.Type == checker.Ok && r.Extra != nil {
				c := r.Op
				c.Result = r.Extra["stored"]
				counterOps = append(counterOps, c)
				listOps = append(listOps, r.Op)
				toks, _ := r.Result.([]string)
				distinct := map[string]bool{}
				for _, t := range toks {
					distinct[t] = true
				}
				if r.Extra["stored"] != int64(len(distinct)) {
					own.Anomalies = append(own.Anomalies, checker.Anomaly{Kind: "count-mismatch", Object: r.Object, Ops: []int{i},
						Detail: fmt.Sprintf("counter %d but %d distinct tokens", r.Extra["stored"], len(distinct))})
				}
				if r.Extra["mem"] != r.Extra["stored"] {
					own.Anomalies = append(own.Anomalies, checker.Anomaly{Kind: "double-ownership", Object: r.Object, Ops: []int{i},
						Detail: fmt.Sprintf("final read: in-memory %d != committed %d", r.Extra["mem"], r.Extra["stored"])})
				}
			} else if r.Final {
				listOps = append(listOps, r.Op)
			}
		}
	}
	own.Valid = len(own.Anomalies) == 0
	return map[string]checker.Result{
		"counter": checker.Counter(counterOps), "tokens": checker.ListAppend(listOps),
		"ownership": own, "final-read": finalReads(h, len(g.objs)),
	}
}

// mixedW runs several workloads side by side (T05: register plus memcounter).
type mixedW struct{ parts []workload }

func (m mixedW) name() string {
	s := ""
	for i, p := range m.parts {
		if i > 0 {
			s += "+"
		}
		s += p.name()
	}
	return s
}

func (m mixedW) op(ctx context.Context, w *worker, r *recorder) Rec {
	return m.parts[w.id%len(m.parts)].op(ctx, w, r)
}

func (m mixedW) final(ctx context.Context, c caller, r *recorder) []Rec {
	var out []Rec
	for _, p := range m.parts {
		out = append(out, p.final(ctx, c, r)...)
	}
	return out
}

func (m mixedW) check(h []Rec, dir string) map[string]checker.Result {
	out := map[string]checker.Result{}
	for _, p := range m.parts {
		// Each part checks only its own objects (distinct namespaces'
		// object names never collide: prefixes differ).
		var mine []Rec
		for _, r := range h {
			if ownerOf(r.Object) == p.name() {
				mine = append(mine, r)
			}
		}
		for k, v := range p.check(mine, dir) {
			out[p.name()+"/"+k] = v
		}
	}
	return out
}

// Object name prefixes per workload, so mixed histories can be split.
var prefixes = map[string]string{"register": "r", "counter": "c", "list-append": "l", "set": "s", "memcounter": "m"}

func ownerOf(obj string) string {
	for w, p := range prefixes {
		if len(obj) > len(p) && obj[:len(p)] == p && obj[len(p)] >= '0' && obj[len(p)] <= '9' {
			return w
		}
	}
	return ""
}

// newWorkload builds the named workload over objects in shard (if >= 0).
func newWorkload(name string, shards, shard int) (workload, error) {
	switch name {
	case "register":
		return &register{objs: objects(builtinKV, "r", 4, shards, shard), keys: 3}, nil
	case "counter":
		return &counterW{objs: objects(builtinCounter, "c", 5, shards, shard)}, nil
	case "list-append":
		return &listAppend{objs: objects(builtinKV, "l", 5, shards, shard)}, nil
	case "set":
		return &setW{objs: objects(builtinKV, "s", 8, shards, shard)}, nil
	case "memcounter":
		return &memW{objs: objects(builtinMem, "m", 4, shards, shard)}, nil
	case "register+memcounter":
		a, _ := newWorkload("register", shards, shard)
		b, _ := newWorkload("memcounter", shards, shard)
		return mixedW{parts: []workload{a, b}}, nil
	}
	return nil, fmt.Errorf("unknown workload %q (known: register, counter, list-append, set, memcounter, register+memcounter)", name)
}

// Workloads lists the workloads of the full matrix.
var Workloads = []string{"register", "counter", "list-append", "set", "memcounter"}
