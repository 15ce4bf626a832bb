package shard_test

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/shard"
	"github.com/duro-io/duro/shard/shardtest"
)

const alarmNS = "alarmer"

// fire is one recorded delivery of an alarm.
type fire struct {
	Scheduled int64 `json:"scheduled"`
	At        int64 `json:"at"` // the handler's ctx.Now()
	Retry     int   `json:"retry"`
}

// alarmer records every alarm delivery in storage, in the delivery's own
// entry; it fails the first "fail" attempts of each delivery.
type alarmer struct{}

var alarmerAttempts atomic.Int64 // handler runs, failed ones included

func (alarmer) Alarm(ctx duro.Context, info duro.AlarmInfo) error {
	alarmerAttempts.Add(1)
	st := ctx.Storage()
	if v, ok, _ := st.Get([]byte("fail")); ok {
		var n int
		json.Unmarshal(v, &n)
		if info.Retry < n {
			st.Put([]byte("junk"), []byte("must not be kept"))
			return duro.Errorf(duro.CodeUnknown, "failing on purpose (attempt %d)", info.Retry)
		}
	}
	if !ctx.Now().After(info.Scheduled) && !ctx.Now().Equal(info.Scheduled) {
		return duro.Errorf(duro.CodeInternal, "alarm ran at %v, before its time %v", ctx.Now(), info.Scheduled)
	}
	var fires []fire
	if v, ok, _ := st.Get([]byte("fires")); ok {
		json.Unmarshal(v, &fires)
	}
	fires = append(fires, fire{Scheduled: info.Scheduled.UnixNano(), At: ctx.Now().UnixNano(), Retry: info.Retry})
	b, _ := json.Marshal(fires)
	return st.Put([]byte("fires"), b)
}

type setAlarmArg struct {
	AtNanos int64 `json:"at"`
	Year    int   `json:"year"` // when set, the alarm is at the start of that year (UTC)
	Fail    int   `json:"fail"`
}

type alarmState struct {
	Set   bool   `json:"set"`
	At    int64  `json:"at"`
	Fires []fire `json:"fires"`
}

type noAlarms struct{}

func alarmRegistry() *duro.Registry {
	c := duro.NewClass(alarmNS, func() *alarmer { return &alarmer{} })
	duro.Method(c, "Set", func(_ *alarmer, ctx duro.Context, a setAlarmArg) (bool, error) {
		if a.Fail > 0 {
			b, _ := json.Marshal(a.Fail)
			ctx.Storage().Put([]byte("fail"), b)
		}
		at := time.Unix(0, a.AtNanos)
		if a.Year != 0 {
			at = time.Date(a.Year, 1, 1, 0, 0, 0, 0, time.UTC)
		}
		return true, ctx.Storage().SetAlarm(at)
	})
	// Hold keeps the object busy (its turn goroutine) for ms milliseconds.
	duro.Method(c, "Hold", func(_ *alarmer, ctx duro.Context, ms int) (bool, error) {
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return true, nil
	})
	duro.Method(c, "Delete", func(_ *alarmer, ctx duro.Context, _ struct{}) (bool, error) {
		return true, ctx.Storage().DeleteAlarm()
	})
	duro.Method(c, "State", func(_ *alarmer, ctx duro.Context, _ struct{}) (alarmState, error) {
		var s alarmState
		at, ok, err := ctx.Storage().GetAlarm()
		if err != nil {
			return s, err
		}
		s.Set = ok
		if ok {
			s.At = at.UnixNano()
		}
		if v, ok, _ := ctx.Storage().Get([]byte("fires")); ok {
			json.Unmarshal(v, &s.Fires)
		}
		return s, nil
	})
	plain := duro.NewClass("plain", func() *noAlarms { return &noAlarms{} })
	duro.Method(plain, "Set", func(_ *noAlarms, ctx duro.Context, a setAlarmArg) (bool, error) {
		return true, ctx.Storage().SetAlarm(time.Unix(0, a.AtNanos))
	})
	r := shardtest.Registry()
	r.Register(c)
	r.Register(plain)
	return r
}

