package run

import (
	"fmt"
	"sort"
	"strings"

	"github.com/duro-io/duro/jepsen/nemesis"
)

// Case is one chaos test: a workload under a nemesis.
type Case struct {
	ID       string // CHAOS.md number, e.g. "T05"; empty for matrix cells
	Name     string
	Workload string
	Nemesis  string
	Nodes    int // 0: the run's --nodes
	// Shard is the shard whose leader the nemesis targets and whose objects
	// the workload uses; -1 means random shards and objects everywhere.
	Shard int
	// Pin: "" (SDK with retries), "leader" (raw calls to the leader of Shard
	// at each fault, half the workers), "all" (every worker raw to a fixed
	// node).
	Pin string
	// Raw makes the SDK single-attempt (WithoutRetries).
	Raw bool
	// LeaderPerTerm checks that no (shard, term) had two leaders; it is
	// cheap, so every run does it, but these cases require it.
	// MinorityOK checks that no pinned call succeeded on the minority side
	// of a halves partition (T21).
	MinorityOK bool
	// FaultMin/FaultMax and HealMin/HealMax override the nemesis schedule
	// (seconds).
	FaultMin, FaultMax, HealMin, HealMax float64
	// Cycles caps the number of faults (kill-all); 0: as time allows.
	Cycles int
}

// Cases are the CHAOS.md cases, by number.
var Cases = []Case{
	{ID: "T01", Name: "register-partition-halves", Workload: "register", Nemesis: "partition-halves", Shard: -1},
	{ID: "T02", Name: "register-majorities-ring", Workload: "register", Nemesis: "majorities-ring", Nodes: 5, Shard: -1},
	{ID: "T04", Name: "isolated-leader-stale-read", Workload: "register", Nemesis: "isolate-leader", Shard: 0, Pin: "leader"},
	{ID: "T05", Name: "paused-leader-resume", Workload: "register+memcounter", Nemesis: "pause-leader", Shard: 0, Pin: "leader",
		FaultMin: 0.6, FaultMax: 3, HealMin: 3, HealMax: 6},
	{ID: "T07", Name: "counter-retries-exactly-once", Workload: "memcounter", Nemesis: "kill+partition-halves+pause", Shard: -1},
	{ID: "T08", Name: "ambiguous-errors-classified", Workload: "register", Nemesis: "isolate-leader+kill-leader", Shard: -1, Raw: true},
	{ID: "T09", Name: "set-crash-all", Workload: "set", Nemesis: "kill-all", Shard: -1, Cycles: 4,
		FaultMin: 1, FaultMax: 3, HealMin: 5, HealMax: 8},
	{ID: "T19", Name: "client-partition-and-stale-routing", Workload: "register", Nemesis: "client-cut+isolate-leader+kill-leader", Shard: -1},
	{ID: "T21", Name: "minority-side-fail-fast", Workload: "register", Nemesis: "partition-halves", Shard: -1, Pin: "all", MinorityOK: true},
}

// Smoke is the subset make jepsen-smoke runs: partition and kill, register
// and counter.
var Smoke = []string{"T01", "counter-kill"}

// Matrix returns every workload × nemesis cell for a cluster of n nodes.
func Matrix(n int) []Case {
	var out []Case
	for _, w := range Workloads {
		for _, nm := range nemesis.Names {
			if nm == "none" || (n < 5 && (nm == "majorities-ring" || nm == "bridge")) {
				continue
			}
			c := Case{Name: w + "-" + nm, Workload: w, Nemesis: nm, Shard: -1}
			if nm == "kill-all" {
				c.FaultMin, c.FaultMax, c.HealMin, c.HealMax = 1, 3, 5, 8
			}
			out = append(out, c)
		}
	}
	return out
}

// Lookup finds a case by T-number, by CHAOS name, or as "<workload>-<nemesis>".
func Lookup(name string, nodes int) (Case, error) {
	for _, c := range Cases {
		if strings.EqualFold(c.ID, name) || c.Name == name {
			return c, nil
		}
	}
	for _, c := range Matrix(5) {
		if c.Name == name {
			return c, nil
		}
	}
	var known []string
	for _, c := range Cases {
		known = append(known, c.ID)
	}
	sort.Strings(known)
	return Case{}, fmt.Errorf("unknown case %q (known: %s, or <workload>-<nemesis>)", name, strings.Join(known, ", "))
}
