package shardtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/shard"
)

// Namespaces of the test classes.
const (
	CounterNamespace = "counter"
	KVNamespace      = "kv"
	MemNamespace     = "memcounter"
)

// CounterKey is the storage key of a counter's value (decimal text).
var CounterKey = []byte("n")

// Registry returns a fresh registry holding the test classes.
func Registry() *duro.Registry {
	return duro.NewRegistry(newCounterClass(), newKVClass(), newMemClass())
}

// counter is an int64 counter kept in storage under CounterKey.
type counter struct{}

func newCounterClass() *duro.Class {
	c := duro.NewClass(CounterNamespace, func() *counter { return &counter{} })
	duro.Method(c, "Increment", func(_ *counter, ctx duro.Context, by int64) (int64, error) {
		n, err := loadCounter(ctx.Storage())
		if err != nil {
			return 0, err
		}
		n += by
		return n, ctx.Storage().Put(CounterKey, []byte(strconv.FormatInt(n, 10)))
	})
	duro.Method(c, "Get", func(_ *counter, ctx duro.Context, _ struct{}) (int64, error) {
		return loadCounter(ctx.Storage())
	})
	return c
}

func loadCounter(st duro.Storage) (int64, error) {
	v, ok, err := st.Get(CounterKey)
	if err != nil || !ok {
		return 0, err
	}
	return ParseCounter(v)
}

// ParseCounter decodes a counter value as stored under CounterKey.
func ParseCounter(v []byte) (int64, error) {
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("counter: corrupt value %q", v)
	}
	return n, nil
}

// Op is one storage operation of a KV Run script.
//
// Kinds: "put" (Key, Value), "get" (Key), "delete" (Key), "list" (List),
// "deleteall", "putmany" (KVs), "getmany" (Keys), "deletemany" (Keys),
// "txn" (Ops run inside Storage.Transaction; Fail makes the transaction's
// function return an error after them, so they are rolled back), and "fail"
// (the method returns an application error: nothing of the call is written).
type Op struct {
	Kind  string   `json:"kind"`
	Key   string   `json:"key,omitempty"`
	Value string   `json:"value,omitempty"`
	Keys  []string `json:"keys,omitempty"`
	KVs   []Pair   `json:"kvs,omitempty"`
	List  *List    `json:"list,omitempty"`
	Ops   []Op     `json:"ops,omitempty"`
	Fail  bool     `json:"fail,omitempty"`
	// Tolerate records this op's error in its OpResult instead of failing the
	// call with it.
	Tolerate bool `json:"tolerate,omitempty"`
}

// List is the argument of a "list" op. Empty Start/End/Prefix are absent.
type List struct {
	Prefix  string `json:"prefix,omitempty"`
	Start   string `json:"start,omitempty"`
	End     string `json:"end,omitempty"`
	Reverse bool   `json:"reverse,omitempty"`
	Limit   int    `json:"limit,omitempty"`
}

// Pair is one key and value.
type Pair struct {
	Key   string `json:"k"`
	Value string `json:"v"`
}

// OpResult is the outcome of one Op.
type OpResult struct {
	Value string     `json:"value,omitempty"`
	Found bool       `json:"found,omitempty"`
	Count int        `json:"count,omitempty"`
	KVs   []Pair     `json:"kvs,omitempty"`
	Sub   []OpResult `json:"sub,omitempty"` // results of a txn's ops
	Err   string     `json:"err,omitempty"`
	Code  duro.Code  `json:"code,omitempty"` // code of Err
}

// ErrRollback is what a failing "txn" op's function returns.
var ErrRollback = errors.New("kv: transaction rolled back on request")

// kv runs storage scripts.
type kv struct{}

