package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/duro-io/duro/client/clienttest"
	"github.com/duro-io/duro/cmd/duroctl/etcdbench"
	"github.com/duro-io/duro/cmd/duroctl/internal/loadgen"
)

func TestMain(m *testing.M) { os.Exit(clienttest.Main(m)) }

// runBench runs `duroctl bench <args>` against local clusters of freshly
// built durod processes and decodes its --json output into out.
func runBench(t *testing.T, out any, args ...string) string {
	t.Helper()
	t.Setenv("DURO_ENDPOINTS", "")
	durod, _ := clienttest.Binaries(t)
	jsonPath := filepath.Join(t.TempDir(), "out.json")
	args = append(append([]string{"bench"}, args...), "--durod", durod, "--json", jsonPath)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("duroctl %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("--json output %s: %v", b, err)
	}
	return stdout.String()
}

func checkResults(t *testing.T, who string, got []loadgen.Result, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d results, want %d: %+v", who, len(got), len(want), got)
	}
	for i, r := range got {
		callers, objects := loadgen.Shape(want[i], 4, 10)
		if r.Workload != want[i] || r.Callers != callers || r.Objects != objects || r.Ops == 0 || r.Errors != 0 || r.P50ms <= 0 || r.P99ms < r.P50ms || r.P999ms < r.P99ms {
			t.Errorf("%s: result %d: %+v (want workload %s with %d callers on %d objects, calls and no errors)", who, i, r, want[i], callers, objects)
		}
	}
}

// The bench subcommands are measured by hand (make bench, bench-compare);
// these runs only check that each works end to end on a tiny scale.
func TestBenchCommands(t *testing.T) {
	t.Run("bench", func(t *testing.T) {
		var res []loadgen.Result
		prof := filepath.Join(t.TempDir(), "cpu.pprof")
		runBench(t, &res, "--workloads", "put,read", "--duration", "300ms", "--callers", "4", "--objects", "10", "--cpuprofile", prof)
		checkResults(t, "duro", res, []string{"put", "read"})
		// A pprof profile is a gzipped protobuf.
		if b, err := os.ReadFile(prof); err != nil || len(b) < 100 || !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
			t.Errorf("--cpuprofile %s: %d bytes, %v; want a gzipped profile", prof, len(b), err)
		}
	})
	t.Run("failover", func(t *testing.T) {
		var res failoverResult
		runBench(t, &res, "failover", "--trials", "1", "--settle", "300ms", "--callers", "8", "--objects", "20")
		if len(res.Trials) != 1 || !res.Trials[0].Recovered || res.Trials[0].FailoverMs <= 0 || len(res.Trials[0].Shards) == 0 {
			t.Errorf("trials: %+v", res.Trials)
		}
		if res.Acknowledged == 0 || res.Lost != 0 || res.Extra != 0 || res.MaxMs != res.Trials[0].FailoverMs {
			t.Errorf("result: %+v", res)
		}
	})
	t.Run("scale", func(t *testing.T) {
		var res scaleResult
		runBench(t, &res, "scale", "--objects", "200", "--active", "100", "--sample", "20", "--callers", "8")
		if res.Objects != 200 || res.DiskBytes <= 0 || res.DiskBytesPerObject*200 != float64(res.DiskBytes) || len(res.Nodes) != 3 {
			t.Errorf("disk: %+v", res)
		}
		// At most the objects the run touched after the restart are active:
		// all 100 unless a shard changed leader meanwhile (which resets its
		// objects; a loaded machine can cause that).
		if res.Active <= 0 || res.Active > 100 || res.ColdP50ms <= 0 || res.WarmP50ms <= 0 || res.ColdP99ms < res.ColdP50ms {
			t.Errorf("activation: %+v", res)
		}
		for _, n := range res.Nodes {
			if n.RSSBefore <= 0 || n.RSSAfter <= 0 || n.HeapBefore <= 0 {
				t.Errorf("memory of %s not read: %+v", n.Node, n)
			}
		}
	})
	t.Run("compare", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		var log bytes.Buffer
		if _, err := etcdbench.FindEtcd(ctx, "", true, &log); err != nil {
			t.Skipf("etcd-server is not available, so bench compare is not tested: %v\n%s", err, log.String())
		}
		var res compareResult
		out := runBench(t, &res, "compare", "--workloads", "put,hot,seq,read", "--duration", "300ms", "--callers", "4", "--objects", "10", "--shards", "2", "--rounds", "2")
		ws := []string{"put", "hot", "seq", "read"}
		checkResults(t, "duro", res.Duro, ws)
		checkResults(t, "etcd", res.Etcd, ws)
		if len(res.Ratio) != len(ws) {
			t.Fatalf("ratios: %+v", res.Ratio)
		}
		for i, q := range res.Ratio {
			want := res.Duro[i].OpsPerS / res.Etcd[i].OpsPerS
			if q.Workload != ws[i] || q.OpsPerS != want {
				t.Errorf("ratio %d: %+v, want ops/s ratio %v", i, q, want)
			}
		}
		if !bytes.Contains([]byte(out), []byte("duro/etcd")) {
			t.Errorf("no ratio rows in the table:\n%s", out)
		}
		// Two rounds, the first of them the top-level figures, and their
		// medians printed.
		if len(res.Rounds) != 2 || res.Rounds[0].Duro[0] != res.Duro[0] || len(res.MedianRatio) != len(ws) {
			t.Fatalf("--rounds 2: %d rounds, median %+v", len(res.Rounds), res.MedianRatio)
		}
		for i, q := range res.MedianRatio {
			if want := (res.Rounds[0].Ratio[i].OpsPerS + res.Rounds[1].Ratio[i].OpsPerS) / 2; q.OpsPerS != want {
				t.Errorf("median ops/s ratio of %s: %v, want %v", q.Workload, q.OpsPerS, want)
			}
		}
		if !bytes.Contains([]byte(out), []byte("round 2 of 2")) || !bytes.Contains([]byte(out), []byte("median of 2 rounds")) {
			t.Errorf("rounds not shown:\n%s", out)
		}
		// The local cluster ran the shard count asked for, and says so.
		if res.DuroShards != 2 || !bytes.Contains([]byte(out), []byte("duro ran 2 shards")) {
			t.Errorf("--shards 2: duro_shards %d, table:\n%s", res.DuroShards, out)
		}
	})
}