func alarmCall(id duro.ID, method string, arg any) *shard.Request {
	b, _ := json.Marshal(arg)
	return &shard.Request{Namespace: alarmNS, Object: id, Method: method, Arg: b}
}

func alarmStateOf(t *testing.T, h *shard.Host, id duro.ID) alarmState {
	t.Helper()
	r := h.Call(callCtx(t), alarmCall(id, "State", struct{}{}))
	if r.Err != nil {
		t.Fatalf("State: %v", r.Err)
	}
	var s alarmState
	if err := json.Unmarshal(r.Reply, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func mustOK(t *testing.T, r shard.Result) {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("call failed: %v", r.Err)
	}
}

func TestAlarmFiresOnceNotEarly(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 1, Shards: 2, Registry: alarmRegistry()})
	c.LeaderOf(0)
	c.LeaderOf(1)
	h := c.Host(0)
	var ids []duro.ID
	for i, name := range []string{"a", "b", "c", "d"} {
		id := c.ObjectIn(alarmNS, i%2, name)
		ids = append(ids, id)
		at := time.Now().Add(time.Duration(50*(i+1)) * time.Millisecond).UnixNano()
		mustOK(t, h.Call(callCtx(t), alarmCall(id, "Set", setAlarmArg{AtNanos: at})))
		if s := alarmStateOf(t, h, id); !s.Set || s.At != at {
			t.Fatalf("after Set, state %+v, want alarm at %d", s, at)
		}
	}
	for _, id := range ids {
		shardtest.Eventually(t, func() bool { return len(alarmStateOf(t, h, id).Fires) > 0 }, 10*time.Second, "alarm did not fire")
		s := alarmStateOf(t, h, id)
		if s.Set {
			t.Fatalf("alarm still set after it fired: %+v", s)
		}
		f := s.Fires[0]
		if len(s.Fires) != 1 || f.At < f.Scheduled || f.Retry != 0 {
			t.Fatalf("fires %+v: want one, at or after its time, first attempt", s.Fires)
		}
		if _, ok := c.Shard(0, int(duro.ShardOf(id, 2))).Machine().Alarm(id); ok {
			t.Fatal("applied state still holds the alarm")
		}
	}
	// The scheduler counts a fire once it has the turn's result, just after
	// the entry committed.
	fired := func() uint64 {
		var n uint64
		for _, s := range h.Shards() {
			n += s.AlarmStats().Fired
		}
		return n
	}
	shardtest.Eventually(t, func() bool { return fired() == uint64(len(ids)) }, 5*time.Second, "AlarmStats fired %d, want %d", fired(), len(ids))
}

func TestAlarmDeletedOrMovedDoesNotFire(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 1, Shards: 1, Registry: alarmRegistry()})
	c.LeaderOf(0)
	h := c.Host(0)
	del, moved, marker := c.ObjectIn(alarmNS, 0, "del"), c.ObjectIn(alarmNS, 0, "moved"), c.ObjectIn(alarmNS, 0, "marker")
	soon := time.Now().Add(100 * time.Millisecond).UnixNano()
	later := time.Now().Add(time.Hour).UnixNano()
	// Pipelined: the delete and the move run on the speculative state of the
	// sets, before they commit.
	for _, r := range submitAll(t, h,
		alarmCall(del, "Set", setAlarmArg{AtNanos: soon}), alarmCall(del, "Delete", struct{}{}),
		alarmCall(moved, "Set", setAlarmArg{AtNanos: soon}), alarmCall(moved, "Set", setAlarmArg{AtNanos: later}),
		alarmCall(marker, "Set", setAlarmArg{AtNanos: soon + int64(50*time.Millisecond)})) {
		mustOK(t, r)
	}
	// Alarms fire in time order, so once the later marker fired, the others
	// had their chance.
	shardtest.Eventually(t, func() bool { return len(alarmStateOf(t, h, marker).Fires) == 1 }, 10*time.Second, "marker alarm did not fire")
	if s := alarmStateOf(t, h, del); s.Set || len(s.Fires) != 0 {
		t.Fatalf("deleted alarm: %+v", s)
	}
	if s := alarmStateOf(t, h, moved); !s.Set || s.At != later || len(s.Fires) != 0 {
		t.Fatalf("moved alarm: %+v, want set at %d and not fired", s, later)
	}
}

