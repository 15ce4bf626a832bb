package fsm

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/hashicorp/raft"
)

func TestEmptyMachine(t *testing.T) {
	m := newMachine(t)
	if a, e := m.Applied(), m.Epoch(); a != 0 || e != 0 {
		t.Fatalf("fresh machine: applied %d epoch %d", a, e)
	}
	if v := m.Version(testID(1)); v != 0 {
		t.Fatalf("Version = %d", v)
	}
	if _, ok := getKey(t, m, testID(1), "k"); ok {
		t.Fatal("Get found a key in a fresh machine")
	}
	if st, _ := m.Session(ClientID{1}, 1); st != 0 {
		t.Fatalf("Session = %v", st)
	}
	if got := contents(t, m, testID(1)); len(got) != 0 {
		t.Fatalf("Scan = %v", got)
	}
}

func TestActivateAndEpoch(t *testing.T) {
	m := newMachine(t)
	obj := testID(1)
	r := apply1(t, m, activateLog(1, t0))
	wantStatus(t, r, Applied)
	if r.Epoch != 1 || m.Epoch() != 1 || m.Applied() != 1 {
		t.Fatalf("after Activate at 1: result epoch %d, Epoch() %d, Applied() %d", r.Epoch, m.Epoch(), m.Applied())
	}

	r = apply1(t, m, callLog(2, &Call{Epoch: 1, Time: t0, Object: obj, Client: ClientID{1}, Seq: 1, Reply: []byte("r1"), Ops: []Op{put("a", "1")}}))
	wantStatus(t, r, Applied)
	if string(r.Reply) != "r1" {
		t.Fatalf("reply %q", r.Reply)
	}
	if v, ok := getKey(t, m, obj, "a"); !ok || v != "1" {
		t.Fatalf("a = %q, %v", v, ok)
	}

	for _, epoch := range []uint64{0, 2, 3} {
		before := hashOf(t, m)
		r = apply1(t, m, callLog(before.applied+1, &Call{Epoch: epoch, Time: t0, Object: obj, BaseVersion: 1, Client: ClientID{2}, Seq: 1, Ops: []Op{put("a", "stale"), put("b", "stale")}}))
		wantStatus(t, r, Rejected)
		if r.Reason == "" {
			t.Fatal("rejection without a reason")
		}
		if r.Reply != nil {
			t.Fatalf("rejected call has reply %q", r.Reply)
		}
		after := hashOf(t, m)
		if after.sum != before.sum || after.applied != before.applied+1 {
			t.Fatalf("rejected call changed state: %+v -> %+v", before, after)
		}
		if v, _ := getKey(t, m, obj, "a"); v != "1" {
			t.Fatalf("a = %q after rejected call", v)
		}
		if _, ok := getKey(t, m, obj, "b"); ok {
			t.Fatal("b written by rejected call")
		}
		if st, _ := m.Session(ClientID{2}, 1); st != 0 {
			t.Fatalf("rejected call recorded a session: %v", st)
		}
	}

	// A new leadership at index 6 fences off epoch-1 calls.
	idx := m.Applied() + 1
	r = apply1(t, m, activateLog(idx, t0))
	wantStatus(t, r, Applied)
	if r.Epoch != idx || m.Epoch() != idx {
		t.Fatalf("epoch %d / %d, want %d", r.Epoch, m.Epoch(), idx)
	}
	wantStatus(t, apply1(t, m, callLog(idx+1, &Call{Epoch: 1, Object: obj, BaseVersion: 1, Ops: []Op{put("a", "old")}})), Rejected)
	wantStatus(t, apply1(t, m, callLog(idx+2, &Call{Epoch: idx, Object: obj, BaseVersion: 1, Ops: []Op{put("a", "new")}})), Applied)
	if v, _ := getKey(t, m, obj, "a"); v != "new" {
		t.Fatalf("a = %q", v)
	}
}

