package checker

import (
	"fmt"
	"time"

	"github.com/anishathalye/porcupine"
)

// DefaultRegisterTimeout bounds the porcupine search in Register. A search
// that does not finish is reported as "inconclusive" (G-1): size histories so
// it never happens.
const DefaultRegisterTimeout = 5 * time.Minute

// Register checks per-object linearizability of a register history with
// get/put/cas ops, starting from an absent value. Fail ops are dropped; Info
// ops are given an unbounded return time; Info gets are dropped since they
// have no effect. On failure, when visualizePath is not empty, porcupine's
// HTML visualization is written there.
func Register(history []Op, visualizePath string) Result {
	return RegisterTimeout(history, visualizePath, DefaultRegisterTimeout)
}

// RegisterTimeout is Register with an explicit porcupine timeout; zero means
// no timeout.
func RegisterTimeout(history []Op, visualizePath string, timeout time.Duration) Result {
	r := newReport()
	ops, byObj := registerOps(history, r)
	r.stats["objects"] = len(byObj)
	if len(ops) == 0 {
		return r.result()
	}
	model := registerModel()
	res, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
	switch res {
	case porcupine.Ok:
	case porcupine.Unknown:
		r.add(KindInconclusive, "", nil, "porcupine timed out after %v on %d ops", timeout, len(ops))
	default:
		// Find which objects are at fault; the joint check only says "some".
		objects, _ := byObject(history)
		for _, obj := range objects {
			part := byObj[obj]
			if len(part) == 0 {
				continue
			}
			switch porcupine.CheckOperationsTimeout(registerModelNoPartition(), part, timeout) {
			case porcupine.Illegal:
				r.add(KindNonlinear, obj, opIndexes(part), "no linearization of %d ops", len(part))
			case porcupine.Unknown:
				r.add(KindInconclusive, obj, opIndexes(part), "porcupine timed out on %d ops", len(part))
			}
		}
		if len(r.anomalies) == 0 {
			r.add(KindNonlinear, "", nil, "history is not linearizable")
		}
	}
	if res != porcupine.Ok && visualizePath != "" {
		if err := porcupine.VisualizePath(model, info, visualizePath); err != nil {
			r.add(KindVisualize, "", nil, "write %s: %v", visualizePath, err)
		}
	}
	return r.result()
}

type regState struct {
	v   int64
	set bool
}

func (s regState) String() string {
	if !s.set {
		return "absent"
	}
	return fmt.Sprint(s.v)
}

type regInput struct {
	object string
	f      string
	value  regState // put value, cas new value
	expect regState // cas expected value
}

type regOutput struct {
	value   regState // get result
	unknown bool     // Info op: any outcome is allowed
}

func registerOps(history []Op, r *report) ([]porcupine.Operation, map[string][]porcupine.Operation) {
	// An Info op may take effect at any time after it started, so its return
	// is later than every other event in the history.
	var horizon int64
	for _, op := range history {
		horizon = max(horizon, int64(op.Start))
		if op.Type != Info {
			horizon = max(horizon, int64(op.End))
		}
	}
	horizon++

	clients := map[int]int{}
	var ops []porcupine.Operation
	byObj := map[string][]porcupine.Operation{}
	for i, op := range history {
		r.countOp(op)
		if op.Type == Fail {
			continue
		}
		in := regInput{object: op.Object, f: op.F}
		out := regOutput{unknown: op.Type == Info}
		var okV, okE, okR = true, true, true
		switch op.F {
		case "get":
			if op.Type == Info {
				r.stats["dropped/info-get"]++
				continue
			}
			out.value.v, out.value.set, okR = toInt64(op.Result)
		case "put":
			in.value.v, in.value.set, okV = toInt64(op.Value)
			okV = okV && in.value.set
		case "cas":
			in.value.v, in.value.set, okV = toInt64(op.Value)
			okV = okV && in.value.set
			in.expect.v, in.expect.set, okE = toInt64(op.Expect)
		default:
			r.add(KindMalformed, op.Object, []int{i}, "unknown register op %q", op.F)
			continue
		}
		if !okV || !okE || !okR {
			r.add(KindMalformed, op.Object, []int{i}, "%s: bad value %v/expect %v/result %v", op.F, op.Value, op.Expect, op.Result)
			continue
		}
		c, ok := clients[op.Client]
		if !ok {
			c = len(clients)
			clients[op.Client] = c
		}
		ret := int64(op.End)
		if op.Type == Info {
			ret = horizon
		}
		po := porcupine.Operation{ClientId: c, Input: in, Call: int64(op.Start), Output: out, Return: ret, Metadata: i}
		ops = append(ops, po)
		byObj[op.Object] = append(byObj[op.Object], po)
	}
	return ops, byObj
}

func opIndexes(ops []porcupine.Operation) []int {
	out := make([]int, len(ops))
	for i, o := range ops {
		out[i] = o.Metadata.(int)
	}
	return out
}

func registerModelNoPartition() porcupine.Model {
	return porcupine.Model{
		Init: func() any { return regState{} },
		Step: func(state, input, output any) (bool, any) {
			s, in, out := state.(regState), input.(regInput), output.(regOutput)
			switch in.f {
			case "get":
				return out.unknown || out.value == s, s
			case "put":
				return true, in.value
			case "cas":
				if s == in.expect {
					return true, in.value
				}
				// Ok cas must have applied; an Info cas that did not match
				// is a no-op at this point.
				return out.unknown, s
			}
			return false, s
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(regInput), output.(regOutput)
			res := out.value.String()
			if out.unknown {
				res = "?"
			}
			switch in.f {
			case "get":
				return fmt.Sprintf("get() -> %s", res)
			case "put":
				return fmt.Sprintf("put(%s)", in.value)
			default:
				return fmt.Sprintf("cas(%s, %s)%s", in.expect, in.value, map[bool]string{true: " ?"}[out.unknown])
			}
		},
		DescribeState:             func(state any) string { return state.(regState).String() },
		DescribeOperationMetadata: func(info any) string { return fmt.Sprintf("history[%d]", info) },
	}
}

func registerModel() porcupine.Model {
	m := registerModelNoPartition()
	m.Partition = func(history []porcupine.Operation) [][]porcupine.Operation {
		idx := map[string]int{}
		var parts [][]porcupine.Operation
		for _, op := range history {
			obj := op.Input.(regInput).object
			p, ok := idx[obj]
			if !ok {
				p = len(parts)
				idx[obj] = p
				parts = append(parts, nil)
			}
			parts[p] = append(parts[p], op)
		}
		return parts
	}
	return m
}