func newKVClass() *duro.Class {
	c := duro.NewClass(KVNamespace, func() *kv { return &kv{} })
	duro.Method(c, "Run", func(_ *kv, ctx duro.Context, ops []Op) ([]OpResult, error) {
		return runOps(ctx.Storage(), ops)
	})
	duro.Method(c, "Put", func(_ *kv, ctx duro.Context, p Pair) (bool, error) {
		return true, ctx.Storage().Put([]byte(p.Key), []byte(p.Value))
	})
	duro.Method(c, "Get", func(_ *kv, ctx duro.Context, key string) (*string, error) {
		v, ok, err := ctx.Storage().Get([]byte(key))
		if err != nil || !ok {
			return nil, err
		}
		s := string(v)
		return &s, nil
	})
	duro.Method(c, "List", func(_ *kv, ctx duro.Context, l List) ([]Pair, error) {
		kvs, err := ctx.Storage().List(l.options())
		return pairs(kvs), err
	})
	return c
}

func (l *List) options() duro.ListOptions {
	o := duro.ListOptions{Reverse: l.Reverse, Limit: l.Limit}
	if l.Prefix != "" {
		o.Prefix = []byte(l.Prefix)
	}
	if l.Start != "" {
		o.Start = []byte(l.Start)
	}
	if l.End != "" {
		o.End = []byte(l.End)
	}
	return o
}

func pairs(kvs []duro.KV) []Pair {
	out := make([]Pair, len(kvs))
	for i, e := range kvs {
		out[i] = Pair{Key: string(e.Key), Value: string(e.Value)}
	}
	return out
}

func runOps(st duro.Storage, ops []Op) ([]OpResult, error) {
	out := make([]OpResult, 0, len(ops))
	for _, op := range ops {
		r, err := runOp(st, op)
		if err != nil {
			if !op.Tolerate {
				return nil, err
			}
			r.Err, r.Code = err.Error(), duro.AsError(err).Code
		}
		out = append(out, r)
	}
	return out, nil
}

func runOp(st duro.Storage, op Op) (OpResult, error) {
	var r OpResult
	var err error
	switch op.Kind {
	case "put":
		err = st.Put([]byte(op.Key), []byte(op.Value))
	case "get":
		var v []byte
		v, r.Found, err = st.Get([]byte(op.Key))
		r.Value = string(v)
	case "delete":
		r.Found, err = st.Delete([]byte(op.Key))
	case "list":
		l := op.List
		if l == nil {
			l = &List{}
		}
		var kvs []duro.KV
		kvs, err = st.List(l.options())
		r.KVs = pairs(kvs)
	case "deleteall":
		err = st.DeleteAll()
	case "putmany":
		kvs := make([]duro.KV, len(op.KVs))
		for i, p := range op.KVs {
			kvs[i] = duro.KV{Key: []byte(p.Key), Value: []byte(p.Value)}
		}
		err = st.PutMany(kvs)
	case "getmany":
		var m map[string][]byte
		m, err = st.GetMany(byteKeys(op.Keys))
		for _, k := range op.Keys {
			if v, ok := m[k]; ok {
				r.KVs = append(r.KVs, Pair{Key: k, Value: string(v)})
			}
		}
	case "deletemany":
		r.Count, err = st.DeleteMany(byteKeys(op.Keys))
	case "txn":
		err = st.Transaction(func(tx duro.Storage) error {
			sub, err := runOps(tx, op.Ops)
			r.Sub = sub
			if err != nil {
				return err
			}
			if op.Fail {
				return ErrRollback
			}
			return nil
		})
	case "fail":
		err = errors.New("kv: failing on request")
	default:
		err = fmt.Errorf("%w: unknown op %q", duro.ErrInvalidArgument, op.Kind)
	}
	return r, err
}

func byteKeys(ks []string) [][]byte {
	out := make([][]byte, len(ks))
	for i, k := range ks {
		out[i] = []byte(k)
	}
	return out
}

// Increment returns a counter Increment request.
func Increment(id duro.ID, by int64) *shard.Request {
	return &shard.Request{Namespace: CounterNamespace, Object: id, Method: "Increment", Arg: mustJSON(by)}
}

