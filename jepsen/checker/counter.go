package checker

// Counter checks every Ok read of each counter object against Jepsen's
// bounds: the read must be at least the sum of adds that definitely applied
// before it (Ok, acknowledged before the read started) and at most the sum of
// adds that may have applied (Ok or Info, started before the read ended).
// For the final read of a quiescent run these are the sums of Ok adds and of
// Ok+Info adds. Below the bound is "lost", above it "duplicated". Negative
// deltas are handled by moving only the bound they can move.
func Counter(history []Op) Result {
	r := newReport()
	objects, idx := byObject(history)
	r.stats["objects"] = len(objects)
	for _, obj := range objects {
		var adds, reads []int
		deltas := map[int]int64{}
		for _, i := range idx[obj] {
			op := history[i]
			r.countOp(op)
			switch op.F {
			case "add":
				d, present, ok := toInt64(op.Value)
				if !ok || !present {
					r.add(KindMalformed, obj, []int{i}, "add: bad value %v", op.Value)
					continue
				}
				if op.Type != Fail {
					adds = append(adds, i)
					deltas[i] = d
				}
			case "read", "get":
				if op.Type == Ok {
					reads = append(reads, i)
				}
			default:
				r.add(KindMalformed, obj, []int{i}, "unknown counter op %q", op.F)
			}
		}
		for _, ri := range reads {
			rd := history[ri]
			v, present, ok := toInt64(rd.Result)
			if !ok {
				r.add(KindMalformed, obj, []int{ri}, "read: bad result %v", rd.Result)
				continue
			}
			if !present {
				v = 0
			}
			var lo, hi int64
			for _, ai := range adds {
				a, d := history[ai], deltas[ai]
				switch {
				case a.Type == Ok && a.End < rd.Start:
					lo, hi = lo+d, hi+d
				case a.Start < rd.End:
					lo, hi = lo+min(d, 0), hi+max(d, 0)
				}
			}
			r.stats["reads"]++
			switch {
			case v < lo:
				r.add(KindLost, obj, []int{ri}, "read %d below lower bound %d (upper %d)", v, lo, hi)
			case v > hi:
				r.add(KindDuplicated, obj, []int{ri}, "read %d above upper bound %d (lower %d)", v, hi, lo)
			}
		}
	}
	return r.result()
}
