package duro

// Alarmer is implemented by instances whose class handles alarms (set with
// Storage.SetAlarm).
//
// Alarm runs as an ordinary turn once the alarm is due, never before: its
// ctx.Now() is at or after info.Scheduled. The alarm is cleared in the same
// log entry as the handler's writes, unless the handler sets a new one. If
// Alarm returns an error (or panics) nothing it wrote is kept and the alarm
// is retried with exponential backoff; after the node's retry limit the alarm
// stays set and the failure shows in the node's status and metrics until a
// new shard leader (or a new SetAlarm) tries again. Delivery is at least
// once: after a failover an alarm whose handler already ran, but whose entry
// did not commit, runs again.
type Alarmer interface {
	Alarm(ctx Context, info AlarmInfo) error
}

// AlarmInfo describes the alarm being delivered.
type AlarmInfo struct {
	// Scheduled is the time the alarm was set for.
	Scheduled Time
	// Retry counts the earlier failed attempts of this delivery on the
	// current shard leader (0 on the first).
	Retry int
}
