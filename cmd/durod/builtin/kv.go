package builtin

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/duro-io/duro"
)

// kv is a map from string keys to string values. Keys and values are stored
// as their raw bytes; Append stores a JSON list of strings.
type kv struct{}

func newKVClass() *duro.Class {
	c := duro.NewClass(KVNamespace, func() *kv { return &kv{} })
	duro.Method(c, "Put", (*kv).Put)
	duro.Method(c, "Get", (*kv).Get)
	duro.Method(c, "Delete", (*kv).Delete)
	duro.Method(c, "List", (*kv).List)
	duro.Method(c, "CAS", (*kv).CAS)
	duro.Method(c, "Append", (*kv).Append)
	duro.Method(c, "SetAlarm", (*kv).SetAlarm)
	duro.Method(c, "GetAlarm", (*kv).GetAlarm)
	duro.Method(c, "DeleteAlarm", (*kv).DeleteAlarm)
	return c
}

// KeyArg names one key.
type KeyArg struct {
	Key string `json:"key"`
}

// PutArg is the argument of Put.
type PutArg struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Empty is an empty JSON object.
type Empty struct{}

// GetResult is the result of Get; Value is null when the key is absent.
type GetResult struct {
	Value *string `json:"value"`
	Found bool    `json:"found"`
}

// DeleteResult is the result of Delete.
type DeleteResult struct {
	Deleted bool `json:"deleted"`
}

// ListArg selects keys: Start inclusive, End exclusive, both optional; Prefix
// restricts further. Limit 0 means no limit.
type ListArg struct {
	Prefix  string `json:"prefix"`
	Start   string `json:"start"`
	End     string `json:"end"`
	Limit   int    `json:"limit"`
	Reverse bool   `json:"reverse"`
}

// Item is one listed key and its value.
type Item struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// ListResult is the result of List; Items is never null.
type ListResult struct {
	Items []Item `json:"items"`
}

// CASArg is the argument of CAS. Expect null means the key must be absent;
// Value null means delete the key on success.
type CASArg struct {
	Key    string  `json:"key"`
	Expect *string `json:"expect"`
	Value  *string `json:"value"`
}

// CASResult reports whether the swap happened and the key's value after the
// call (null if absent).
type CASResult struct {
	OK    bool    `json:"ok"`
	Value *string `json:"value"`
}

// AppendArg is the argument of Append.
type AppendArg struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// AppendResult holds the list after the append.
type AppendResult struct {
	Values []string `json:"values"`
}

func checkKey(k string) error {
	if k == "" {
		return invalid("kv: key must not be empty")
	}
	return nil
}

// Put sets key to value.
func (*kv) Put(ctx duro.Context, a PutArg) (Empty, error) {
	if err := checkKey(a.Key); err != nil {
		return Empty{}, err
	}
	return Empty{}, ctx.Storage().Put([]byte(a.Key), []byte(a.Value))
}

// Get returns the value of key.
func (*kv) Get(ctx duro.Context, a KeyArg) (GetResult, error) {
	if err := checkKey(a.Key); err != nil {
		return GetResult{}, err
	}
	v, ok, err := ctx.Storage().Get([]byte(a.Key))
	if err != nil || !ok {
		return GetResult{}, err
	}
	s := string(v)
	return GetResult{Value: &s, Found: true}, nil
}

// Delete removes key and reports whether it existed.
func (*kv) Delete(ctx duro.Context, a KeyArg) (DeleteResult, error) {
	if err := checkKey(a.Key); err != nil {
		return DeleteResult{}, err
	}
	ok, err := ctx.Storage().Delete([]byte(a.Key))
	if err != nil {
		return DeleteResult{}, err
	}
	return DeleteResult{Deleted: ok}, nil
}

// List returns the selected keys and values in key order (or reverse).
func (*kv) List(ctx duro.Context, a ListArg) (ListResult, error) {
	if a.Limit < 0 {
		return ListResult{}, invalid("kv: limit must not be negative")
	}
	opts := duro.ListOptions{Reverse: a.Reverse, Limit: a.Limit}
	if a.Prefix != "" {
		opts.Prefix = []byte(a.Prefix)
	}
	if a.Start != "" {
		opts.Start = []byte(a.Start)
	}
	if a.End != "" {
		opts.End = []byte(a.End)
	}
	kvs, err := ctx.Storage().List(opts)
	if err != nil {
		return ListResult{}, err
	}
	items := make([]Item, 0, len(kvs))
	for _, e := range kvs {
		items = append(items, Item{Key: string(e.Key), Value: string(e.Value)})
	}
	return ListResult{Items: items}, nil
}

