package fsm

import (
	"bytes"
	"reflect"
	"testing"
)

func TestAlarmEntryRoundTrip(t *testing.T) {
	for _, ch := range []AlarmChange{{}, {Kind: AlarmSet, At: t0 + 5}, {Kind: AlarmDelete}} {
		c := &Call{Epoch: 1, Time: t0, Namespace: "ns", Object: testID(1), Ops: []Op{put("k", "v")}, Alarm: ch}
		got, err := Decode(EncodeCall(c))
		if err != nil {
			t.Fatalf("%+v: %v", ch, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip of %+v: got %+v", ch, got)
		}
	}
}

// An entry without an alarm field encodes exactly as before the field
// existed, so logs written earlier decode the same way.
func TestAlarmEntryBackwardCompatible(t *testing.T) {
	c := &Call{Epoch: 1, Time: t0, Namespace: "ns", Object: testID(1), Ops: []Op{put("k", "v")}}
	old := EncodeCall(c)
	withAlarm := EncodeCall(&Call{Epoch: 1, Time: t0, Namespace: "ns", Object: testID(1), Ops: []Op{put("k", "v")},
		Alarm: AlarmChange{Kind: AlarmSet, At: 9}})
	if !bytes.HasPrefix(withAlarm, old) {
		t.Fatal("the alarm field is not a pure suffix of the entry")
	}
	for _, bad := range [][]byte{append(old, 7), append(old, fieldAlarm), append(old, fieldAlarm, 9), append(old, fieldAlarm, AlarmSet)} {
		if _, err := Decode(bad); err == nil {
			t.Fatalf("Decode(%x) accepted a bad trailing field", bad[len(old):])
		}
	}
}

func alarmsOf(t *testing.T, m *Machine) []AlarmEntry {
	t.Helper()
	var out []AlarmEntry
	if err := m.Alarms(func(e AlarmEntry) bool { out = append(out, e); return true }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAlarmApply(t *testing.T) {
	f := newFixture(t, Options{})
	m := f.m
	a, b := testID(1), testID(2)
	apply1(t, m, activateLog(1, t0))
	wantStatus(t, apply1(t, m, callLog(2, &Call{Epoch: 1, Time: t0, Namespace: "x", Object: a, Alarm: AlarmChange{Kind: AlarmSet, At: t0 + 200}})), Applied)
	wantStatus(t, apply1(t, m, callLog(3, &Call{Epoch: 1, Time: t0, Namespace: "y", Object: b, Alarm: AlarmChange{Kind: AlarmSet, At: t0 + 100}})), Applied)
	want := []AlarmEntry{{At: t0 + 100, Object: b, Namespace: "y"}, {At: t0 + 200, Object: a, Namespace: "x"}}
	if got := alarmsOf(t, m); !reflect.DeepEqual(got, want) {
		t.Fatalf("alarms = %+v, want %+v", got, want)
	}
	// Moving a's alarm replaces it (one per object); a call that keeps it
	// leaves it alone.
	wantStatus(t, apply1(t, m, callLog(4, &Call{Epoch: 1, Time: t0, Namespace: "x", Object: a, BaseVersion: 1, Alarm: AlarmChange{Kind: AlarmSet, At: t0 + 50}})), Applied)
	wantStatus(t, apply1(t, m, callLog(5, &Call{Epoch: 1, Time: t0, Namespace: "x", Object: a, BaseVersion: 2, Ops: []Op{put("k", "v")}})), Applied)
	want = []AlarmEntry{{At: t0 + 50, Object: a, Namespace: "x"}, {At: t0 + 100, Object: b, Namespace: "y"}}
	if got := alarmsOf(t, m); !reflect.DeepEqual(got, want) {
		t.Fatalf("alarms = %+v, want %+v", got, want)
	}
	// A rejected entry (stale base version) changes no alarm.
	wantStatus(t, apply1(t, m, callLog(6, &Call{Epoch: 1, Time: t0, Namespace: "y", Object: b, BaseVersion: 0, Alarm: AlarmChange{Kind: AlarmDelete}})), Rejected)
	if at, ok := m.Alarm(b); !ok || at != t0+100 {
		t.Fatalf("after a rejected delete, alarm of b = %d %v", at, ok)
	}
	before := hashOf(t, m)
	img := snapshotBytes(t, m)
	wantStatus(t, apply1(t, m, callLog(7, &Call{Epoch: 1, Time: t0, Namespace: "y", Object: b, BaseVersion: 1, Alarm: AlarmChange{Kind: AlarmDelete}})), Applied)
	if _, ok := m.Alarm(b); ok {
		t.Fatal("alarm of b survived its delete")
	}
	if h := hashOf(t, m); h.sum == before.sum {
		t.Fatal("deleting an alarm did not change the state hash")
	}
	// Alarms are part of snapshots and survive a restart.
	if err := m.Restore(bytes.NewReader(img)); err != nil {
		t.Fatal(err)
	}
	if h := hashOf(t, m); h != before {
		t.Fatal("restored state hash differs from the snapshot's")
	}
	f.reopen()
	if got := alarmsOf(t, f.m); !reflect.DeepEqual(got, want) {
		t.Fatalf("after restore and reopen, alarms = %+v, want %+v", got, want)
	}
}

// The state hash covers alarms: replicas that disagree on one differ.
func TestAlarmHashCoversAlarms(t *testing.T) {
	m := newMachine(t)
	apply1(t, m, activateLog(1, t0))
	apply1(t, m, callLog(2, &Call{Epoch: 1, Time: t0, Namespace: "x", Object: testID(1), Alarm: AlarmChange{Kind: AlarmSet, At: t0}}))
	withAlarm := hashOf(t, m)
	apply1(t, m, callLog(3, &Call{Epoch: 1, Time: t0, Namespace: "x", Object: testID(1), BaseVersion: 1, Alarm: AlarmChange{Kind: AlarmDelete}}))
	if h := hashOf(t, m); h.sum == withAlarm.sum {
		t.Fatal("hash ignores alarms")
	}
}