func TestBaseVersion(t *testing.T) {
	m := newMachine(t)
	a, b := testID(1), testID(2)
	idx := uint64(0)
	next := func() uint64 { idx++; return idx }
	for i := uint64(0); i < 5; i++ {
		r := apply1(t, m, callLog(next(), &Call{Object: a, BaseVersion: i, Ops: []Op{put("n", fmt.Sprint(i))}}))
		wantStatus(t, r, Applied)
		if v := m.Version(a); v != i+1 {
			t.Fatalf("Version = %d, want %d", v, i+1)
		}
	}
	if v := m.Version(b); v != 0 {
		t.Fatalf("untouched object has version %d", v)
	}
	// A call with no ops still counts.
	wantStatus(t, apply1(t, m, callLog(next(), &Call{Object: b})), Applied)
	if v := m.Version(b); v != 1 {
		t.Fatalf("Version(b) = %d", v)
	}
	for _, base := range []uint64{0, 4, 6, 1 << 63} {
		before := hashOf(t, m)
		r := apply1(t, m, callLog(next(), &Call{Object: a, BaseVersion: base, Client: ClientID{7}, Seq: base + 1, ClearAll: true, Ops: []Op{put("n", "bad"), del("x")}}))
		wantStatus(t, r, Rejected)
		if after := hashOf(t, m); after.sum != before.sum {
			t.Fatalf("base %d: rejected call changed state", base)
		}
		if v, _ := getKey(t, m, a, "n"); v != "4" {
			t.Fatalf("n = %q", v)
		}
		if v := m.Version(a); v != 5 {
			t.Fatalf("Version = %d", v)
		}
	}
	// A rejected call left no session, so its retry with the right base applies.
	r := apply1(t, m, callLog(next(), &Call{Object: a, BaseVersion: 5, Client: ClientID{7}, Seq: 1, Reply: []byte("ok"), Ops: []Op{put("n", "5")}}))
	wantStatus(t, r, Applied)
	if v := m.Version(a); v != 6 {
		t.Fatalf("Version = %d", v)
	}
}

func TestDuplicate(t *testing.T) {
	m := newMachine(t)
	obj := testID(1)
	c := ClientID{0xaa, 1}
	wantStatus(t, apply1(t, m, activateLog(1, t0)), Applied)
	r := apply1(t, m, callLog(2, &Call{Epoch: 1, Time: t0, Object: obj, Client: c, Seq: 1, Reply: []byte("first"), Ops: []Op{put("k", "v1")}}))
	wantStatus(t, r, Applied)

	before := hashOf(t, m)
	r = apply1(t, m, callLog(3, &Call{Epoch: 1, Time: t0 + 1, Object: obj, BaseVersion: 1, Client: c, Seq: 1, Reply: []byte("second"), Ops: []Op{put("k", "v2"), put("other", "x")}}))
	wantStatus(t, r, Duplicate)
	if string(r.Reply) != "first" {
		t.Fatalf("duplicate reply %q, want the first call's", r.Reply)
	}
	if v, _ := getKey(t, m, obj, "k"); v != "v1" {
		t.Fatalf("k = %q: duplicate writes were applied", v)
	}
	if _, ok := getKey(t, m, obj, "other"); ok {
		t.Fatal("duplicate wrote a new key")
	}
	if v := m.Version(obj); v != 1 {
		t.Fatalf("Version = %d", v)
	}
	if after := hashOf(t, m); after.sum != before.sum {
		t.Fatal("duplicate changed the replicated state")
	}
	if st, reply := m.Session(c, 1); st != Duplicate || string(reply) != "first" {
		t.Fatalf("Session = %v %q", st, reply)
	}
	if st, _ := m.Session(c, 2); st != 0 {
		t.Fatalf("Session(c, 2) = %v", st)
	}

	// The session is checked before the epoch: a retry that lands after a
	// new leader took over is still answered from the table.
	wantStatus(t, apply1(t, m, activateLog(4, t0)), Applied)
	r = apply1(t, m, callLog(5, &Call{Epoch: 1, Object: obj, BaseVersion: 0, Client: c, Seq: 1}))
	wantStatus(t, r, Duplicate)
	if string(r.Reply) != "first" {
		t.Fatalf("reply %q", r.Reply)
	}

	// Within one batch.
	rs := apply(t, m,
		callLog(6, &Call{Epoch: 4, Object: obj, BaseVersion: 1, Client: c, Seq: 2, Reply: []byte("two"), Ops: []Op{put("k", "v3")}}),
		callLog(7, &Call{Epoch: 4, Object: obj, BaseVersion: 2, Client: c, Seq: 2, Reply: []byte("dup"), Ops: []Op{put("k", "v4")}}),
	)
	wantStatus(t, rs[0], Applied)
	wantStatus(t, rs[1], Duplicate)
	if string(rs[1].Reply) != "two" {
		t.Fatalf("reply %q", rs[1].Reply)
	}
	if v, _ := getKey(t, m, obj, "k"); v != "v3" {
		t.Fatalf("k = %q", v)
	}
}