// CAS sets key to value (or deletes it when value is null) if its current
// value equals expect (or it is absent when expect is null).
func (*kv) CAS(ctx duro.Context, a CASArg) (CASResult, error) {
	if err := checkKey(a.Key); err != nil {
		return CASResult{}, err
	}
	st := ctx.Storage()
	key := []byte(a.Key)
	v, found, err := st.Get(key)
	if err != nil {
		return CASResult{}, err
	}
	var cur *string
	if found {
		s := string(v)
		cur = &s
	}
	if (a.Expect == nil) != (cur == nil) || (cur != nil && *a.Expect != *cur) {
		return CASResult{OK: false, Value: cur}, nil
	}
	if a.Value == nil {
		if found {
			if _, err := st.Delete(key); err != nil {
				return CASResult{}, err
			}
		}
	} else if err := st.Put(key, []byte(*a.Value)); err != nil {
		return CASResult{}, err
	}
	return CASResult{OK: true, Value: a.Value}, nil
}

// Append adds value to the JSON list of strings held by key (an absent key is
// an empty list) and returns the new list.
func (*kv) Append(ctx duro.Context, a AppendArg) (AppendResult, error) {
	if err := checkKey(a.Key); err != nil {
		return AppendResult{}, err
	}
	st := ctx.Storage()
	key := []byte(a.Key)
	v, found, err := st.Get(key)
	if err != nil {
		return AppendResult{}, err
	}
	list := []string{}
	if found {
		if !bytes.HasPrefix(bytes.TrimLeft(v, " \t\r\n"), []byte("[")) {
			return AppendResult{}, invalid("kv: key %q does not hold a list of strings", a.Key)
		}
		if err := json.Unmarshal(v, &list); err != nil {
			return AppendResult{}, invalid("kv: key %q does not hold a list of strings: %v", a.Key, err)
		}
	}
	list = append(list, a.Value)
	enc, err := json.Marshal(list)
	if err != nil {
		return AppendResult{}, err
	}
	if err := st.Put(key, enc); err != nil {
		return AppendResult{}, err
	}
	return AppendResult{Values: list}, nil
}

// AlarmKey is the key under which kv's Alarm handler records its deliveries
// (an AlarmRecord as JSON), in the same entry that clears the alarm.
const AlarmKey = "_alarm"

// SetAlarmArg is the argument of SetAlarm: the alarm's time in unix
// milliseconds.
type SetAlarmArg struct {
	AtMs int64 `json:"at_ms"`
}

// GetAlarmResult is the result of GetAlarm.
type GetAlarmResult struct {
	Set  bool  `json:"set"`
	AtMs int64 `json:"at_ms"`
}

// AlarmRecord is what kv's Alarm handler stores under AlarmKey.
type AlarmRecord struct {
	Fires       int   `json:"fires"`        // deliveries so far
	ScheduledNs int64 `json:"scheduled_ns"` // the last delivery's alarm time
	FiredNs     int64 `json:"fired_ns"`     // the last delivery's turn time
	Retry       int   `json:"retry"`        // failed attempts before it
}

// SetAlarm sets the object's alarm.
func (*kv) SetAlarm(ctx duro.Context, a SetAlarmArg) (Empty, error) {
	if a.AtMs <= 0 {
		return Empty{}, invalid("kv: at_ms must be a positive unix time in milliseconds, got %d", a.AtMs)
	}
	return Empty{}, ctx.Storage().SetAlarm(time.UnixMilli(a.AtMs))
}

// GetAlarm returns the object's alarm.
func (*kv) GetAlarm(ctx duro.Context, _ json.RawMessage) (GetAlarmResult, error) {
	at, ok, err := ctx.Storage().GetAlarm()
	if err != nil || !ok {
		return GetAlarmResult{}, err
	}
	return GetAlarmResult{Set: true, AtMs: at.UnixMilli()}, nil
}

// DeleteAlarm removes the object's alarm.
func (*kv) DeleteAlarm(ctx duro.Context, _ json.RawMessage) (Empty, error) {
	return Empty{}, ctx.Storage().DeleteAlarm()
}

// Alarm records the delivery under AlarmKey.
func (*kv) Alarm(ctx duro.Context, info duro.AlarmInfo) error {
	st := ctx.Storage()
	var rec AlarmRecord
	if v, ok, err := st.Get([]byte(AlarmKey)); err != nil {
		return err
	} else if ok {
		json.Unmarshal(v, &rec)
	}
	rec.Fires++
	rec.ScheduledNs, rec.FiredNs, rec.Retry = info.Scheduled.UnixNano(), ctx.Now().UnixNano(), info.Retry
	b, _ := json.Marshal(rec)
	return st.Put([]byte(AlarmKey), b)
}
