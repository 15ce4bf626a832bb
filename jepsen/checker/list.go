package checker

import "time"

// ListAppend checks append-only lists of unique strings. Observations are Ok
// reads and the []string results of Ok appends (if the store returns the list
// after appending). The final list is the Ok read with the latest End.
//
//   - "duplicate": a value appears twice in one observation.
//   - "phantom": an observed value was never appended; "aborted-read": it
//     was appended by an op that definitely failed.
//   - "lost": an Ok append acknowledged before the final read started is
//     missing from the final list.
//   - "order": an observation is not a prefix of the final list (or the final
//     list is shorter than an observation that finished before it started).
//   - "realtime": append A was acknowledged before append B started, both are
//     in the final list, but B precedes A.
func ListAppend(history []Op) Result {
	r := newReport()
	objects, idx := byObject(history)
	r.stats["objects"] = len(objects)
	for _, obj := range objects {
		checkList(r, history, obj, idx[obj])
	}
	return r.result()
}

func checkList(r *report, history []Op, obj string, ids []int) {
	attempted := map[string]int{}
	failed := map[string]int{}
	var appends, obs, reads []int
	for _, i := range ids {
		op := history[i]
		r.countOp(op)
		switch op.F {
		case "append":
			v, ok := op.Value.(string)
			if !ok {
				r.add(KindMalformed, obj, []int{i}, "append: value %v is not a string", op.Value)
				continue
			}
			if op.Type == Fail {
				failed[v] = i
				continue
			}
			attempted[v] = i
			appends = append(appends, i)
			if _, ok := op.Result.([]string); ok && op.Type == Ok {
				obs = append(obs, i)
			}
		case "read":
			if op.Type != Ok {
				continue
			}
			if _, ok := op.Result.([]string); !ok {
				r.add(KindMalformed, obj, []int{i}, "read: result %v is not a []string", op.Result)
				continue
			}
			obs = append(obs, i)
			reads = append(reads, i)
		default:
			r.add(KindMalformed, obj, []int{i}, "unknown list op %q", op.F)
		}
	}

	for _, oi := range obs {
		vals := history[oi].Result.([]string)
		seen := map[string]bool{}
		for _, v := range vals {
			if seen[v] {
				r.add(KindDuplicate, obj, []int{oi}, "value %q appears twice", v)
			}
			seen[v] = true
		}
		checkForeign(r, obj, oi, vals, attempted, failed)
	}

	fi := lastOkRead(history, reads)
	if fi < 0 {
		r.stats["unread-objects"]++
		return
	}
	final := history[fi].Result.([]string)
	pos := map[string]int{}
	for p, v := range final {
		if _, ok := pos[v]; !ok {
			pos[v] = p
		}
	}

	for _, oi := range obs {
		if oi == fi {
			continue
		}
		vals := history[oi].Result.([]string)
		switch {
		case isPrefix(vals, final):
		case isPrefix(final, vals) && history[oi].End >= history[fi].Start:
			// Concurrent with the final read: it may legitimately see more.
		default:
			r.add(KindOrder, obj, []int{oi, fi}, "observation %q is incompatible with final list %q", vals, final)
		}
	}

	for _, ai := range appends {
		a := history[ai]
		v := a.Value.(string)
		if _, ok := pos[v]; !ok && a.Type == Ok && a.End < history[fi].Start {
			r.add(KindLost, obj, []int{ai, fi}, "acknowledged append %q missing from final list", v)
		}
	}

	// For each position p, the Ok append with the earliest End among values
	// at positions after p; B at p is a violation if that End precedes B's
	// Start.
	n := len(final)
	type best struct {
		end time.Duration
		op  int
	}
	suffix := make([]best, n+1)
	suffix[n] = best{op: -1}
	for p := n - 1; p >= 0; p-- {
		suffix[p] = suffix[p+1]
		ai, ok := attempted[final[p]]
		if !ok || pos[final[p]] != p || history[ai].Type != Ok {
			continue
		}
		if suffix[p].op < 0 || history[ai].End < suffix[p].end {
			suffix[p] = best{end: history[ai].End, op: ai}
		}
	}
	for p, v := range final {
		bi, ok := attempted[v]
		if !ok || pos[v] != p {
			continue
		}
		if s := suffix[p+1]; s.op >= 0 && s.end < history[bi].Start {
			r.add(KindRealtime, obj, []int{s.op, bi, fi},
				"append %q acknowledged before append %q started, but follows it", history[s.op].Value, v)
		}
	}
}

func isPrefix(a, b []string) bool {
	if len(a) > len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