func TestEmptyReplyDuplicate(t *testing.T) {
	m := newMachine(t)
	c := ClientID{3}
	wantStatus(t, apply1(t, m, callLog(1, &Call{Object: testID(1), Client: c, Seq: 1})), Applied)
	r := apply1(t, m, callLog(2, &Call{Object: testID(1), BaseVersion: 1, Client: c, Seq: 1, Reply: []byte("x")}))
	wantStatus(t, r, Duplicate)
	if len(r.Reply) != 0 {
		t.Fatalf("reply %q, want empty", r.Reply)
	}
}

func TestAckedBelowPrunes(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) {
			m := newMachine(t)
			obj := testID(1)
			c := ClientID{5}
			// Clients whose IDs sort right around c.
			before, after := ClientID{4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ClientID{5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
			var logs []*raft.Log
			idx, ver := uint64(0), uint64(0)
			add := func(cl ClientID, seq, acked uint64) {
				idx++
				logs = append(logs, callLog(idx, &Call{Object: obj, BaseVersion: ver, Client: cl, Seq: seq, AckedBelow: acked, Reply: []byte(fmt.Sprint(seq))}))
				ver++
			}
			for seq := uint64(1); seq <= 5; seq++ {
				add(before, seq, 0)
				add(c, seq, 0)
				add(after, seq, 0)
			}
			add(c, 6, 4) // acknowledges 1..3
			add(c, 7, 6) // acknowledges 4..5
			add(c, 8, 2) // a lower watermark does not move it back
			if batched {
				for _, r := range apply(t, m, logs...) {
					wantStatus(t, r, Applied)
				}
			} else {
				for _, l := range logs {
					wantStatus(t, apply1(t, m, l), Applied)
				}
			}
			for seq := uint64(1); seq <= 5; seq++ {
				if st, _ := m.Session(c, seq); st != Rejected {
					t.Errorf("Session(c, %d) = %v, want Rejected", seq, st)
				}
				for _, o := range []ClientID{before, after} {
					if st, reply := m.Session(o, seq); st != Duplicate || string(reply) != fmt.Sprint(seq) {
						t.Errorf("Session(%x, %d) = %v %q: another client's session was pruned", o[:1], seq, st, reply)
					}
				}
			}
			for seq := uint64(6); seq <= 8; seq++ {
				if st, reply := m.Session(c, seq); st != Duplicate || string(reply) != fmt.Sprint(seq) {
					t.Errorf("Session(c, %d) = %v %q, want Duplicate", seq, st, reply)
				}
			}
			if st, _ := m.Session(c, 9); st != 0 {
				t.Errorf("Session(c, 9) = %v", st)
			}
			// A late retry of an acknowledged seq is rejected and writes nothing.
			h := hashOf(t, m)
			r := apply1(t, m, callLog(idx+1, &Call{Object: obj, BaseVersion: ver, Client: c, Seq: 3, Ops: []Op{put("late", "x")}}))
			wantStatus(t, r, Rejected)
			if _, ok := getKey(t, m, obj, "late"); ok {
				t.Fatal("late retry was applied")
			}
			if hashOf(t, m).sum != h.sum {
				t.Fatal("late retry changed the state")
			}
		})
	}
}

func TestZeroClientHasNoSession(t *testing.T) {
	m := newMachine(t)
	obj := testID(1)
	var zero ClientID
	wantStatus(t, apply1(t, m, callLog(1, &Call{Object: obj, Client: zero, Seq: 1, Reply: []byte("a"), Ops: []Op{put("k", "1")}})), Applied)
	h := hashOf(t, m)
	r := apply1(t, m, callLog(2, &Call{Object: obj, BaseVersion: 1, Client: zero, Seq: 1, AckedBelow: 100, Reply: []byte("b"), Ops: []Op{put("k", "2")}}))
	wantStatus(t, r, Applied)
	if string(r.Reply) != "b" {
		t.Fatalf("reply %q", r.Reply)
	}
	if v, _ := getKey(t, m, obj, "k"); v != "2" {
		t.Fatalf("k = %q", v)
	}
	if st, _ := m.Session(zero, 1); st != 0 {
		t.Fatalf("Session(zero) = %v", st)
	}
	// Only the data and version changed: no session rows were written.
	m2 := newMachine(t)
	apply(t, m2, callLog(1, &Call{Object: obj, Ops: []Op{put("k", "2")}}), callLog(2, &Call{Object: obj, BaseVersion: 1}))
	if got, want := hashOf(t, m), hashOf(t, m2); got != want {
		t.Fatalf("zero-client calls left session state: %x vs %x (first %x)", got.sum[:4], want.sum[:4], h.sum[:4])
	}
}