// A bench that fails still leaves a whole profile behind: the failed run is
// the one most worth reading.
func TestBenchProfileOfFailedRun(t *testing.T) {
	t.Setenv("DURO_ENDPOINTS", "")
	prof := filepath.Join(t.TempDir(), "cpu.pprof")
	missing := filepath.Join(t.TempDir(), "no-such-durod")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"bench", "--durod", missing, "--duration", "100ms", "--cpuprofile", prof}, &stdout, &stderr)
	if err == nil {
		t.Fatal("bench with a missing durod succeeded")
	}
	f, err := os.Open(prof)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("--cpuprofile of a failed run: %v", err)
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		t.Fatalf("--cpuprofile of a failed run is cut short: %v", err)
	}
}

func TestMedianRatios(t *testing.T) {
	round := func(put, p50 float64) compareRound {
		return compareRound{Ratio: []ratio{{Workload: "put", OpsPerS: put, P50: p50}}}
	}
	got := medianRatios([]compareRound{round(1.5, 0.7), round(1.2, 0.9), round(1.9, 0.5)})
	if len(got) != 1 || got[0].Workload != "put" || got[0].OpsPerS != 1.5 || got[0].P50 != 0.7 {
		t.Errorf("median of three: %+v", got)
	}
	got = medianRatios([]compareRound{round(1.0, 0.5), round(2.0, 1.0)})
	if got[0].OpsPerS != 1.5 || got[0].P50 != 0.75 {
		t.Errorf("median of two: %+v", got)
	}
}
