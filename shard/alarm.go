package shard

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/fsm"
)

// Alarms.
//
// The fsm holds every object's alarm (set and cleared only by Call entries,
// with the turn's other writes). While a shard is active on its leader, one
// goroutine (runAlarms) schedules them: it reads the due alarms from the
// applied state, in time order, and runs each one's handler as an ordinary
// turn of its object (object.turn with call.alarm set). That turn
// re-checks the alarm against the object's speculative state and the turn's
// own time, so a handler never runs before its alarm is due by the clock that
// stamps the entry, and never for an alarm deleted or moved meanwhile; its
// entry deletes the alarm (unless the handler sets a new one). A failed turn
// leaves the alarm set, and is retried with exponential backoff until
// AlarmAttempts attempts failed; then it is given up on (reported by
// AlarmStats) until the alarm changes or a new leader takes over. A new
// leader starts from the applied state after its barrier, so every alarm set
// by an earlier leader is re-armed: delivery is at least once across
// failover.

// Defaults of alarm retries.
const (
	DefaultAlarmAttempts = 6
	DefaultAlarmBackoff  = 100 * time.Millisecond
	maxAlarmBackoff      = 30 * time.Second
	// DefaultAlarmTimeout bounds one alarm turn, its wait in the object's
	// queue included (the handler's ctx deadline).
	DefaultAlarmTimeout = 30 * time.Second
	// maxAlarmFires bounds the alarm turns running at once per shard.
	maxAlarmFires = 64
	// alarmScanLimit bounds the due alarms read per scan.
	alarmScanLimit = 1024
	// alarmSkipDelay is how long the scheduler waits before looking again at
	// an alarm whose turn found it not due (it was being moved or deleted by
	// an entry not yet applied).
	alarmSkipDelay = 20 * time.Millisecond
)

func (c *Config) alarmAttempts() int {
	if c.AlarmAttempts <= 0 {
		return DefaultAlarmAttempts
	}
	return c.AlarmAttempts
}

func (c *Config) alarmTimeout() time.Duration {
	if c.AlarmTimeout <= 0 {
		return DefaultAlarmTimeout
	}
	return c.AlarmTimeout
}

func (c *Config) alarmBackoff(failures int) time.Duration {
	d := c.AlarmBackoff
	if d <= 0 {
		d = DefaultAlarmBackoff
	}
	for i := 1; i < failures && d < maxAlarmBackoff; i++ {
		d *= 2
	}
	return min(d, maxAlarmBackoff)
}

// FailedAlarm is an alarm whose handler failed every attempt; it stays set.
type FailedAlarm struct {
	Namespace string
	Object    duro.ID
	At        time.Time
	Attempts  int
	Err       string
}

// AlarmStats describe the alarms this replica ran while leading the shard.
type AlarmStats struct {
	Fired    uint64 // handlers that ran and committed
	Failures uint64 // failed attempts, each retry counted
	Failed   []FailedAlarm
}

type alarmStats struct {
	mu       sync.Mutex // guards the fields below
	fired    uint64
	failures uint64
	failed   map[duro.ID]FailedAlarm
}

// AlarmStats returns the shard's alarm counters and the alarms given up on
// under the current leadership.
func (s *Shard) AlarmStats() AlarmStats {
	a := &s.alarms
	a.mu.Lock()
	defer a.mu.Unlock()
	out := AlarmStats{Fired: a.fired, Failures: a.failures}
	for _, f := range a.failed {
		out.Failed = append(out.Failed, f)
	}
	sort.Slice(out.Failed, func(i, j int) bool { return out.Failed[i].At.Before(out.Failed[j].At) })
	return out
}

func (a *alarmStats) update(fn func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failed == nil {
		a.failed = map[duro.ID]FailedAlarm{}
	}
	fn()
}

// nudgeAlarms wakes the scheduler: an applied entry changed an alarm.
func (s *Shard) nudgeAlarms() {
	select {
	case s.alarmNudge <- struct{}{}:
	default:
	}
}

type alarmTry struct {
	at       int64
	failures int // of the handler: these count toward giving up
	// missed counts turns that failed without the handler failing (the
	// turn timed out in the object's queue, the object was reset, its
	// entry did not commit): retried with backoff, never given up on.
	missed  int
	next    time.Time // do not fire before
	running bool
	gaveUp  bool
}

