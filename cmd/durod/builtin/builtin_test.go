package builtin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/duro-io/duro"
)

// memStorage is a map-backed duro.Storage for tests.
type memStorage struct {
	m        map[string][]byte
	maxValue int // 0: unlimited
	alarm    time.Time
}

func (s *memStorage) GetAlarm() (time.Time, bool, error) { return s.alarm, !s.alarm.IsZero(), nil }
func (s *memStorage) SetAlarm(t time.Time) error         { s.alarm = t; return nil }
func (s *memStorage) DeleteAlarm() error                 { s.alarm = time.Time{}; return nil }

func newMem() *memStorage { return &memStorage{m: map[string][]byte{}} }

func (s *memStorage) Get(k []byte) ([]byte, bool, error) {
	v, ok := s.m[string(k)]
	return bytes.Clone(v), ok, nil
}

func (s *memStorage) GetMany(keys [][]byte) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, k := range keys {
		if v, ok := s.m[string(k)]; ok {
			out[string(k)] = bytes.Clone(v)
		}
	}
	return out, nil
}

func (s *memStorage) Put(k, v []byte) error {
	if s.maxValue > 0 && len(v) > s.maxValue {
		return fmt.Errorf("%w: value of %d bytes too long", duro.ErrInvalidArgument, len(v))
	}
	s.m[string(k)] = bytes.Clone(v)
	return nil
}