func TestAlarmRetriesWithBackoff(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 1, Shards: 1, Registry: alarmRegistry(),
		AlarmAttempts: 6, AlarmBackoff: 5 * time.Millisecond})
	c.LeaderOf(0)
	h := c.Host(0)
	id := c.ObjectIn(alarmNS, 0, "flaky")
	mustOK(t, h.Call(callCtx(t), alarmCall(id, "Set", setAlarmArg{AtNanos: time.Now().UnixNano(), Fail: 3})))
	shardtest.Eventually(t, func() bool { return len(alarmStateOf(t, h, id).Fires) > 0 }, 10*time.Second, "alarm did not fire")
	s := alarmStateOf(t, h, id)
	if len(s.Fires) != 1 || s.Fires[0].Retry != 3 || s.Set {
		t.Fatalf("state %+v: want one fire on retry 3, alarm cleared", s)
	}
	if v, ok, _ := c.Shard(0, 0).Machine().Get(id, []byte("junk")); ok {
		t.Fatalf("a failed attempt's write was kept: %q", v)
	}
	shardtest.Eventually(t, func() bool { return c.Shard(0, 0).AlarmStats().Fired == 1 }, 5*time.Second, "fire not counted")
	st := c.Shard(0, 0).AlarmStats()
	if st.Failures != 3 || st.Fired != 1 || len(st.Failed) != 0 {
		t.Fatalf("stats %+v: want 3 failures, 1 fired, none given up", st)
	}
}

// Turns that fail without the handler failing (here: the alarm's turn times
// out behind a long call on its object) are not the handler's attempts: the
// alarm is not given up on, and fires once the object is free.
func TestAlarmBehindBusyObjectIsNotGivenUp(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 1, Shards: 1, Registry: alarmRegistry(),
		AlarmAttempts: 2, AlarmBackoff: time.Millisecond, AlarmTimeout: 50 * time.Millisecond})
	c.LeaderOf(0)
	h := c.Host(0)
	id := c.ObjectIn(alarmNS, 0, "busy")
	// The alarm is due while Hold keeps the object busy for far longer
	// than an alarm turn may wait.
	mustOK(t, h.Call(callCtx(t), alarmCall(id, "Set", setAlarmArg{AtNanos: time.Now().Add(200 * time.Millisecond).UnixNano()})))
	mustOK(t, h.Call(callCtx(t), alarmCall(id, "Hold", 1000)))
	shardtest.Eventually(t, func() bool { return len(alarmStateOf(t, h, id).Fires) > 0 }, 10*time.Second, "alarm did not fire after the object was free")
	if st := c.Shard(0, 0).AlarmStats(); st.Failures != 0 || len(st.Failed) != 0 {
		t.Fatalf("stats %+v: turns that timed out in the queue counted as handler failures", st)
	}
}

