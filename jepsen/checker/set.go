package checker

// Set checks grow-only sets of unique strings. "lost": an Ok add acknowledged
// before the final read started is missing from it. "phantom": a read returns
// a value no add attempted. "aborted-read": a read returns the value of an add
// that definitely failed.
func Set(history []Op) Result {
	r := newReport()
	objects, idx := byObject(history)
	r.stats["objects"] = len(objects)
	for _, obj := range objects {
		attempted := map[string]int{} // value -> add op index
		failed := map[string]int{}
		var adds, reads []int
		for _, i := range idx[obj] {
			op := history[i]
			r.countOp(op)
			switch op.F {
			case "add":
				v, ok := op.Value.(string)
				if !ok {
					r.add(KindMalformed, obj, []int{i}, "add: value %v is not a string", op.Value)
					continue
				}
				if op.Type == Fail {
					failed[v] = i
					continue
				}
				attempted[v] = i
				adds = append(adds, i)
			case "read":
				if op.Type != Ok {
					continue
				}
				if _, ok := op.Result.([]string); !ok {
					r.add(KindMalformed, obj, []int{i}, "read: result %v is not a []string", op.Result)
					continue
				}
				reads = append(reads, i)
			default:
				r.add(KindMalformed, obj, []int{i}, "unknown set op %q", op.F)
			}
		}
		for _, ri := range reads {
			checkForeign(r, obj, ri, history[ri].Result.([]string), attempted, failed)
		}
		final := lastOkRead(history, reads)
		if final < 0 {
			r.stats["unread-objects"]++
			continue
		}
		seen := toSet(history[final].Result.([]string))
		for _, ai := range adds {
			a := history[ai]
			v := a.Value.(string)
			if a.Type == Ok && a.End < history[final].Start && !seen[v] {
				r.add(KindLost, obj, []int{ai, final}, "acknowledged add %q missing from final read", v)
			}
		}
	}
	return r.result()
}

// checkForeign reports read values that were never attempted or whose write
// definitely failed.
func checkForeign(r *report, obj string, ri int, vals []string, attempted, failed map[string]int) {
	for _, v := range vals {
		if _, ok := attempted[v]; ok {
			continue
		}
		if fi, ok := failed[v]; ok {
			r.add(KindAbortedRead, obj, []int{fi, ri}, "read returned %q whose write failed", v)
			continue
		}
		r.add(KindPhantom, obj, []int{ri}, "read returned %q, never written", v)
	}
}

func toSet(vals []string) map[string]bool {
	s := make(map[string]bool, len(vals))
	for _, v := range vals {
		s[v] = true
	}
	return s
}
