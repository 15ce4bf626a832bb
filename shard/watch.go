package shard

import (
	"sync"
	"sync/atomic"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/fsm"
)

// Watching objects: a watcher is signalled each time an entry writing its
// object is applied on this replica (leader or follower), so a follower of
// an object (the room's Follow stream) knows when to read again. A signal
// says only "something committed"; readers then read through the normal,
// linearizable call path, so they never see uncommitted state.

type watchHub struct {
	n  atomic.Int64 // watchers registered; applies skip the hub when 0
	mu sync.Mutex   // guards m
	m  map[duro.ID]map[chan struct{}]struct{}
}

func (w *watchHub) add(id duro.ID) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	if w.m == nil {
		w.m = map[duro.ID]map[chan struct{}]struct{}{}
	}
	if w.m[id] == nil {
		w.m[id] = map[chan struct{}]struct{}{}
	}
	w.m[id][ch] = struct{}{}
	w.mu.Unlock()
	w.n.Add(1)
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			w.mu.Lock()
			delete(w.m[id], ch)
			if len(w.m[id]) == 0 {
				delete(w.m, id)
			}
			w.mu.Unlock()
			w.n.Add(-1)
		})
	}
}

// applied signals the watchers of the objects written by results.
func (w *watchHub) applied(results []any) {
	if w.n.Load() == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range results {
		res, ok := r.(*fsm.Result)
		if !ok || res.Status != fsm.Applied {
			continue
		}
		for ch := range w.m[res.Object] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// Watch returns a channel that receives a signal (coalesced) after each
// entry writing object id is applied on this node, and a function that stops
// the watch.
func (h *Host) Watch(id duro.ID) (<-chan struct{}, func()) {
	return h.shards[duro.ShardOf(id, len(h.shards))].watch.add(id)
}