func TestSessionExpiry(t *testing.T) {
	const ttl = time.Minute
	m := newFixture(t, Options{SessionTTL: ttl}).m
	obj := testID(1)
	a, b, c := ClientID{0xa}, ClientID{0xb}, ClientID{0xc}
	idx, ver := uint64(0), uint64(0)
	call := func(cl ClientID, seq uint64, tm int64) {
		t.Helper()
		idx++
		wantStatus(t, apply1(t, m, callLog(idx, &Call{Time: tm, Object: obj, BaseVersion: ver, Client: cl, Seq: seq, Reply: []byte("r")})), Applied)
		ver++
	}
	call(a, 1, t0)
	call(b, 1, t0+int64(ttl/2))
	if st, _ := m.Session(a, 1); st != Duplicate {
		t.Fatalf("Session(a) = %v before TTL", st)
	}
	// Idle for exactly the TTL: kept.
	call(b, 2, t0+int64(ttl))
	if st, _ := m.Session(a, 1); st != Duplicate {
		t.Fatalf("Session(a) = %v after exactly TTL", st)
	}
	// Well past the TTL in log time, another client's call expires a.
	call(b, 3, t0+int64(2*ttl))
	if st, reply := m.Session(a, 1); st != 0 || reply != nil {
		t.Fatalf("Session(a) = %v %q after TTL, want 0", st, reply)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		if st, _ := m.Session(b, seq); st != Duplicate {
			t.Fatalf("Session(b, %d) = %v: active client expired", seq, st)
		}
	}
	// An Activate entry's time also expires sessions.
	call(c, 1, t0+int64(2*ttl))
	idx++
	wantStatus(t, apply1(t, m, activateLog(idx, t0+int64(4*ttl))), Applied)
	for _, cl := range []ClientID{b, c} {
		if st, _ := m.Session(cl, 1); st != 0 {
			t.Fatalf("Session(%x) = %v after Activate past TTL", cl[:1], st)
		}
	}
}

func TestSessionExpiryDeterministic(t *testing.T) {
	const ttl = time.Minute
	var logs []*raft.Log
	tm := t0
	for i := uint64(1); i <= 80; i++ {
		tm += int64(7 * time.Second)
		cl := ClientID{byte(i * i % 11), 1} // irregular gaps, some over the TTL
		logs = append(logs, callLog(i, &Call{Time: tm, Object: testID(byte(i % 3)), BaseVersion: (i - 1) / 3, Client: cl, Seq: i, AckedBelow: i / 2, Reply: []byte{byte(i)}}))
	}
	one := newFixture(t, Options{SessionTTL: ttl}).m
	for _, l := range logs {
		wantStatus(t, apply1(t, one, l), Applied)
	}
	all := newFixture(t, Options{SessionTTL: ttl}).m
	for _, r := range apply(t, all, logs...) {
		wantStatus(t, r, Applied)
	}
	if a, b := hashOf(t, one), hashOf(t, all); a != b {
		t.Fatalf("batching changed the state: %x vs %x", a.sum[:4], b.sum[:4])
	}
	long := newFixture(t, Options{SessionTTL: time.Hour}).m
	apply(t, long, logs...)
	if a, b := hashOf(t, one), hashOf(t, long); a.sum == b.sum {
		t.Fatal("no session expired with a one-minute TTL")
	}
}

