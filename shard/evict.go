package shard

import (
	"container/list"
	"time"

	"github.com/duro-io/duro"
)

// Defaults of eviction.
const (
	DefaultIdleTimeout = 5 * time.Minute
	DefaultMaxActive   = 100000
)

// Eviction drops an object's in-memory instance; storage is untouched. An
// object may be evicted only when completely idle (no queued call, no running
// turn, no pending entry, at least one turn finished, not dead). Eviction
// removes it from objectHost.objects and marks it dead with errEvicted in the
// same critical section (h.mu, then o.mu), so a racing enqueue fails and
// submit, looking again, creates a fresh instance.
//
// Lock order: objectHost.mu before object.mu.

var errEvicted = retryable("object evicted")

func (c *Config) idleTimeout() time.Duration {
	if c.IdleTimeout == 0 {
		return DefaultIdleTimeout
	}
	return c.IdleTimeout
}

func (c *Config) maxActive() int {
	if c.MaxActive <= 0 {
		return DefaultMaxActive
	}
	return c.MaxActive
}

// idleLocked reports whether o may be evicted. o.mu must be held.
func (o *object) idleLocked() bool {
	return o.dead == nil && !o.running && len(o.queue) == 0 && len(o.pending) == 0 && o.used
}

// removeLocked drops o from the host's map and LRU order. h.mu must be held.
func (h *objectHost) removeLocked(o *object) {
	if h.objects[o.id] == o {
		delete(h.objects, o.id)
	}
	if o.elem != nil {
		h.lru.Remove(o.elem)
		o.elem = nil
	}
}

// tryEvictLocked evicts o if it is idle and, when idleSince is not zero, was
// last used no later than idleSince. h.mu must be held.
func (h *objectHost) tryEvictLocked(o *object, idleSince time.Time) bool {
	o.mu.Lock()
	ok := o.idleLocked() && (idleSince.IsZero() || !o.lastUsed.After(idleSince))
	if ok {
		o.dead = errEvicted
	}
	o.mu.Unlock()
	if ok {
		h.removeLocked(o)
	}
	return ok
}

// shrinkLocked evicts least recently used idle objects, other than keep, until
// the host holds at most its cap. Busy objects are skipped. h.mu must be held.
func (h *objectHost) shrinkLocked(keep *object) {
	limit := h.s.cfg.maxActive()
	for e := h.lru.Back(); e != nil && len(h.objects) > limit; {
		prev := e.Prev()
		if o := e.Value.(*object); o != keep {
			h.tryEvictLocked(o, time.Time{})
		}
		e = prev
	}
}

// maybeShrink evicts idle objects if the host is over its cap: called when an
// object becomes idle, since objects busy when the cap was exceeded were
// skipped.
func (h *objectHost) maybeShrink() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.objects) > h.s.cfg.maxActive() {
		h.shrinkLocked(nil)
	}
}

// sweep evicts the objects idle for longer than timeout.
func (h *objectHost) sweep(timeout time.Duration) {
	now := h.s.cfg.Now()
	cutoff := now.Add(-timeout)
	h.mu.Lock()
	defer h.mu.Unlock()
	for e := h.lru.Back(); e != nil; {
		prev := e.Prev()
		o := e.Value.(*object)
		// The LRU is ordered by submission; an idle object's last use is
		// after its last submission, so nothing further on has expired.
		if o.touched.After(cutoff) {
			return
		}
		h.tryEvictLocked(o, cutoff)
		e = prev
	}
}

// activeObjects returns the number of objects in memory.
func (h *objectHost) activeObjects() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.objects)
}

// sweepIdle runs the idle sweep until the shard stops.
func (s *Shard) sweepIdle(timeout time.Duration) {
	defer s.wg.Done()
	every := timeout / 4
	every = max(every, 10*time.Millisecond)
	every = min(every, 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.host.sweep(timeout)
		}
	}
}

// activateInstance runs the instance's Activate hook, if any, with the first
// call's context.
func (o *object) activateInstance(ctx duro.Context) (err error) {
	a, ok := o.inst.(duro.Activator)
	if !ok {
		return nil
	}
	defer func() {
		if p := recover(); p != nil {
			err = duro.Errorf(duro.CodeInternal, "Activate panicked: %v", p)
		}
	}()
	return a.Activate(ctx)
}

func newLRU() *list.List { return list.New() }
