package checker

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const never = time.Duration(math.MaxInt64)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func i64(n int64) *int64 { return &n }

type op = Op

func get(c int, obj string, res any, s, e int) Op {
	return Op{Client: c, Object: obj, F: "get", Result: res, Type: Ok, Start: ms(s), End: ms(e)}
}

func put(c int, obj string, v int64, t Type, s, e int) Op {
	end := ms(e)
	if t == Info {
		end = never
	}
	return Op{Client: c, Object: obj, F: "put", Value: v, Type: t, Start: ms(s), End: end}
}

func cas(c int, obj string, expect any, v int64, t Type, s, e int) Op {
	return Op{Client: c, Object: obj, F: "cas", Expect: expect, Value: v, Type: t, Start: ms(s), End: ms(e)}
}

func mk(c int, obj, f string, v, res any, t Type, s, e int) Op {
	end := ms(e)
	if t == Info {
		end = never
	}
	return Op{Client: c, Object: obj, F: f, Value: v, Result: res, Type: t, Start: ms(s), End: end}
}

type tcase struct {
	name    string
	history []Op
	valid   bool
	kind    string // an anomaly kind expected when !valid
}

func assertResult(t *testing.T, tc tcase, res Result) {
	t.Helper()
	if res.Valid != tc.valid {
		t.Fatalf("Valid = %v, want %v; anomalies: %+v", res.Valid, tc.valid, res.Anomalies)
	}
	if tc.valid {
		if len(res.Anomalies) != 0 {
			t.Fatalf("valid result with anomalies %+v", res.Anomalies)
		}
		return
	}
	for _, a := range res.Anomalies {
		if a.Kind == tc.kind {
			for _, i := range a.Ops {
				if i < 0 || i >= len(tc.history) {
					t.Fatalf("anomaly %+v indexes outside the history", a)
				}
			}
			return
		}
	}
	t.Fatalf("no %q anomaly in %+v", tc.kind, res.Anomalies)
}

func TestRegister(t *testing.T) {
	tests := []tcase{
		{name: "empty", valid: true},
		{name: "valid", valid: true, history: []Op{
			get(0, "a", nil, 0, 1),
			put(0, "a", 1, Ok, 2, 3),
			get(1, "a", i64(1), 4, 5),
			cas(1, "a", int64(1), 2, Ok, 6, 7),
			get(0, "a", int64(2), 8, 9),
			cas(0, "a", int64(7), 3, Fail, 10, 11),
			get(1, "a", int64(2), 12, 13),
		}},
		{name: "concurrent put may be seen either way", valid: true, history: []Op{
			put(0, "a", 1, Ok, 0, 1),
			put(1, "a", 2, Ok, 2, 10),
			get(2, "a", int64(1), 3, 4),
			get(2, "a", int64(2), 5, 6),
		}},
		{name: "stale read", kind: KindNonlinear, history: []Op{
			put(0, "a", 1, Ok, 0, 1),
			put(0, "a", 2, Ok, 2, 3),
			get(1, "a", int64(1), 4, 5),
		}},
		{name: "read of absent after ack", kind: KindNonlinear, history: []Op{
			put(0, "a", 1, Ok, 0, 1),
			get(1, "a", nil, 2, 3),
		}},
		{name: "failed put is dropped", valid: true, history: []Op{
			put(0, "a", 1, Fail, 0, 1),
			get(1, "a", nil, 2, 3),
		}},
		{name: "failed put seen", kind: KindNonlinear, history: []Op{
			put(0, "a", 1, Fail, 0, 1),
			get(1, "a", int64(1), 2, 3),
		}},
		{name: "info put shows up later", valid: true, history: []Op{
			put(0, "a", 1, Info, 0, 0),
			get(1, "a", nil, 10, 11),
			get(1, "a", int64(1), 20, 21),
		}},
		{name: "info put never shows up", valid: true, history: []Op{
			put(0, "a", 1, Info, 0, 0),
			get(1, "a", nil, 10, 11),
		}},
		{name: "info put cannot unhappen", kind: KindNonlinear, history: []Op{
			put(0, "a", 1, Info, 0, 0),
			get(1, "a", int64(1), 10, 11),
			get(1, "a", nil, 20, 21),
		}},
		{name: "info cas may apply", valid: true, history: []Op{
			put(0, "a", 1, Ok, 0, 1),
			{Client: 1, Object: "a", F: "cas", Expect: int64(1), Value: int64(5), Type: Info, Start: ms(2), End: never},
			get(2, "a", int64(1), 3, 4),
			get(2, "a", int64(5), 30, 31),
		}},
		{name: "objects are independent", valid: true, history: []Op{
			put(0, "a", 1, Ok, 0, 1),
			put(1, "b", 2, Ok, 0, 1),
			get(2, "a", int64(1), 2, 3),
			get(2, "b", int64(2), 2, 3),
		}},
		{name: "one bad object among good", kind: KindNonlinear, history: []Op{
			put(0, "a", 1, Ok, 0, 1),
			put(1, "b", 2, Ok, 0, 1),
			get(2, "a", int64(1), 2, 3),
			get(2, "b", nil, 2, 3),
		}},
		{name: "unknown op", kind: KindMalformed, history: []Op{
			{Object: "a", F: "frob", Type: Ok},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Register(tc.history, "")
			assertResult(t, tc, res)
			if tc.name == "one bad object among good" {
				for _, a := range res.Anomalies {
					if a.Kind == KindNonlinear && a.Object != "b" {
						t.Fatalf("blamed object %q, want b", a.Object)
					}
				}
			}
		})
	}
}