type alarmDone struct {
	id  duro.ID
	res Result
}

// runAlarms schedules the shard's alarms until ctx (the activation's) ends.
func (s *Shard) runAlarms(ctx context.Context) {
	tries := map[duro.ID]*alarmTry{}
	results := make(chan alarmDone, maxAlarmFires) // never blocks: one slot per running fire
	running := 0
	defer s.alarms.update(func() { clear(s.alarms.failed) })
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := s.cfg.Now()
		var wake time.Time
		earlier := func(t time.Time) {
			if wake.IsZero() || t.Before(wake) {
				wake = t
			}
		}
		// Due alarms that are running or given up are passed over without
		// counting toward the scan limit, so they cannot starve later ones.
		var due []fsm.AlarmEntry
		seen := map[duro.ID]bool{}
		err := s.machine.Alarms(func(e fsm.AlarmEntry) bool {
			if e.At > now.UnixNano() {
				earlier(time.Unix(0, e.At))
				return false
			}
			seen[e.Object] = true
			if tr := tries[e.Object]; tr != nil && tr.at == e.At && (tr.running || tr.gaveUp) {
				return true
			}
			due = append(due, e)
			return len(due) < alarmScanLimit
		})
		if err != nil {
			s.log.Error("reading alarms", "err", err)
			earlier(now.Add(time.Second))
		}
		for _, e := range due {
			tr := tries[e.Object]
			if tr != nil && tr.at != e.At && !tr.running {
				tr = nil // the alarm was moved: a new delivery
				s.alarms.update(func() { delete(s.alarms.failed, e.Object) })
			}
			if tr == nil {
				tr = &alarmTry{at: e.At}
				tries[e.Object] = tr
			}
			switch {
			case tr.running, tr.gaveUp:
				continue
			case tr.next.After(now):
				earlier(tr.next)
				continue
			case running >= maxAlarmFires:
				continue // a result will wake the loop
			}
			tr.running = true
			running++
			s.fireAlarm(ctx, e, tr.failures, results)
		}
		if len(due) < alarmScanLimit && err == nil {
			for id, tr := range tries {
				if !seen[id] && !tr.running {
					delete(tries, id)
					s.alarms.update(func() { delete(s.alarms.failed, id) })
				}
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if !wake.IsZero() {
			timer.Reset(max(wake.Sub(s.cfg.Now()), 0))
		}
		select {
		case <-ctx.Done():
			return
		case <-s.alarmNudge:
		case <-timer.C:
		case d := <-results:
			running--
			tr := tries[d.id]
			if tr == nil {
				continue
			}
			tr.running = false
			switch {
			case d.res.alarmSkipped:
				tr.next = s.cfg.Now().Add(alarmSkipDelay)
			case d.res.Err == nil:
				delete(tries, d.id)
				s.alarms.update(func() { s.alarms.fired++ })
			case d.res.alarmMissed:
				tr.missed++
				tr.next = s.cfg.Now().Add(s.cfg.alarmBackoff(tr.missed))
				s.log.Info("alarm turn did not complete; retrying", "ns", d.res.alarmNS, "object", d.id.String(),
					"missed", tr.missed, "err", d.res.Err.Error())
			default:
				tr.failures++
				gaveUp := tr.failures >= s.cfg.alarmAttempts()
				s.alarms.update(func() {
					s.alarms.failures++
					if gaveUp {
						s.alarms.failed[d.id] = FailedAlarm{Namespace: d.res.alarmNS, Object: d.id,
							At: time.Unix(0, tr.at), Attempts: tr.failures, Err: d.res.Err.Error()}
					}
				})
				if gaveUp {
					tr.gaveUp = true
					s.log.Error("alarm handler failed; giving up until the alarm changes or leadership moves",
						"ns", d.res.alarmNS, "object", d.id.String(), "attempts", tr.failures, "err", d.res.Err.Error())
				} else {
					tr.next = s.cfg.Now().Add(s.cfg.alarmBackoff(tr.failures))
					s.log.Warn("alarm handler failed; retrying", "ns", d.res.alarmNS, "object", d.id.String(),
						"attempt", tr.failures, "err", d.res.Err.Error())
				}
			}
		}
	}
}

// fireAlarm runs e's handler as a turn of its object; the outcome goes to
// results (exactly once).
func (s *Shard) fireAlarm(ctx context.Context, e fsm.AlarmEntry, retry int, results chan<- alarmDone) {
	send := func(r Result) {
		r.alarmNS = e.Namespace
		select {
		case results <- alarmDone{id: e.Object, res: r}:
		case <-ctx.Done():
		}
	}
	class, ok := s.cfg.Registry.Lookup(e.Namespace)
	if !ok {
		send(Result{Err: duro.Errorf(duro.CodeNotFound, "alarm of %s: namespace %q is not registered on this node", e.Object, e.Namespace)})
		return
	}
	info := duro.AlarmInfo{Scheduled: time.Unix(0, e.At), Retry: retry}
	// handlerFailed stays set when the handler returns an error or panics
	// (invoke recovers the panic after fn is gone).
	var handlerFailed atomic.Bool
	fn := func(c duro.Context, inst duro.Instance, _ []byte) ([]byte, error) {
		handlerFailed.Store(true)
		a, ok := inst.(duro.Alarmer)
		if !ok {
			return nil, duro.Errorf(duro.CodeFailedPrecondition, "class %q has an alarm set but no Alarm method", e.Namespace)
		}
		if err := a.Alarm(c, info); err != nil {
			return nil, err
		}
		handlerFailed.Store(false)
		return nil, nil
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.alarmTimeout())
	var once sync.Once
	s.host.submit(&call{ctx: cctx, req: &Request{Namespace: e.Namespace, Object: e.Object, Method: "(alarm)"},
		class: class, fn: fn, alarm: true, done: func(r Result) {
			once.Do(func() {
				cancel()
				// A retryable failure the handler did not cause is not
				// the handler's attempt.
				r.alarmMissed = r.Err != nil && !handlerFailed.Load() && (r.Err.Retryable || r.Err.Indeterminate)
				send(r)
			})
		}})
}

// alarmDue reports whether the turn of an alarm call should run the handler:
// the object's alarm (as the turn sees it, pending entries included) is set
// and due at the turn's time.
func alarmDue(st *turnStore, now time.Time) bool {
	at, ok, err := st.GetAlarm()
	return err == nil && ok && !now.Before(at)
}

// The alarm calls of duro.Storage.

func (t *turnStore) GetAlarm() (time.Time, bool, error) {
	ch := t.ws.alarm
	for i := len(t.overlays) - 1; i >= 0 && ch.Kind == fsm.AlarmKeep; i-- {
		ch = t.overlays[i].ws.alarm
	}
	switch ch.Kind {
	case fsm.AlarmSet:
		return time.Unix(0, ch.At), true, nil
	case fsm.AlarmDelete:
		return time.Time{}, false, nil
	}
	at, ok := t.obj.h.s.machine.Alarm(t.obj.id)
	if !ok {
		return time.Time{}, false, nil
	}
	return time.Unix(0, at), true, nil
}

// Alarm times are stored as int64 unix nanoseconds; beyond these bounds
// UnixNano wraps, and a time centuries ahead would be stored as one in the
// past and fire at once.
var (
	minAlarm = time.Unix(0, 1).UTC()
	maxAlarm = time.Unix(0, math.MaxInt64).UTC()
)

func (t *turnStore) SetAlarm(at time.Time) error {
	if at.IsZero() || at.Before(minAlarm) || at.After(maxAlarm) {
		return fmt.Errorf("%w: alarm time %v is outside %v to %v", duro.ErrInvalidArgument, at, minAlarm, maxAlarm)
	}
	if _, ok := t.obj.inst.(duro.Alarmer); !ok {
		return fmt.Errorf("%w: class %q has no Alarm method (its instances do not implement duro.Alarmer)", duro.ErrInvalidArgument, t.obj.ns)
	}
	t.ws.alarm = fsm.AlarmChange{Kind: fsm.AlarmSet, At: at.UnixNano()}
	return nil
}

func (t *turnStore) DeleteAlarm() error {
	t.ws.alarm = fsm.AlarmChange{Kind: fsm.AlarmDelete}
	return nil
}