func TestReplayAfterRestartIsSkipped(t *testing.T) {
	f := newFixture(t, Options{})
	obj := testID(1)
	logs := []*raft.Log{
		activateLog(1, t0),
		typedLog(2, raft.LogConfiguration, []byte("not an entry")),
		callLog(3, &Call{Epoch: 1, Time: t0, Object: obj, Client: ClientID{1}, Seq: 1, Reply: []byte("r"), Ops: []Op{put("a", "1"), put("b", "2")}}),
		typedLog(4, raft.LogNoop, nil),
		callLog(5, &Call{Epoch: 1, Time: t0, Object: obj, BaseVersion: 1, ClearAll: true, Ops: []Op{put("c", "3")}}),
		callLog(6, &Call{Epoch: 1, Time: t0, Object: obj, BaseVersion: 0, Ops: []Op{put("rejected", "x")}}),
	}
	rs := apply(t, f.m, logs...)
	for i, want := range []Status{Applied, Skipped, Applied, Skipped, Applied, Rejected} {
		wantStatus(t, rs[i], want)
	}
	want := hashOf(t, f.m)
	if want.applied != 6 {
		t.Fatalf("Applied = %d", want.applied)
	}
	wantContents := map[string]string{"c": "3"}

	f.reopen()
	if got := hashOf(t, f.m); got != want {
		t.Fatalf("reopen changed state: %+v vs %+v", got, want)
	}
	for _, split := range [][]*raft.Log{logs, logs[:3], logs[5:]} {
		for _, r := range apply(t, f.m, split...) {
			wantStatus(t, r, Skipped)
		}
		if got := hashOf(t, f.m); got != want {
			t.Fatalf("replay changed state")
		}
	}
	// Replayed entries are skipped even if they no longer decode.
	wantStatus(t, apply1(t, f.m, cmdLog(3, []byte("garbage"))), Skipped)
	if got := contents(t, f.m, obj); fmt.Sprint(got) != fmt.Sprint(wantContents) {
		t.Fatalf("contents %v", got)
	}
	if st, _ := f.m.Session(ClientID{1}, 1); st != Duplicate {
		t.Fatalf("Session = %v", st)
	}

	// A batch that straddles the applied index applies only the new part.
	rs = apply(t, f.m, logs[4], logs[5],
		callLog(7, &Call{Epoch: 1, Object: obj, BaseVersion: 2, Ops: []Op{put("d", "4")}}))
	wantStatus(t, rs[0], Skipped)
	wantStatus(t, rs[1], Skipped)
	wantStatus(t, rs[2], Applied)
	if f.m.Applied() != 7 || f.m.Version(obj) != 3 {
		t.Fatalf("Applied %d Version %d", f.m.Applied(), f.m.Version(obj))
	}
}

func TestNonCommandLogsAdvanceApplied(t *testing.T) {
	m := newMachine(t)
	for i, typ := range []raft.LogType{raft.LogConfiguration, raft.LogNoop, raft.LogConfiguration} {
		idx := uint64(i + 1)
		r := apply1(t, m, typedLog(idx, typ, []byte{0xff, 0xff}))
		wantStatus(t, r, Skipped)
		if m.Applied() != idx {
			t.Fatalf("Applied = %d after %v at %d", m.Applied(), typ, idx)
		}
	}
	if m.Epoch() != 0 {
		t.Fatalf("Epoch = %d", m.Epoch())
	}
	h := hashOf(t, newMachine(t))
	if got := hashOf(t, m); got.sum != h.sum {
		t.Fatal("non-command logs changed the replicated state")
	}
	wantStatus(t, apply1(t, m, callLog(4, &Call{Object: testID(1)})), Applied)
	wantStatus(t, apply1(t, m, typedLog(5, raft.LogNoop, nil)), Skipped)
	if m.Applied() != 5 {
		t.Fatalf("Applied = %d", m.Applied())
	}
}

