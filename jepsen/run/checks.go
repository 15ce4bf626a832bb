package run

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/duro-io/duro/jepsen/checker"
	"github.com/duro-io/duro/jepsen/cluster"
)

// badLog are the log patterns of G-4 (Jepsen's log-file-pattern).
var badLog = []string{"panic:", "fatal error:", "DATA RACE", "invariant"}

// checkLogs (G-4) scans every node's log.
func checkLogs(cl *cluster.Cluster) checker.Result {
	res := checker.Result{Stats: map[string]int{}}
	for _, n := range cl.Nodes {
		err := scanLog(n.LogPath(), func(line string) {
			res.Stats["lines"]++
			for _, p := range badLog {
				if strings.Contains(line, p) {
					res.Anomalies = append(res.Anomalies, checker.Anomaly{Kind: "log", Object: n.ID, Detail: truncate(line, 300)})
				}
			}
		})
		if err != nil {
			res.Anomalies = append(res.Anomalies, checker.Anomaly{Kind: "log", Object: n.ID, Detail: err.Error()})
		}
	}
	return res
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func scanLog(path string, fn func(string)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		fn(sc.Text())
	}
	return sc.Err()
}

var electionWon = regexp.MustCompile(`election won: term=(\d+)`)

type logLine struct {
	Msg   string `json:"msg"`
	Node  string `json:"node"`
	Shard *int   `json:"shard"`
	Term  uint64 `json:"term"`
	Epoch uint64 `json:"epoch"`
}

// checkLeaders reads every node's log for Raft's "election won" lines
// (shard, node, term) and the object host's "shard active" lines (shard,
// node, term, activation epoch). Leader-per-term: no (shard, term) has two
// distinct winners (CHAOS T02). Epochs: within a shard, each activation
// epoch belongs to one (node, term), and epochs grow with terms (T05).
func checkLeaders(cl *cluster.Cluster) (leaders, epochs checker.Result) {
	leaders = checker.Result{Stats: map[string]int{}}
	epochs = checker.Result{Stats: map[string]int{}}
	type key struct {
		shard int
		term  uint64
	}
	won := map[key]map[string]bool{}
	type act struct {
		node        string
		term, epoch uint64
	}
	acts := map[int][]act{}
	for _, n := range cl.Nodes {
		_ = scanLog(n.LogPath(), func(line string) {
			if !strings.HasPrefix(line, "{") {
				return
			}
			var l logLine
			if json.Unmarshal([]byte(line), &l) != nil || l.Shard == nil {
				return
			}
			if m := electionWon.FindStringSubmatch(l.Msg); m != nil {
				var term uint64
				fmt.Sscan(m[1], &term)
				k := key{*l.Shard, term}
				if won[k] == nil {
					won[k] = map[string]bool{}
				}
				won[k][n.ID] = true
				leaders.Stats["elections"]++
			}
			if l.Msg == "shard active" {
				acts[*l.Shard] = append(acts[*l.Shard], act{n.ID, l.Term, l.Epoch})
				epochs.Stats["activations"]++
			}
		})
	}
	for k, nodes := range won {
		if len(nodes) > 1 {
			var ns []string
			for n := range nodes {
				ns = append(ns, n)
			}
			sort.Strings(ns)
			leaders.Anomalies = append(leaders.Anomalies, checker.Anomaly{Kind: "two-leaders",
				Detail: fmt.Sprintf("shard %d term %d: leaders %s", k.shard, k.term, strings.Join(ns, ","))})
		}
	}
	for s, as := range acts {
		sort.Slice(as, func(i, j int) bool { return as[i].epoch < as[j].epoch })
		for i := 1; i < len(as); i++ {
			a, b := as[i-1], as[i]
			switch {
			case a.epoch == b.epoch:
				epochs.Anomalies = append(epochs.Anomalies, checker.Anomaly{Kind: "shared-epoch",
					Detail: fmt.Sprintf("shard %d epoch %d activated by %s (term %d) and %s (term %d)", s, a.epoch, a.node, a.term, b.node, b.term)})
			case b.term <= a.term:
				epochs.Anomalies = append(epochs.Anomalies, checker.Anomaly{Kind: "epoch-order",
					Detail: fmt.Sprintf("shard %d epoch %d (%s, term %d) follows epoch %d (%s, term %d)", s, b.epoch, b.node, b.term, a.epoch, a.node, a.term)})
			}
		}
	}
	return leaders, epochs
}
