package run

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/jepsen/checker"
)

// Rec is one operation of a history: the checker's Op plus where it ran.
type Rec struct {
	checker.Op
	// Node is the node a pinned (raw, no re-routing) call went to.
	Node string `json:",omitempty"`
	Err  string `json:",omitempty"`
	// Code is the duro error code of a failed call (T08 classification).
	Code string `json:",omitempty"`
	// Final marks the reads after the final heal.
	Final bool `json:",omitempty"`
	// Extra carries workload-specific results (memcounter's mem value).
	Extra map[string]int64 `json:",omitempty"`
}

// Fault is one nemesis window.
type Fault struct {
	Name       string
	Desc       string
	Err        string `json:",omitempty"`
	Start, End time.Duration
	// Minority lists the nodes cut off on the minority side, when the
	// fault is a halves partition.
	Minority []string `json:",omitempty"`
}

// recorder collects a history; ops are stamped with the monotonic time since
// the run began.
type recorder struct {
	t0     time.Time
	mu     sync.Mutex // guards recs, faults
	recs   []Rec
	faults []Fault
}

func newRecorder() *recorder { return &recorder{t0: time.Now()} }

func (r *recorder) now() time.Duration { return time.Since(r.t0) }

func (r *recorder) add(rec Rec) {
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.mu.Unlock()
}

func (r *recorder) addFault(f Fault) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, f)
	return len(r.faults) - 1
}

func (r *recorder) endFault(i int, end time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults[i].End = end
	if err != nil {
		r.faults[i].Err += err.Error()
	}
}

// history returns the records sorted by start time.
func (r *recorder) history() ([]Rec, []Fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := append([]Rec(nil), r.recs...)
	sort.SliceStable(h, func(i, j int) bool { return h[i].Start < h[j].Start })
	return h, append([]Fault(nil), r.faults...)
}

// ops strips records to checker ops.
func ops(h []Rec) []checker.Op {
	out := make([]checker.Op, len(h))
	for i, r := range h {
		out[i] = r.Op
	}
	return out
}

// classify maps a call's error to the op outcome: nil is Ok; an error that
// says the call may have run (or an error we cannot classify) is Info; any
// other duro error is a definite Fail.
func classify(err error) checker.Type {
	if err == nil {
		return checker.Ok
	}
	var e *duro.Error
	if !errors.As(err, &e) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return checker.Info
		}
		return checker.Info
	}
	if e.Indeterminate {
		return checker.Info
	}
	return checker.Fail
}

func writeJSONLines(path string, h []Rec) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, r := range h {
		if err := enc.Encode(r); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