func TestClearAllIsPerObject(t *testing.T) {
	m := newMachine(t)
	ids := neighbourIDs(4) // ..fe, ..ff, carry ..00, ..01
	var logs []*raft.Log
	for i, id := range ids {
		logs = append(logs, callLog(uint64(i+1), &Call{Object: id, Ops: []Op{put("", "empty"), put("a", "1"), put("b", "2"), put("\xff\xff", "3")}}))
	}
	apply(t, m, logs...)
	for _, victim := range []int{1, 2} {
		id := ids[victim]
		r := apply1(t, m, callLog(m.Applied()+1, &Call{Object: id, BaseVersion: m.Version(id), ClearAll: true, Ops: []Op{put("a", "new"), del("a"), put("z", "26")}}))
		wantStatus(t, r, Applied)
	}
	full := map[string]string{"": "empty", "a": "1", "b": "2", "\xff\xff": "3"}
	for i, id := range ids {
		want := full
		if i == 1 || i == 2 {
			want = map[string]string{"z": "26"}
		}
		if got := contents(t, m, id); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("object %d: %q, want %q", i, got, want)
		}
	}
	// ClearAll of an empty object, then ClearAll with no ops.
	empty := testID(0x77)
	wantStatus(t, apply1(t, m, callLog(m.Applied()+1, &Call{Object: empty, ClearAll: true})), Applied)
	wantStatus(t, apply1(t, m, callLog(m.Applied()+1, &Call{Object: ids[0], BaseVersion: 1, ClearAll: true})), Applied)
	if got := contents(t, m, ids[0]); len(got) != 0 {
		t.Fatalf("after ClearAll: %q", got)
	}
	if got := contents(t, m, ids[3]); fmt.Sprint(got) != fmt.Sprint(full) {
		t.Fatalf("neighbour: %q", got)
	}
}

func TestEmptyValueAndKey(t *testing.T) {
	f := newFixture(t, Options{})
	obj := testID(1)
	apply1(t, f.m, callLog(1, &Call{Object: obj, Ops: []Op{put("e", ""), put("", "v")}}))
	for i := 0; i < 2; i++ {
		if v, ok := getKey(t, f.m, obj, "e"); !ok || v != "" {
			t.Fatalf("empty value: %q %v", v, ok)
		}
		if v, ok := getKey(t, f.m, obj, ""); !ok || v != "v" {
			t.Fatalf("empty key: %q %v", v, ok)
		}
		if got := contents(t, f.m, obj); len(got) != 2 {
			t.Fatalf("contents %q", got)
		}
		f.reopen()
	}
}

// scanRange is what Scan should visit: the keys of want within [start, end).
func scanRange(want map[string]string, start, end *string, reverse bool) []string {
	var ks []string
	for _, k := range sortedKeys(want) {
		if start != nil && k < *start || end != nil && k >= *end {
			continue
		}
		ks = append(ks, k)
	}
	if reverse {
		for i, j := 0, len(ks)-1; i < j; i, j = i+1, j-1 {
			ks[i], ks[j] = ks[j], ks[i]
		}
	}
	return ks
}

func TestScan(t *testing.T) {
	m := newMachine(t)
	ids := neighbourIDs(4)
	ids = append(ids, testID(0x10), idAfter(testID(0x10)))
	keys := []string{"", "\x00", "a", "b", "b\x00", "ba", "c", "d\xff", "\xff", "\xff\xff"}
	model := map[duro.ID]map[string]string{}
	var logs []*raft.Log
	for i, id := range ids {
		model[id] = map[string]string{}
		var ops []Op
		for j, k := range keys {
			if (i+j)%4 == 3 {
				continue // leave gaps that differ between objects
			}
			v := fmt.Sprintf("%d/%d", i, j)
			ops = append(ops, put(k, v))
			model[id][k] = v
		}
		logs = append(logs, callLog(uint64(i+1), &Call{Object: id, Ops: ops}))
	}
	apply(t, m, logs...)

	bounds := []*string{nil}
	for _, b := range append(keys, "0", "bb", "zz", "\xff\xff\xff") {
		b := b
		bounds = append(bounds, &b)
	}
	bs := func(p *string) []byte {
		if p == nil {
			return nil
		}
		return []byte(*p)
	}
	for _, id := range ids {
		for _, start := range bounds {
			for _, end := range bounds {
				for _, reverse := range []bool{false, true} {
					want := scanRange(model[id], start, end, reverse)
					var got []string
					err := m.Scan(id, bs(start), bs(end), reverse, func(k, v []byte) bool {
						if model[id][string(k)] != string(v) {
							t.Errorf("Scan(%x): %q = %q, want %q", id[30:], k, v, model[id][string(k)])
						}
						got = append(got, string(k))
						return true
					})
					if err != nil {
						t.Fatal(err)
					}
					if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
						t.Fatalf("Scan(%x, %q, %q, reverse=%v) = %q, want %q", id[30:], deref(start), deref(end), reverse, got, want)
					}
					// Early stop after each possible count.
					for stop := 1; stop <= len(want) && stop <= 3; stop++ {
						got = got[:0]
						m.Scan(id, bs(start), bs(end), reverse, func(k, v []byte) bool {
							got = append(got, string(k))
							return len(got) < stop
						})
						if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want[:stop]) {
							t.Fatalf("Scan stopping after %d = %q, want %q", stop, got, want[:stop])
						}
					}
				}
			}
		}
	}
	// An object with no keys between neighbours that have keys.
	if got := contents(t, m, idAfter(ids[len(ids)-1])); len(got) != 0 {
		t.Fatalf("empty object: %q", got)
	}
	var lonely duro.ID = ids[1]
	lonely[duro.IDLen-1] = 0x80
	for _, rev := range []bool{false, true} {
		m.Scan(lonely, nil, nil, rev, func(k, v []byte) bool { t.Fatalf("empty object yielded %q", k); return false })
	}
}