func TestRegisterVisualizeOnFailure(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.html")
	res := Register([]Op{
		put(0, "a", 1, Ok, 0, 1),
		put(0, "a", 2, Ok, 2, 3),
		get(1, "a", int64(1), 4, 5),
	}, bad)
	if res.Valid {
		t.Fatal("stale read passed")
	}
	if st, err := os.Stat(bad); err != nil || st.Size() == 0 {
		t.Fatalf("visualization not written: %v", err)
	}

	good := filepath.Join(dir, "good.html")
	if res := Register([]Op{put(0, "a", 1, Ok, 0, 1), get(1, "a", int64(1), 2, 3)}, good); !res.Valid {
		t.Fatalf("valid history failed: %+v", res.Anomalies)
	}
	if _, err := os.Stat(good); !os.IsNotExist(err) {
		t.Fatalf("visualization written for a passing check: %v", err)
	}
}

func TestCounter(t *testing.T) {
	add := func(c int, v int64, ty Type, s, e int) Op { return mk(c, "c", "add", v, nil, ty, s, e) }
	read := func(c int, v int64, s, e int) Op { return mk(c, "c", "read", nil, v, Ok, s, e) }
	tests := []tcase{
		{name: "valid", valid: true, history: []Op{
			add(0, 1, Ok, 0, 1), add(1, 2, Ok, 0, 1), add(0, 4, Fail, 2, 3),
			read(2, 3, 10, 11),
		}},
		{name: "concurrent add may or may not count", valid: true, history: []Op{
			add(0, 1, Ok, 0, 1), add(1, 2, Ok, 5, 20),
			read(2, 1, 10, 11), read(2, 3, 12, 13),
		}},
		{name: "info add counted", valid: true, history: []Op{
			add(0, 1, Ok, 0, 1), add(1, 2, Info, 0, 0), read(2, 3, 10, 11),
		}},
		{name: "info add not counted", valid: true, history: []Op{
			add(0, 1, Ok, 0, 1), add(1, 2, Info, 0, 0), read(2, 1, 10, 11),
		}},
		{name: "lost write", kind: KindLost, history: []Op{
			add(0, 1, Ok, 0, 1), add(1, 2, Ok, 0, 1), read(2, 1, 10, 11),
		}},
		{name: "duplicate apply", kind: KindDuplicated, history: []Op{
			add(0, 1, Ok, 0, 1), add(1, 2, Info, 0, 0), read(2, 5, 10, 11),
		}},
		{name: "failed add applied", kind: KindDuplicated, history: []Op{
			add(0, 1, Ok, 0, 1), add(1, 2, Fail, 0, 1), read(2, 3, 10, 11),
		}},
		{name: "read before add started", kind: KindDuplicated, history: []Op{
			read(2, 1, 0, 1), add(0, 1, Ok, 5, 6),
		}},
		{name: "negative delta", valid: true, history: []Op{
			add(0, 5, Ok, 0, 1), add(1, -2, Info, 0, 0), read(2, 3, 10, 11), read(2, 5, 12, 13),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { assertResult(t, tc, Counter(tc.history)) })
	}
}

func TestListAppend(t *testing.T) {
	app := func(c int, v string, ty Type, s, e int) Op { return mk(c, "l", "append", v, nil, ty, s, e) }
	read := func(c int, vals []string, s, e int) Op { return mk(c, "l", "read", nil, vals, Ok, s, e) }
	l := func(v ...string) []string { return v }
	tests := []tcase{
		{name: "valid", valid: true, history: []Op{
			app(0, "a", Ok, 0, 1), app(1, "b", Ok, 2, 3),
			read(2, l("a"), 1, 2),
			mk(0, "l", "append", "c", l("a", "b", "c"), Ok, 4, 5),
			read(2, l("a", "b", "c"), 10, 11),
		}},
		{name: "concurrent appends in either order", valid: true, history: []Op{
			app(0, "a", Ok, 0, 5), app(1, "b", Ok, 1, 6), read(2, l("b", "a"), 10, 11),
		}},
		{name: "info append may show up", valid: true, history: []Op{
			app(0, "a", Ok, 0, 1), app(1, "b", Info, 2, 0),
			read(2, l("a"), 3, 4), read(2, l("a", "b"), 10, 11),
		}},
		{name: "info append may not show up", valid: true, history: []Op{
			app(0, "a", Ok, 0, 1), app(1, "b", Info, 2, 0), read(2, l("a"), 10, 11),
		}},
		{name: "lost write", kind: KindLost, history: []Op{
			app(0, "a", Ok, 0, 1), app(1, "b", Ok, 2, 3), read(2, l("a"), 10, 11),
		}},
		{name: "duplicate apply", kind: KindDuplicate, history: []Op{
			app(0, "a", Ok, 0, 1), app(1, "b", Ok, 2, 3), read(2, l("a", "b", "a"), 10, 11),
		}},
		{name: "phantom", kind: KindPhantom, history: []Op{
			app(0, "a", Ok, 0, 1), read(2, l("a", "z"), 10, 11),
		}},
		{name: "aborted read", kind: KindAbortedRead, history: []Op{
			app(0, "a", Ok, 0, 1), app(1, "b", Fail, 0, 1), read(2, l("a", "b"), 10, 11),
		}},
		{name: "reordered reads", kind: KindOrder, history: []Op{
			app(0, "a", Ok, 0, 5), app(1, "b", Ok, 0, 5),
			read(2, l("a", "b"), 6, 7), read(2, l("b", "a"), 10, 11),
		}},
		{name: "final read shorter than earlier read", kind: KindOrder, history: []Op{
			app(0, "a", Ok, 0, 1), app(1, "b", Info, 0, 0),
			read(2, l("a", "b"), 6, 7), read(2, l("a"), 10, 11),
		}},
		{name: "append result disagrees", kind: KindOrder, history: []Op{
			app(0, "a", Ok, 0, 1),
			mk(1, "l", "append", "b", l("b"), Ok, 0, 3),
			read(2, l("a", "b"), 10, 11),
		}},
		{name: "realtime violation", kind: KindRealtime, history: []Op{
			app(0, "a", Ok, 0, 1), app(1, "b", Ok, 2, 3), read(2, l("b", "a"), 10, 11),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { assertResult(t, tc, ListAppend(tc.history)) })
	}
}

func TestSet(t *testing.T) {
	add := func(c int, v string, ty Type, s, e int) Op { return mk(c, "s", "add", v, nil, ty, s, e) }
	read := func(c int, vals []string, s, e int) Op { return mk(c, "s", "read", nil, vals, Ok, s, e) }
	l := func(v ...string) []string { return v }
	tests := []tcase{
		{name: "valid", valid: true, history: []Op{
			add(0, "a", Ok, 0, 1), add(1, "b", Ok, 2, 3), read(2, l("b", "a"), 10, 11),
		}},
		{name: "info add may show up", valid: true, history: []Op{
			add(0, "a", Ok, 0, 1), add(1, "b", Info, 0, 0), read(2, l("a", "b"), 10, 11),
		}},
		{name: "info add may not show up", valid: true, history: []Op{
			add(0, "a", Ok, 0, 1), add(1, "b", Info, 0, 0), read(2, l("a"), 10, 11),
		}},
		{name: "concurrent add missing from final read", valid: true, history: []Op{
			add(0, "a", Ok, 0, 1), add(1, "b", Ok, 5, 20), read(2, l("a"), 10, 11),
		}},
		{name: "lost write", kind: KindLost, history: []Op{
			add(0, "a", Ok, 0, 1), add(1, "b", Ok, 2, 3), read(2, l("a", "b"), 4, 5), read(2, l("a"), 10, 11),
		}},
		{name: "phantom", kind: KindPhantom, history: []Op{
			add(0, "a", Ok, 0, 1), read(2, l("a", "z"), 10, 11),
		}},
		{name: "aborted read", kind: KindAbortedRead, history: []Op{
			add(0, "a", Fail, 0, 1), read(2, l("a"), 10, 11),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { assertResult(t, tc, Set(tc.history)) })
	}
}
