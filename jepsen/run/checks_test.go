package run

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/duro-io/duro/jepsen/checker"
	"github.com/duro-io/duro/jepsen/cluster"
)

func op(f string, typ checker.Type, s, e int) Rec {
	return Rec{Op: checker.Op{F: f, Type: typ, Start: time.Duration(s) * time.Second, End: time.Duration(e) * time.Second}}
}

func TestFailedVisible(t *testing.T) {
	put := op("put", checker.Fail, 1, 2)
	put.Value, put.Object = int64(7), "r0/k0"
	get := op("get", checker.Ok, 3, 4)
	get.Result, get.Object = int64(7), "r0/k0"
	if res := failedVisible([]Rec{put, get}); len(res.Anomalies) != 1 || res.Anomalies[0].Kind != "failed-but-visible" {
		t.Fatalf("failed write read back not caught: %+v", res)
	}
	get.Result = int64(8)
	if res := failedVisible([]Rec{put, get}); len(res.Anomalies) != 0 {
		t.Fatalf("false alarm: %+v", res)
	}
}

func TestCheckMinority(t *testing.T) {
	faults := []Fault{{Desc: "minority [n2] | majority [n1,n3]", Start: 10 * time.Second, End: 20 * time.Second,
		Minority: parseMinority("minority [n2] | majority [n1,n3]")}}
	okOnMinority := op("put", checker.Ok, 12, 13)
	okOnMinority.Node = "n2"
	failOnMinority := op("put", checker.Fail, 14, 15)
	failOnMinority.Node = "n2"
	okOnMajority := op("put", checker.Ok, 12, 13)
	okOnMajority.Node = "n1"
	inGrace := op("get", checker.Ok, 10, 11)
	inGrace.Node = "n2"
	res := checkMinority([]Rec{okOnMinority, failOnMinority, okOnMajority, inGrace}, faults)
	if len(res.Anomalies) != 1 || res.Anomalies[0].Ops[0] != 0 {
		t.Fatalf("want exactly the ok call on the minority node: %+v", res)
	}
}

func TestMemcounterOwnership(t *testing.T) {
	w := &memW{objs: []string{"m0"}}
	hit := func(tok string, mem, stored int64, s, e int) Rec {
		r := op("hit", checker.Ok, s, e)
		r.Object, r.Value, r.Extra = "m0", tok, map[string]int64{"mem": mem, "stored": stored}
		return r
	}
	final := func(toks []string, mem, stored int64) Rec {
		r := op("read", checker.Ok, 10, 11)
		r.Object, r.Final, r.Result, r.Extra = "m0", true, toks, map[string]int64{"mem": mem, "stored": stored}
		return r
	}
	good := []Rec{hit("a", 1, 1, 0, 1), hit("b", 2, 2, 2, 3), final([]string{"a", "b"}, 2, 2)}
	for k, v := range w.check(good, t.TempDir()) {
		if !v.Valid && len(v.Anomalies) > 0 {
			t.Fatalf("good history: %s: %+v", k, v.Anomalies)
		}
	}
	cases := map[string][]Rec{
		// A deposed instance answered from stale memory.
		"ownership": {hit("a", 1, 1, 0, 1), hit("b", 1, 2, 2, 3), final([]string{"a", "b"}, 2, 2)},
		// A retried hit applied twice.
		"tokens": {hit("a", 1, 1, 0, 1), final([]string{"a", "a"}, 2, 2)},
		// An acknowledged hit lost.
		"counter": {hit("a", 1, 1, 0, 1), hit("b", 2, 2, 2, 3), final([]string{"a"}, 1, 1)},
	}
	for name, h := range cases {
		res := w.check(h, t.TempDir())
		if len(res[name].Anomalies) == 0 {
			t.Errorf("%s: not caught: %+v", name, res)
		}
	}
}

func TestCheckLeaders(t *testing.T) {
	dir := t.TempDir()
	write := func(n *cluster.Node, lines string) {
		os.MkdirAll(n.Dir, 0o755)
		if err := os.WriteFile(n.LogPath(), []byte(lines), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(id string) *cluster.Node { return &cluster.Node{ID: id, Dir: filepath.Join(dir, id)} }
	cl := &cluster.Cluster{Nodes: []*cluster.Node{mk("n1"), mk("n2")}}
	write(cl.Nodes[0], `{"level":"INFO","msg":"[INFO]  raft: election won: term=5 tally=2","node":"n1","shard":3}
{"level":"INFO","msg":"shard active","node":"n1","shard":3,"term":5,"epoch":4}
`)
	write(cl.Nodes[1], `{"level":"INFO","msg":"[INFO]  raft: election won: term=6 tally=2","node":"n2","shard":3}
{"level":"INFO","msg":"shard active","node":"n2","shard":3,"term":6,"epoch":5}
{"level":"INFO","msg":"[INFO]  raft: election won: term=5 tally=2","node":"n2","shard":2}
`)
	l, e := checkLeaders(cl)
	if len(l.Anomalies) != 0 || len(e.Anomalies) != 0 || l.Stats["elections"] != 3 {
		t.Fatalf("good logs: %+v %+v", l, e)
	}
	write(cl.Nodes[1], `{"level":"INFO","msg":"[INFO]  raft: election won: term=5 tally=2","node":"n2","shard":3}
{"level":"INFO","msg":"shard active","node":"n2","shard":3,"term":4,"epoch":5}
panic: boom
`)
	l, e = checkLeaders(cl)
	if len(l.Anomalies) != 1 || len(e.Anomalies) != 1 {
		t.Fatalf("two leaders in shard 3 term 5 and an epoch from an older term not caught: %+v %+v", l, e)
	}
	if g := checkLogs(cl); len(g.Anomalies) != 1 {
		t.Fatalf("panic line not caught: %+v", g)
	}
}