func deref(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

// An object ID of all 0xff bytes has no prefix end; Scan must still see its keys.
func TestScanAllOnesID(t *testing.T) {
	m := newMachine(t)
	var id duro.ID
	for i := range id {
		id[i] = 0xff
	}
	apply1(t, m, callLog(1, &Call{Object: id, Ops: []Op{put("a", "1"), put("b", "2")}}))
	if v, ok := getKey(t, m, id, "a"); !ok || v != "1" {
		t.Fatalf("Get = %q %v", v, ok)
	}
	for _, rev := range []bool{false, true} {
		n := 0
		m.Scan(id, nil, nil, rev, func(k, v []byte) bool { n++; return true })
		if n != 2 {
			t.Errorf("Scan(all-0xff ID, reverse=%v) visited %d keys, want 2", rev, n)
		}
	}
}

func TestUndecodableEntryPanics(t *testing.T) {
	m := newMachine(t)
	obj := testID(1)
	wantStatus(t, apply1(t, m, callLog(1, &Call{Object: obj, Ops: []Op{put("a", "1")}})), Applied)
	before := hashOf(t, m)
	bad := [][]byte{nil, {}, []byte("garbage"), {entryVersion, 9}, EncodeCall(&Call{Object: obj})[:10]}
	for _, data := range bad {
		func() {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatalf("ApplyBatch of undecodable entry %x did not panic", data)
				}
				if msg := fmt.Sprint(r); !strings.Contains(msg, "entry 3") || !strings.Contains(msg, ErrCorrupt.Error()) {
					t.Errorf("panic message %q", msg)
				}
			}()
			m.ApplyBatch([]*raft.Log{
				callLog(2, &Call{Object: obj, BaseVersion: 1, Ops: []Op{put("a", "lost")}}),
				cmdLog(3, data),
			})
		}()
		// The batch is one transaction: the valid entry before the bad one
		// was not committed either.
		if got := hashOf(t, m); got != before {
			t.Fatalf("panicking batch changed state: %+v vs %+v", got, before)
		}
	}
	// The machine is still usable.
	wantStatus(t, apply1(t, m, callLog(2, &Call{Object: obj, BaseVersion: 1, Ops: []Op{put("a", "2")}})), Applied)
	if v, _ := getKey(t, m, obj, "a"); v != "2" {
		t.Fatalf("a = %q", v)
	}
}

func TestConcurrentReads(t *testing.T) {
	m := newMachine(t)
	obj := testID(1)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			m.Get(obj, []byte("k"))
			m.Version(obj)
			m.Session(ClientID{1}, 1)
			m.Applied()
			m.Hash()
			// Each Scan sees one committed state: all keys carry the same value.
			var vals []string
			m.Scan(obj, nil, nil, false, func(k, v []byte) bool { vals = append(vals, string(v)); return true })
			for _, v := range vals {
				if v != vals[0] {
					t.Errorf("torn read: %q", vals)
					return
				}
			}
		}
	}()
	for i := uint64(1); i <= 200; i++ {
		v := fmt.Sprint(i)
		apply1(t, m, callLog(i, &Call{Object: obj, BaseVersion: i - 1, Client: ClientID{1}, Seq: i, Ops: []Op{put("k", v), put("k2", v), put("k3", v)}}))
	}
	close(stop)
	<-done
}