func (s *memStorage) PutMany(kvs []duro.KV) error {
	for _, e := range kvs {
		if err := s.Put(e.Key, e.Value); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStorage) Delete(k []byte) (bool, error) {
	_, ok := s.m[string(k)]
	delete(s.m, string(k))
	return ok, nil
}

func (s *memStorage) DeleteMany(keys [][]byte) (int, error) {
	n := 0
	for _, k := range keys {
		if ok, _ := s.Delete(k); ok {
			n++
		}
	}
	return n, nil
}

func (s *memStorage) List(o duro.ListOptions) ([]duro.KV, error) {
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		if o.Start != nil && k < string(o.Start) ||
			o.End != nil && k >= string(o.End) ||
			!strings.HasPrefix(k, string(o.Prefix)) {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if o.Reverse {
		for i, j := 0, len(keys)-1; i < j; i, j = i+1, j-1 {
			keys[i], keys[j] = keys[j], keys[i]
		}
	}
	if o.Limit > 0 && len(keys) > o.Limit {
		keys = keys[:o.Limit]
	}
	out := make([]duro.KV, len(keys))
	for i, k := range keys {
		out[i] = duro.KV{Key: []byte(k), Value: bytes.Clone(s.m[k])}
	}
	return out, nil
}

func (s *memStorage) DeleteAll() error { clear(s.m); return nil }

func (s *memStorage) Transaction(fn func(duro.Storage) error) error {
	saved := make(map[string][]byte, len(s.m))
	for k, v := range s.m {
		saved[k] = v
	}
	if err := fn(s); err != nil {
		s.m = saved
		return err
	}
	return nil
}

// memCtx is a duro.Context over a memStorage.
type memCtx struct {
	context.Context
	ns string
	st *memStorage
}

func (c *memCtx) ID() duro.ID           { return duro.IDFromName(c.ns, "test") }
func (c *memCtx) Namespace() string     { return c.ns }
func (c *memCtx) Storage() duro.Storage { return c.st }
func (c *memCtx) Now() duro.Time        { return time.Unix(1700000000, 0) }
func (c *memCtx) Stub(string, duro.ID) duro.Stub {
	panic("memCtx: calls between objects are not supported in unit tests")
}

// object is one instance of a class with its own storage.
type object struct {
	t    *testing.T
	cls  *duro.Class
	inst duro.Instance
	ctx  *memCtx
}

func newObject(t *testing.T, ns string) *object {
	t.Helper()
	for _, c := range Classes() {
		if c.Name() == ns {
			return &object{t: t, cls: c, inst: c.New(), ctx: &memCtx{Context: context.Background(), ns: ns, st: newMem()}}
		}
	}
	t.Fatalf("no class %q", ns)
	return nil
}

// call invokes method m with the raw JSON argument arg.
func (o *object) call(m, arg string) (string, error) {
	o.t.Helper()
	h, ok := o.cls.Handler(m)
	if !ok {
		o.t.Fatalf("%s has no method %q", o.cls.Name(), m)
	}
	res, err := h(o.ctx, o.inst, []byte(arg))
	return string(res), err
}

// must calls m and checks the result is JSON-equal to want.
func (o *object) must(m, arg, want string) {
	o.t.Helper()
	got, err := o.call(m, arg)
	if err != nil {
		o.t.Fatalf("%s(%s): %v", m, arg, err)
	}
	if !jsonEqual(o.t, got, want) {
		o.t.Fatalf("%s(%s) = %s, want %s", m, arg, got, want)
	}
}

// invalid calls m and checks it fails with ErrInvalidArgument without writes.
func (o *object) invalid(m, arg string) {
	o.t.Helper()
	before := fmt.Sprint(o.ctx.st.m)
	_, err := o.call(m, arg)
	if !errors.Is(err, duro.ErrInvalidArgument) {
		o.t.Fatalf("%s(%s): err = %v, want ErrInvalidArgument", m, arg, err)
	}
	if after := fmt.Sprint(o.ctx.st.m); after != before {
		o.t.Fatalf("%s(%s) failed but wrote: %s -> %s", m, arg, before, after)
	}
}

func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("bad JSON %q: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("bad JSON %q: %v", b, err)
	}
	return fmt.Sprintf("%#v", x) == fmt.Sprintf("%#v", y)
}

func TestClasses(t *testing.T) {
	cs := Classes()
	var names []string
	for _, c := range cs {
		names = append(names, c.Name())
	}
	if got := strings.Join(names, ","); got != "counter,kv,lock,memcounter,room" {
		t.Fatalf("Classes() = %s", got)
	}
	duro.NewRegistry(Classes()...) // panics on duplicate namespaces
	if got := strings.Join(cs[1].Methods(), ","); got != "Append,CAS,Delete,DeleteAlarm,Get,GetAlarm,List,Put,SetAlarm" {
		t.Fatalf("kv methods = %s", got)
	}
}

func TestCounter(t *testing.T) {
	o := newObject(t, "counter")
	o.must("Get", "", "0")
	o.must("Increment", "5", "5")
	o.must("Increment", "-7", "-2")
	o.must("Increment", "", "-2") // absent argument: by 0
	o.must("Get", `{"ignored":true}`, "-2")
	o.must("Get", "3", "-2")
	if got := string(o.ctx.st.m["n"]); got != "-2" {
		t.Fatalf("stored %q", got)
	}
}

func TestCounterOverflow(t *testing.T) {
	o := newObject(t, "counter")
	o.must("Increment", fmt.Sprint(int64(math.MaxInt64)), fmt.Sprint(int64(math.MaxInt64)))
	o.invalid("Increment", "1")
	o.must("Increment", "-1", fmt.Sprint(int64(math.MaxInt64-1)))

	o = newObject(t, "counter")
	o.must("Increment", "-1", "-1")
	o.must("Increment", fmt.Sprint(int64(math.MinInt64+1)), fmt.Sprint(int64(math.MinInt64)))
	o.invalid("Increment", "-1")
	o.must("Get", "", fmt.Sprint(int64(math.MinInt64)))
}

func TestCounterBadArgument(t *testing.T) {
	o := newObject(t, "counter")
	o.invalid("Increment", "{")
	o.invalid("Increment", `"1"`)
	o.invalid("Increment", "1.5")
	o.invalid("Increment", "9223372036854775808")
}

func TestKVPutGetDelete(t *testing.T) {
	o := newObject(t, "kv")
	o.must("Get", `{"key":"a"}`, `{"value":null,"found":false}`)
	o.must("Put", `{"key":"a","value":"1"}`, `{}`)
	o.must("Get", `{"key":"a"}`, `{"value":"1","found":true}`)
	o.must("Put", `{"key":"a","value":""}`, `{}`)
	o.must("Get", `{"key":"a"}`, `{"value":"","found":true}`)
	o.must("Delete", `{"key":"a"}`, `{"deleted":true}`)
	o.must("Delete", `{"key":"a"}`, `{"deleted":false}`)
	o.must("Get", `{"key":"a"}`, `{"value":null,"found":false}`)
}

func TestKVList(t *testing.T) {
	o := newObject(t, "kv")
	o.must("List", ``, `{"items":[]}`)
	for _, k := range []string{"b/2", "a", "b/1", "b/3", "c"} {
		o.must("Put", `{"key":"`+k+`","value":"v`+k+`"}`, `{}`)
	}
	o.must("List", `{}`, `{"items":[{"key":"a","value":"va"},{"key":"b/1","value":"vb/1"},`+
		`{"key":"b/2","value":"vb/2"},{"key":"b/3","value":"vb/3"},{"key":"c","value":"vc"}]}`)
	o.must("List", `{"prefix":"b/"}`, `{"items":[{"key":"b/1","value":"vb/1"},{"key":"b/2","value":"vb/2"},{"key":"b/3","value":"vb/3"}]}`)
	o.must("List", `{"prefix":"b/","reverse":true,"limit":2}`, `{"items":[{"key":"b/3","value":"vb/3"},{"key":"b/2","value":"vb/2"}]}`)
	o.must("List", `{"start":"b/2","end":"c"}`, `{"items":[{"key":"b/2","value":"vb/2"},{"key":"b/3","value":"vb/3"}]}`)
	o.must("List", `{"limit":1}`, `{"items":[{"key":"a","value":"va"}]}`)
	o.must("List", `{"prefix":"zz"}`, `{"items":[]}`)
	if got, _ := o.call("List", `{"prefix":"zz"}`); got != `{"items":[]}` {
		t.Fatalf("empty list encodes as %s", got)
	}
	o.invalid("List", `{"limit":-1}`)
}

func TestKVCAS(t *testing.T) {
	o := newObject(t, "kv")
	// Absent key, expect absent: create.
	o.must("CAS", `{"key":"k","value":"1"}`, `{"ok":true,"value":"1"}`)
	// Present key, expect absent: mismatch reports the current value.
	o.must("CAS", `{"key":"k","expect":null,"value":"2"}`, `{"ok":false,"value":"1"}`)
	// Present key, wrong expectation.
	o.must("CAS", `{"key":"k","expect":"9","value":"2"}`, `{"ok":false,"value":"1"}`)
	// Present key, right expectation.
	o.must("CAS", `{"key":"k","expect":"1","value":"2"}`, `{"ok":true,"value":"2"}`)
	o.must("Get", `{"key":"k"}`, `{"value":"2","found":true}`)
	// Delete on success.
	o.must("CAS", `{"key":"k","expect":"2"}`, `{"ok":true,"value":null}`)
	o.must("Get", `{"key":"k"}`, `{"value":null,"found":false}`)
	// Absent key, expecting a value: mismatch, value null.
	o.must("CAS", `{"key":"k","expect":"2","value":"3"}`, `{"ok":false,"value":null}`)
	// Absent key, expect absent, delete: a no-op success.
	o.must("CAS", `{"key":"k","expect":null,"value":null}`, `{"ok":true,"value":null}`)
	if len(o.ctx.st.m) != 0 {
		t.Fatalf("storage not empty: %v", o.ctx.st.m)
	}
	// Empty string is a value, distinct from absent.
	o.must("CAS", `{"key":"e","value":""}`, `{"ok":true,"value":""}`)
	o.must("CAS", `{"key":"e","value":"x"}`, `{"ok":false,"value":""}`)
	o.must("CAS", `{"key":"e","expect":"","value":"x"}`, `{"ok":true,"value":"x"}`)
}

func TestKVAppend(t *testing.T) {
	o := newObject(t, "kv")
	o.must("Append", `{"key":"l","value":"a"}`, `{"values":["a"]}`)
	o.must("Append", `{"key":"l","value":"b"}`, `{"values":["a","b"]}`)
	o.must("Append", `{"key":"l","value":"a"}`, `{"values":["a","b","a"]}`)
	o.must("Get", `{"key":"l"}`, `{"value":"[\"a\",\"b\",\"a\"]","found":true}`)

	o.must("Put", `{"key":"s","value":"plain"}`, `{}`)
	o.invalid("Append", `{"key":"s","value":"x"}`)
	o.must("Put", `{"key":"s","value":"null"}`, `{}`)
	o.invalid("Append", `{"key":"s","value":"x"}`)
	o.must("Put", `{"key":"s","value":"[1,2]"}`, `{}`)
	o.invalid("Append", `{"key":"s","value":"x"}`)
	o.must("Put", `{"key":"s","value":"[]"}`, `{}`)
	o.must("Append", `{"key":"s","value":"x"}`, `{"values":["x"]}`)
}

func TestKVInvalid(t *testing.T) {
	o := newObject(t, "kv")
	for _, m := range []string{"Put", "Get", "Delete", "CAS", "Append"} {
		o.invalid(m, `{"key":""}`)
		o.invalid(m, ``) // absent argument: empty key
		o.invalid(m, `{"key":`)
		o.invalid(m, `[1]`)
		o.invalid(m, `{"key":1}`)
	}
	_, err := o.call("Put", `{"key":""}`)
	if !strings.Contains(err.Error(), "kv: key must not be empty") {
		t.Fatalf("err = %v", err)
	}
	o.invalid("List", `{"prefix":`)
	o.invalid("CAS", `{"key":"k","expect":1}`)
	o.invalid("Put", `{"key":"k","value":5}`)
}

func TestKVStorageErrorPropagates(t *testing.T) {
	o := newObject(t, "kv")
	o.ctx.st.maxValue = 4
	o.invalid("Put", `{"key":"k","value":"12345"}`)
	o.invalid("CAS", `{"key":"k","value":"12345"}`)
	o.invalid("Append", `{"key":"k","value":"12345"}`)
	o.must("Put", `{"key":"k","value":"1234"}`, `{}`)
}

func TestMemCounter(t *testing.T) {
	o := newObject(t, "memcounter")
	o.must("Hit", `{"token":"a"}`, `{"mem":1,"stored":1,"activations":0}`)
	o.must("Hit", `{"token":"b"}`, `{"mem":2,"stored":2,"activations":0}`)
	o.must("Read", ``, `{"mem":2,"stored":2,"activations":0,"tokens":["a","b"]}`)
	o.invalid("Hit", `{"token":""}`)

	// A fresh instance on the same storage (a new leader) is rebuilt from
	// the committed value by Activate.
	fresh := &object{t: t, cls: o.cls, inst: o.cls.New(), ctx: o.ctx}
	if err := fresh.inst.(duro.Activator).Activate(fresh.ctx); err != nil {
		t.Fatal(err)
	}
	fresh.must("Hit", `{"token":"c"}`, `{"mem":3,"stored":3,"activations":1}`)
	// The deposed instance, if it ran again, would report a stale memory
	// value: exactly what the chaos checker looks for.
	o.must("Hit", `{"token":"d"}`, `{"mem":3,"stored":4,"activations":0}`)
	o.must("Read", ``, `{"mem":3,"stored":4,"activations":0,"tokens":["a","b","c","d"]}`)
}
