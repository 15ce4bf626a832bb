package fsm

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/duro-io/duro"
	"github.com/hashicorp/raft"
)

// entryGen generates a plausible log: mostly calls that apply, with stale
// epochs, wrong base versions, retries, acknowledgements, leadership changes,
// non-command entries and log time that runs past the session TTL.
type entryGen struct {
	r       *rand.Rand
	objs    []duro.ID
	clients []ClientID
	keys    []string
	nextSeq map[ClientID]uint64
	used    []sessRef
	tm      int64
	idx     uint64
}

type sessRef struct {
	c   ClientID
	seq uint64
}

func newEntryGen(r *rand.Rand) *entryGen {
	g := &entryGen{
		r:       r,
		objs:    append(neighbourIDs(3), testID(0x33)),
		clients: []ClientID{{}, {1}, {2}, {2, 1}, {0xff}},
		keys:    []string{"", "a", "ab", "b", "\xff"},
		nextSeq: map[ClientID]uint64{},
		tm:      t0,
	}
	return g
}

func (g *entryGen) bytes(max int) []byte {
	b := make([]byte, g.r.Intn(max+1))
	g.r.Read(b)
	return b
}

// chunk returns the next n entries, predicting the epoch and the object
// versions from m's state so that most calls apply.
func (g *entryGen) chunk(m *Machine, n int) []*raft.Log {
	epoch := m.Epoch()
	pending := map[duro.ID]uint64{}
	logs := make([]*raft.Log, 0, n)
	for i := 0; i < n; i++ {
		g.idx++
		g.tm += g.r.Int63n(int64(20 * time.Second))
		switch p := g.r.Intn(100); {
		case p < 3:
			logs = append(logs, activateLog(g.idx, g.tm))
			epoch = g.idx
			continue
		case p < 5:
			logs = append(logs, typedLog(g.idx, raft.LogNoop, g.bytes(4)))
			continue
		case p < 6:
			logs = append(logs, typedLog(g.idx, raft.LogConfiguration, g.bytes(4)))
			continue
		}
		c := &Call{Epoch: epoch, Time: g.tm, Namespace: "ns", Reply: g.bytes(6)}
		c.Object = g.objs[g.r.Intn(len(g.objs))]
		c.BaseVersion = m.Version(c.Object) + pending[c.Object]
		valid := true
		if g.r.Intn(12) == 0 {
			if c.BaseVersion > 0 && g.r.Intn(2) == 0 {
				c.BaseVersion--
			} else {
				c.BaseVersion++
			}
			valid = false
		}
		if g.r.Intn(20) == 0 && epoch > 0 {
			c.Epoch = uint64(g.r.Int63n(int64(epoch)))
			valid = false
		}
		c.Client = g.clients[g.r.Intn(len(g.clients))]
		if c.Client != (ClientID{}) && len(g.used) > 0 && g.r.Intn(8) == 0 {
			u := g.used[g.r.Intn(len(g.used))]
			if g.r.Intn(2) == 0 { // a prompt retry, most likely still in the table
				u = g.used[len(g.used)-1-g.r.Intn(min(4, len(g.used)))]
			}
			c.Client, c.Seq = u.c, u.seq
			valid = false
		} else {
			g.nextSeq[c.Client]++
			c.Seq = g.nextSeq[c.Client]
			if c.Client != (ClientID{}) {
				g.used = append(g.used, sessRef{c.Client, c.Seq})
			}
		}
		if g.r.Intn(4) == 0 {
			c.AckedBelow = uint64(g.r.Int63n(int64(c.Seq) + 1))
		}
		c.ClearAll = g.r.Intn(20) == 0
		for j := g.r.Intn(5); j > 0; j-- {
			k := g.keys[g.r.Intn(len(g.keys))]
			if g.r.Intn(3) == 0 {
				c.Ops = append(c.Ops, del(k))
			} else {
				c.Ops = append(c.Ops, Op{Kind: OpPut, Key: []byte(k), Value: g.bytes(8)})
			}
		}
		if valid {
			pending[c.Object]++
		}
		logs = append(logs, callLog(g.idx, c))
	}
	return logs
}

func sameResult(a, b *Result) bool {
	return a.Status == b.Status && bytes.Equal(a.Reply, b.Reply) && a.Reason == b.Reason && a.Index == b.Index && a.Epoch == b.Epoch
}