func TestAlarmGivesUpAndStaysSet(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 1, Shards: 1, Registry: alarmRegistry(),
		AlarmAttempts: 6, AlarmBackoff: time.Millisecond})
	c.LeaderOf(0)
	h := c.Host(0)
	id := c.ObjectIn(alarmNS, 0, "broken")
	at := time.Now().UnixNano()
	mustOK(t, h.Call(callCtx(t), alarmCall(id, "Set", setAlarmArg{AtNanos: at, Fail: 1000})))
	sh := c.Shard(0, 0)
	shardtest.Eventually(t, func() bool { return len(sh.AlarmStats().Failed) == 1 }, 10*time.Second, "alarm not given up")
	st := sh.AlarmStats()
	f := st.Failed[0]
	if f.Object != id || f.Attempts != 6 || st.Failures != 6 || !strings.Contains(f.Err, "failing on purpose") || f.At.UnixNano() != at {
		t.Fatalf("stats %+v: want one alarm given up after 6 attempts", st)
	}
	if s := alarmStateOf(t, h, id); !s.Set || s.At != at || len(s.Fires) != 0 {
		t.Fatalf("given-up alarm: %+v, want still set", s)
	}
	// Setting the alarm again is a new delivery: it is tried again.
	before := sh.AlarmStats().Failures
	mustOK(t, h.Call(callCtx(t), alarmCall(id, "Set", setAlarmArg{AtNanos: at + 1})))
	shardtest.Eventually(t, func() bool { return sh.AlarmStats().Failures > before }, 10*time.Second, "moved alarm not retried")
}

func TestSetAlarmNeedsHandler(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 1, Shards: 1, Registry: alarmRegistry()})
	c.LeaderOf(0)
	id := c.ObjectIn("plain", 0, "x")
	r := c.Host(0).Call(callCtx(t), &shard.Request{Namespace: "plain", Object: id, Method: "Set", Arg: []byte(`{"at":1}`)})
	if r.Err == nil || r.Err.Code != duro.CodeInvalidArgument || !strings.Contains(r.Err.Message, "no Alarm method") {
		t.Fatalf("SetAlarm on a class without Alarm: %v", r.Err)
	}
}

// A time past what int64 nanoseconds hold (year 2262) is refused, not
// wrapped into the past, where it would fire at once.
func TestSetAlarmOutOfRange(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 1, Shards: 1, Registry: alarmRegistry()})
	c.LeaderOf(0)
	id := c.ObjectIn(alarmNS, 0, "far")
	for _, year := range []int{2600, 1969} {
		r := c.Host(0).Call(callCtx(t), alarmCall(id, "Set", setAlarmArg{Year: year}))
		if r.Err == nil || r.Err.Code != duro.CodeInvalidArgument {
			t.Fatalf("SetAlarm in %d: %v, want InvalidArgument", year, r.Err)
		}
	}
	mustOK(t, c.Host(0).Call(callCtx(t), alarmCall(id, "Set", setAlarmArg{Year: 2200})))
	if s := alarmStateOf(t, c.Host(0), id); !s.Set || time.Unix(0, s.At).UTC().Year() != 2200 {
		t.Fatalf("alarm in 2200 reads back as %+v (%v)", s, time.Unix(0, s.At).UTC())
	}
	time.Sleep(50 * time.Millisecond)
	if s := alarmStateOf(t, c.Host(0), id); len(s.Fires) != 0 {
		t.Fatalf("an alarm in 2200 fired: %+v", s.Fires)
	}
}

// A leader that takes over re-arms the alarms set under the previous one.
func TestAlarmFiresAfterFailover(t *testing.T) {
	c := shardtest.NewWithOptions(t, shardtest.Options{Nodes: 3, Shards: 1, Registry: alarmRegistry()})
	old := c.LeaderOf(0)
	id := c.ObjectIn(alarmNS, 0, "failover")
	at := time.Now().Add(300 * time.Millisecond).UnixNano()
	mustOK(t, c.Host(old).Call(callCtx(t), alarmCall(id, "Set", setAlarmArg{AtNanos: at})))
	c.Isolate(old)
	next := c.LeaderOfExcept(0, old)
	h := c.Host(next)
	shardtest.Eventually(t, func() bool {
		r := h.Call(callCtx(t), alarmCall(id, "State", struct{}{}))
		var s alarmState
		return r.Err == nil && json.Unmarshal(r.Reply, &s) == nil && len(s.Fires) > 0
	}, 15*time.Second, "alarm did not fire on the new leader")
	s := alarmStateOf(t, h, id)
	if s.Set || s.Fires[0].At < at {
		t.Fatalf("after failover: %+v (scheduled %d)", s, at)
	}
}
