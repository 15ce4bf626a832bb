package shard

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/fsm"
)

// writeSet is the normalised writes of one turn: an optional DeleteAll, then
// the final value of each key written (nil value: deleted).
type writeSet struct {
	clearAll bool
	m        map[string]*[]byte
	alarm    fsm.AlarmChange // the turn's change to the object's alarm
}

func newWriteSet() *writeSet { return &writeSet{m: map[string]*[]byte{}} }

func (w *writeSet) empty() bool {
	return !w.clearAll && len(w.m) == 0 && w.alarm.Kind == fsm.AlarmKeep
}

func (w *writeSet) clone() *writeSet {
	c := &writeSet{clearAll: w.clearAll, m: make(map[string]*[]byte, len(w.m)), alarm: w.alarm}
	for k, v := range w.m {
		c.m[k] = v
	}
	return c
}

// lookup reports the value of key in w: found tells whether w decides it.
func (w *writeSet) lookup(key []byte) (val []byte, exists, found bool) {
	if v, ok := w.m[string(key)]; ok {
		if v == nil {
			return nil, false, true
		}
		return *v, true, true
	}
	if w.clearAll {
		return nil, false, true
	}
	return nil, false, false
}

// ops returns the writes in key order, so entries are deterministic.
func (w *writeSet) ops() []fsm.Op {
	keys := make([]string, 0, len(w.m))
	for k := range w.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ops := make([]fsm.Op, len(keys))
	for i, k := range keys {
		if v := w.m[k]; v != nil {
			ops[i] = fsm.Op{Kind: fsm.OpPut, Key: []byte(k), Value: *v}
		} else {
			ops[i] = fsm.Op{Kind: fsm.OpDelete, Key: []byte(k)}
		}
	}
	return ops
}

// turnStore is the duro.Storage of one turn: the turn's own writes over the
// object's pending (proposed, not yet applied) entries over applied state.
type turnStore struct {
	obj      *object
	overlays []*entry // oldest first, as of the turn's start
	ws       *writeSet
	limits   Limits
}

func (t *turnStore) checkKey(k []byte) error {
	if max := t.limits.MaxKeyBytes; max > 0 && len(k) > max {
		return fmt.Errorf("%w: key is %d bytes, the limit is %d", duro.ErrInvalidArgument, len(k), max)
	}
	return nil
}

func (t *turnStore) checkValue(v []byte) error {
	if max := t.limits.MaxValueBytes; max > 0 && len(v) > max {
		return fmt.Errorf("%w: value is %d bytes, the limit is %d", duro.ErrInvalidArgument, len(v), max)
	}
	return nil
}

func (t *turnStore) Get(key []byte) ([]byte, bool, error) {
	if err := t.checkKey(key); err != nil {
		return nil, false, err
	}
	if v, ok, found := t.ws.lookup(key); found {
		return clone(v), ok, nil
	}
	for i := len(t.overlays) - 1; i >= 0; i-- {
		if v, ok, found := t.overlays[i].ws.lookup(key); found {
			return clone(v), ok, nil
		}
	}
	return t.obj.h.s.machine.Get(t.obj.id, key)
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

func (t *turnStore) GetMany(keys [][]byte) (map[string][]byte, error) {
	out := make(map[string][]byte, len(keys))
	for _, k := range keys {
		v, ok, err := t.Get(k)
		if err != nil {
			return nil, err
		}
		if ok {
			out[string(k)] = v
		}
	}
	return out, nil
}

func (t *turnStore) Put(key, value []byte) error {
	if err := t.checkKey(key); err != nil {
		return err
	}
	if err := t.checkValue(value); err != nil {
		return err
	}
	v := clone(value)
	if v == nil {
		v = []byte{}
	}
	t.ws.m[string(key)] = &v
	return nil
}

func (t *turnStore) PutMany(kvs []duro.KV) error {
	for _, kv := range kvs {
		if err := t.checkKey(kv.Key); err != nil {
			return err
		}
		if err := t.checkValue(kv.Value); err != nil {
			return err
		}
	}
	for _, kv := range kvs {
		t.Put(kv.Key, kv.Value)
	}
	return nil
}

func (t *turnStore) Delete(key []byte) (bool, error) {
	_, ok, err := t.Get(key)
	if err != nil {
		return false, err
	}
	t.ws.m[string(key)] = nil
	return ok, nil
}

func (t *turnStore) DeleteMany(keys [][]byte) (int, error) {
	for _, k := range keys {
		if err := t.checkKey(k); err != nil {
			return 0, err
		}
	}
	n := 0
	for _, k := range keys {
		ok, _ := t.Delete(k)
		if ok {
			n++
		}
	}
	return n, nil
}

func (t *turnStore) DeleteAll() error {
	t.ws.clearAll = true
	t.ws.m = map[string]*[]byte{}
	return nil
}

func (t *turnStore) Transaction(fn func(duro.Storage) error) error {
	saved := t.ws.clone()
	if err := fn(t); err != nil {
		t.ws = saved
		return err
	}
	return nil
}

func (t *turnStore) List(o duro.ListOptions) ([]duro.KV, error) {
	if o.Limit < 0 {
		return nil, fmt.Errorf("%w: list limit must not be negative", duro.ErrInvalidArgument)
	}
	lo, hi := o.Start, o.End
	if len(o.Prefix) > 0 {
		if bytes.Compare(o.Prefix, lo) > 0 {
			lo = o.Prefix
		}
		if pe := prefixEnd(o.Prefix); pe != nil && (hi == nil || bytes.Compare(pe, hi) < 0) {
			hi = pe
		}
	}
	in := func(k []byte) bool {
		return bytes.Compare(k, lo) >= 0 && (hi == nil || bytes.Compare(k, hi) < 0)
	}
	// Merge the layers, oldest first, into the keys they decide.
	layers := append(append([]*writeSet{}, wsOf(t.overlays)...), t.ws)
	decided := map[string]*[]byte{}
	useMachine := true
	for _, w := range layers {
		if w.clearAll {
			decided = map[string]*[]byte{}
			useMachine = false
		}
		for k, v := range w.m {
			if in([]byte(k)) {
				decided[k] = v
			}
		}
	}
	var out []duro.KV
	if useMachine {
		err := t.obj.h.s.machine.Scan(t.obj.id, lo, hi, o.Reverse, func(k, v []byte) bool {
			if _, ok := decided[string(k)]; ok {
				return true
			}
			out = append(out, duro.KV{Key: clone(k), Value: clone(v)})
			return o.Limit == 0 || len(out) < o.Limit
		})
		if err != nil {
			return nil, err
		}
	}
	for k, v := range decided {
		if v != nil {
			out = append(out, duro.KV{Key: []byte(k), Value: clone(*v)})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		c := bytes.Compare(out[i].Key, out[j].Key)
		if o.Reverse {
			return c > 0
		}
		return c < 0
	})
	if o.Limit > 0 && len(out) > o.Limit {
		out = out[:o.Limit]
	}
	return out, nil
}

func wsOf(es []*entry) []*writeSet {
	out := make([]*writeSet, len(es))
	for i, e := range es {
		out[i] = e.ws
	}
	return out
}

func prefixEnd(p []byte) []byte {
	e := append([]byte(nil), p...)
	for i := len(e) - 1; i >= 0; i-- {
		if e[i] < 0xff {
			e[i]++
			return e[:i+1]
		}
	}
	return nil
}