func TestDeterminism(t *testing.T) {
	r := testRand(t)
	opts := Options{SessionTTL: time.Minute}
	a := newFixture(t, opts).m
	b := newFixture(t, opts).m
	g := newEntryGen(r)

	var logs []*raft.Log
	var resA []*Result
	for len(logs) < 1500 {
		chunk := g.chunk(a, 1+r.Intn(10))
		logs = append(logs, chunk...)
		resA = append(resA, apply(t, a, chunk...)...)
	}
	// b sees the same log cut into different batches, some of them sharing
	// a transaction as on a follower.
	var resB []*Result
	for i := 0; i < len(logs); {
		n := 1 + r.Intn(40)
		if i+n > len(logs) {
			n = len(logs) - i
		}
		if r.Intn(2) == 0 {
			resB = append(resB, applyDeferred(t, b, logs[i:i+n]...)...)
		} else {
			resB = append(resB, apply(t, b, logs[i:i+n]...)...)
		}
		i += n
	}
	counts := map[Status]int{}
	for i := range resA {
		counts[resA[i].Status]++
		if !sameResult(resA[i], resB[i]) {
			t.Fatalf("entry %d: results differ: %+v vs %+v", logs[i].Index, resA[i], resB[i])
		}
	}
	t.Logf("results: %d applied, %d duplicate, %d rejected, %d skipped", counts[Applied], counts[Duplicate], counts[Rejected], counts[Skipped])
	for _, s := range []Status{Applied, Duplicate, Rejected, Skipped} {
		if counts[s] == 0 {
			t.Errorf("no entry had status %v: the generator is too narrow", s)
		}
	}
	ha, hb := hashOf(t, a), hashOf(t, b)
	if ha != hb {
		t.Fatalf("replicas diverged: %d/%x vs %d/%x", ha.applied, ha.sum[:8], hb.applied, hb.sum[:8])
	}
	if ha.applied != uint64(len(logs)) {
		t.Fatalf("Applied = %d, want %d", ha.applied, len(logs))
	}
	for _, id := range g.objs {
		if ca, cb := contents(t, a, id), contents(t, b, id); fmt.Sprint(ca) != fmt.Sprint(cb) {
			t.Fatalf("object %x differs", id[30:])
		}
	}
}

func TestAgainstModel(t *testing.T) {
	r := testRand(t)
	m := newMachine(t)
	objs := append(neighbourIDs(3), testID(0x21))
	keys := []string{"", "a", "ab", "b", "b\x00", "\xff"}
	model := map[duro.ID]map[string]string{}
	versions := map[duro.ID]uint64{}
	for _, id := range objs {
		model[id] = map[string]string{}
	}
	idx := uint64(0)
	for batch := 0; batch < 60; batch++ {
		var logs []*raft.Log
		var want []Status
		for n := 1 + r.Intn(12); n > 0; n-- {
			idx++
			id := objs[r.Intn(len(objs))]
			c := &Call{Object: id, BaseVersion: versions[id], Client: ClientID{byte(r.Intn(3))}, Seq: idx}
			if r.Intn(10) == 0 {
				c.BaseVersion++ // stale speculation: rejected
				logs = append(logs, callLog(idx, c))
				want = append(want, Rejected)
				continue
			}
			if r.Intn(12) == 0 {
				c.ClearAll = true
				model[id] = map[string]string{}
			}
			for j := r.Intn(6); j > 0; j-- {
				k := keys[r.Intn(len(keys))]
				switch r.Intn(3) {
				case 0:
					c.Ops = append(c.Ops, del(k))
					delete(model[id], k)
				default:
					v := fmt.Sprint(r.Intn(100))
					if r.Intn(10) == 0 {
						v = ""
					}
					c.Ops = append(c.Ops, put(k, v))
					model[id][k] = v
				}
			}
			versions[id]++
			logs = append(logs, callLog(idx, c))
			want = append(want, Applied)
		}
		for i, res := range apply(t, m, logs...) {
			wantStatus(t, res, want[i])
		}
		for _, id := range objs {
			if got := contents(t, m, id); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", model[id]) {
				t.Fatalf("batch %d, object %x: %q, model %q", batch, id[30:], got, model[id])
			}
			if v := m.Version(id); v != versions[id] {
				t.Fatalf("batch %d, object %x: version %d, model %d", batch, id[30:], v, versions[id])
			}
			for _, k := range keys {
				v, ok := getKey(t, m, id, k)
				if mv, mok := model[id][k]; ok != mok || v != mv {
					t.Fatalf("Get(%x, %q) = %q %v, model %q %v", id[30:], k, v, ok, mv, mok)
				}
			}
			// One random range, in a random direction.
			lo, hi := keys[r.Intn(len(keys))], keys[r.Intn(len(keys))]
			rev := r.Intn(2) == 0
			var got []string
			if err := m.Scan(id, []byte(lo), []byte(hi), rev, func(k, v []byte) bool { got = append(got, string(k)); return true }); err != nil {
				t.Fatal(err)
			}
			if w := scanRange(model[id], &lo, &hi, rev); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", w) {
				t.Fatalf("Scan(%q, %q, %v) = %q, model %q", lo, hi, rev, got, w)
			}
		}
	}
}
