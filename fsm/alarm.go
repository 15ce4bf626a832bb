package fsm

import (
	"encoding/binary"
	"fmt"

	"github.com/duro-io/duro"
	bolt "go.etcd.io/bbolt"
)

// Alarms. Each object has at most one alarm: a time in unix nanoseconds (log
// time of the leader that runs it). A Call entry may set or delete its
// object's alarm together with its other writes; the alarm changes atomically
// with them, under the same dedup, epoch and base-version checks.
//
// Two buckets hold them: alarm (object ID → time + namespace), the truth, and
// alarmq (time + object ID → nothing), the same alarms in firing order, so a
// leader finds the next due alarms without scanning every object.

var (
	bucketAlarm  = []byte("alarm")
	bucketAlarmQ = []byte("alarmq")
)

// Alarm change kinds of a Call entry.
const (
	AlarmKeep   byte = 0 // the call leaves the alarm as it is
	AlarmSet    byte = 1 // set (or move) the alarm to At
	AlarmDelete byte = 2 // delete the alarm, if any
)

// AlarmChange is a Call's change to its object's alarm.
type AlarmChange struct {
	Kind byte
	At   int64 // unix nanoseconds; AlarmSet only
}

// Optional trailing fields of a Call entry, after its ops. An entry written
// before a field existed simply ends before it, so old entries still decode.
const fieldAlarm byte = 1

func appendCallFields(b []byte, c *Call) []byte {
	if c.Alarm.Kind != AlarmKeep {
		b = append(b, fieldAlarm, c.Alarm.Kind)
		if c.Alarm.Kind == AlarmSet {
			b = binary.AppendVarint(b, c.Alarm.At)
		}
	}
	return b
}

func decodeCallFields(d *decoder, c *Call) {
	for d.err == nil && len(d.b) > 0 {
		switch d.byte() {
		case fieldAlarm:
			c.Alarm.Kind = d.byte()
			switch c.Alarm.Kind {
			case AlarmSet:
				c.Alarm.At = d.varint()
			case AlarmDelete:
			default:
				d.fail("alarm kind")
			}
		default:
			d.fail("field tag")
		}
	}
}

func alarmQKey(at int64, id duro.ID) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+duro.IDLen), uint64(at)), id[:]...)
}

// applyAlarm applies c's alarm change.
func applyAlarm(tx *bolt.Tx, c *Call) error {
	if c.Alarm.Kind == AlarmKeep {
		return nil
	}
	ab, qb := tx.Bucket(bucketAlarm), tx.Bucket(bucketAlarmQ)
	if old := ab.Get(c.Object[:]); len(old) >= 8 {
		if err := qb.Delete(alarmQKey(int64(binary.BigEndian.Uint64(old)), c.Object)); err != nil {
			return err
		}
		if err := ab.Delete(c.Object[:]); err != nil {
			return err
		}
	}
	if c.Alarm.Kind != AlarmSet {
		return nil
	}
	if c.Alarm.At < 0 {
		return fmt.Errorf("alarm time %d is negative", c.Alarm.At)
	}
	v := append(binary.BigEndian.AppendUint64(nil, uint64(c.Alarm.At)), c.Namespace...)
	if err := ab.Put(c.Object[:], v); err != nil {
		return err
	}
	return qb.Put(alarmQKey(c.Alarm.At, c.Object), nil)
}

// Alarm returns the applied alarm of object id: its time in unix nanoseconds.
func (m *Machine) Alarm(id duro.ID) (at int64, ok bool) {
	m.peek(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketAlarm).Get(id[:]); len(v) >= 8 {
			at, ok = int64(binary.BigEndian.Uint64(v)), true
		}
		return nil
	})
	return at, ok
}

// AlarmEntry is one applied alarm.
type AlarmEntry struct {
	At        int64
	Object    duro.ID
	Namespace string
}

// Alarms calls fn for applied alarms in time order, then object order,
// stopping when fn returns false.
func (m *Machine) Alarms(fn func(AlarmEntry) bool) error {
	return m.view(func(tx *bolt.Tx) error {
		ab := tx.Bucket(bucketAlarm)
		cur := tx.Bucket(bucketAlarmQ).Cursor()
		for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
			if len(k) != 8+duro.IDLen {
				return fmt.Errorf("fsm: alarm queue key of %d bytes", len(k))
			}
			var e AlarmEntry
			e.At = int64(binary.BigEndian.Uint64(k))
			copy(e.Object[:], k[8:])
			if v := ab.Get(e.Object[:]); len(v) >= 8 {
				e.Namespace = string(v[8:])
			}
			if !fn(e) {
				return nil
			}
		}
		return nil
	})
}

// hashAlarms adds the alarm buckets to h. Empty buckets add nothing, so the
// hash of a state without alarms is what it was before alarms existed.
func hashAlarms(tx *bolt.Tx, h *hasher) {
	for _, name := range [][]byte{bucketAlarm, bucketAlarmQ} {
		b := tx.Bucket(name)
		if k, _ := b.Cursor().First(); k == nil {
			continue
		}
		h.add(name)
		b.ForEach(func(k, v []byte) error { h.add(k); h.add(v); return nil })
	}
}
