package loadgen

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var v []time.Duration
	for i := 1; i <= 1000; i++ {
		v = append(v, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {0.999, 999 * time.Millisecond}, {1, time.Second}} {
		if got := Percentile(v, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := Percentile(v[:1], 0.999); got != time.Millisecond {
		t.Errorf("one value: %v", got)
	}
	if got := Percentile(nil, 0.5); got != 0 {
		t.Errorf("no values: %v", got)
	}
}

func TestParseWorkloads(t *testing.T) {
	got, err := ParseWorkloads(" put, read ,")
	if err != nil || len(got) != 2 || got[0] != "put" || got[1] != "read" {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", ",", "put,nope"} {
		if _, err := ParseWorkloads(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Run counts failed calls as errors, not as timed operations.
func TestRunCountsErrors(t *testing.T) {
	var n atomic.Int64
	r := Run(context.Background(), "x", 2, Config{Duration: 200 * time.Millisecond}, func(context.Context, *rand.Rand) error {
		if n.Add(1)%2 == 0 {
			return errors.New("no")
		}
		return nil
	})
	if r.Ops == 0 || r.Errors == 0 || r.Ops+r.Errors != n.Load() || r.Callers != 2 {
		t.Errorf("%+v after %d calls", r, n.Load())
	}
}

func TestParallelStopsAtFirstError(t *testing.T) {
	boom := errors.New("boom")
	var calls atomic.Int64
	err := Parallel(context.Background(), 1000, 4, "", nil, func(ctx context.Context, i int) error {
		calls.Add(1)
		if i == 10 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || calls.Load() == 1000 {
		t.Errorf("err %v after %d calls", err, calls.Load())
	}
	var seen [100]atomic.Bool
	if err := Parallel(context.Background(), 100, 8, "", nil, func(ctx context.Context, i int) error {
		seen[i].Store(true)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i := range seen {
		if !seen[i].Load() {
			t.Errorf("%d not run", i)
		}
	}
}