// Get returns a counter Get request.
func Get(id duro.ID) *shard.Request {
	return &shard.Request{Namespace: CounterNamespace, Object: id, Method: "Get"}
}

// Run returns a KV Run request.
func Run(id duro.ID, ops ...Op) *shard.Request {
	return &shard.Request{Namespace: KVNamespace, Object: id, Method: "Run", Arg: mustJSON(ops)}
}

// Int decodes an int64 reply.
func Int(r shard.Result) (int64, error) {
	if r.Err != nil {
		return 0, r.Err
	}
	var n int64
	if err := json.Unmarshal(r.Reply, &n); err != nil {
		return 0, fmt.Errorf("reply %q: %w", r.Reply, err)
	}
	return n, nil
}

// Results decodes a KV Run reply.
func Results(r shard.Result) ([]OpResult, error) {
	if r.Err != nil {
		return nil, r.Err
	}
	var out []OpResult
	if err := json.Unmarshal(r.Reply, &out); err != nil {
		return nil, fmt.Errorf("reply %q: %w", r.Reply, err)
	}
	return out, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// MemNoActivateKey, when present in a memcounter's storage, makes its
// Activate hook fail.
var MemNoActivateKey = []byte("no-activate")

// MemState is the reply of a memcounter Hit.
type MemState struct {
	Calls       int64 // calls this instance ran (in memory)
	Activations int64 // times this instance's Activate ran
	Loaded      int64 // counter value Activate read from storage
	Stored      int64 // counter value in storage after this call
}

// memCounter counts its calls in memory and in storage, and implements
// duro.Activator.
type memCounter struct {
	calls, activations, loaded int64
}

func (m *memCounter) Activate(ctx duro.Context) error {
	m.activations++
	n, err := loadCounter(ctx.Storage())
	if err != nil {
		return err
	}
	m.loaded = n
	if _, ok, err := ctx.Storage().Get(MemNoActivateKey); err != nil || ok {
		if err == nil {
			err = duro.Errorf(duro.CodeFailedPrecondition, "memcounter: activation refused")
		}
		return err
	}
	return nil
}

func newMemClass() *duro.Class {
	c := duro.NewClass(MemNamespace, func() *memCounter { return &memCounter{} })
	duro.Method(c, "Hit", func(m *memCounter, ctx duro.Context, _ struct{}) (MemState, error) {
		n, err := loadCounter(ctx.Storage())
		if err != nil {
			return MemState{}, err
		}
		n++
		m.calls++
		st := MemState{Calls: m.calls, Activations: m.activations, Loaded: m.loaded, Stored: n}
		return st, ctx.Storage().Put(CounterKey, []byte(strconv.FormatInt(n, 10)))
	})
	duro.Method(c, "Peek", func(m *memCounter, ctx duro.Context, _ struct{}) (MemState, error) {
		n, err := loadCounter(ctx.Storage())
		return MemState{Calls: m.calls, Activations: m.activations, Loaded: m.loaded, Stored: n}, err
	})
	duro.Method(c, "RefuseActivation", func(_ *memCounter, ctx duro.Context, _ struct{}) (bool, error) {
		return true, ctx.Storage().Put(MemNoActivateKey, []byte("1"))
	})
	return c
}

// Hit returns a memcounter Hit request.
func Hit(id duro.ID) *shard.Request {
	return &shard.Request{Namespace: MemNamespace, Object: id, Method: "Hit", Arg: []byte("{}")}
}

// RefuseActivation returns a memcounter request that makes later activations
// of the object fail.
func RefuseActivation(id duro.ID) *shard.Request {
	return &shard.Request{Namespace: MemNamespace, Object: id, Method: "RefuseActivation", Arg: []byte("{}")}
}

// Mem decodes a memcounter Hit reply.
func Mem(r shard.Result) (MemState, error) {
	var st MemState
	if r.Err != nil {
		return st, r.Err
	}
	err := json.Unmarshal(bytes.TrimSpace(r.Reply), &st)
	return st, err
}
