package checker

import (
	"fmt"
	"sort"
	"time"
)

// Type is the outcome of an operation. Invocation is implicit: each Op records
// both its start and end times.
type Type int

const (
	// Ok means the operation took effect.
	Ok Type = iota
	// Fail means the operation definitely did not take effect.
	Fail
	// Info means the outcome is indeterminate: it may take effect at any time
	// after Start, or never.
	Info
)

func (t Type) String() string {
	switch t {
	case Ok:
		return "ok"
	case Fail:
		return "fail"
	case Info:
		return "info"
	}
	return fmt.Sprintf("Type(%d)", int(t))
}

// Op is one operation of a history.
type Op struct {
	Client int
	// Object is the object (and key) the op targets, e.g. "kv/obj3/k1".
	Object string
	// F is "get", "put", "cas" (register); "add", "read" (counter);
	// "append", "read" (list); "add", "read" (set).
	F string
	// Value is the argument: int64 for register and counter, string for
	// list append and set add.
	Value any
	// Expect is the expected value of a cas; nil means absent.
	Expect any
	// Result is the output: for a register get an int64, *int64 or nil
	// (absent); for a counter read an int64; for list and set reads (and
	// optionally list appends) a []string.
	Result any
	Type   Type
	// Start and End are monotonic times since the run began. End is
	// meaningless for Info ops.
	Start, End time.Duration
}

// Anomaly is one violation found by a checker.
type Anomaly struct {
	Kind   string
	Object string
	Detail string
	// Ops are indexes into the checked history.
	Ops []int
}

// Result is the outcome of a checker. Valid is true iff Anomalies is empty.
type Result struct {
	Valid     bool
	Anomalies []Anomaly
	Stats     map[string]int
}

// Anomaly kinds.
const (
	KindInconclusive = "inconclusive"
	KindNonlinear    = "nonlinearizable"
	KindLost         = "lost"
	KindDuplicated   = "duplicated"
	KindDuplicate    = "duplicate"
	KindPhantom      = "phantom"
	KindAbortedRead  = "aborted-read"
	KindOrder        = "order"
	KindRealtime     = "realtime"
	KindMalformed    = "malformed"
	KindVisualize    = "visualize"
)

type report struct {
	anomalies []Anomaly
	stats     map[string]int
}

func newReport() *report { return &report{stats: map[string]int{}} }

func (r *report) add(kind, object string, ops []int, format string, args ...any) {
	r.anomalies = append(r.anomalies, Anomaly{Kind: kind, Object: object, Detail: fmt.Sprintf(format, args...), Ops: ops})
	r.stats["anomaly/"+kind]++
}

func (r *report) result() Result {
	return Result{Valid: len(r.anomalies) == 0, Anomalies: r.anomalies, Stats: r.stats}
}

// countTypes records per-outcome counts of ops.
func (r *report) countOp(op Op) {
	r.stats["ops"]++
	r.stats["ops/"+op.Type.String()]++
}

// byObject groups history indexes by Object, objects in sorted order so the
// anomalies come out deterministically.
func byObject(history []Op) (objects []string, idx map[string][]int) {
	idx = map[string][]int{}
	for i, op := range history {
		if _, ok := idx[op.Object]; !ok {
			objects = append(objects, op.Object)
		}
		idx[op.Object] = append(idx[op.Object], i)
	}
	sort.Strings(objects)
	return objects, idx
}

// lastOkRead returns the index of the Ok op with F == "read" (or "get") and
// the latest End among ids, or -1.
func lastOkRead(history []Op, ids []int) int {
	best := -1
	for _, i := range ids {
		op := history[i]
		if op.Type != Ok || (op.F != "read" && op.F != "get") {
			continue
		}
		if best < 0 || op.End > history[best].End {
			best = i
		}
	}
	return best
}

// toInt64 converts the integer shapes a history may carry. present is false
// for nil and nil pointers.
func toInt64(v any) (n int64, present, ok bool) {
	switch x := v.(type) {
	case nil:
		return 0, false, true
	case int64:
		return x, true, true
	case int:
		return int64(x), true, true
	case int32:
		return int64(x), true, true
	case uint64:
		return int64(x), true, true
	case *int64:
		if x == nil {
			return 0, false, true
		}
		return *x, true, true
	case *int:
		if x == nil {
			return 0, false, true
		}
		return int64(*x), true, true
	}
	return 0, false, false
}
