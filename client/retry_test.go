package client

import (
	"testing"
	"time"

	"github.com/duro-io/duro"
)

func TestRetryDelay(t *testing.T) {
	redirect := &duro.Error{Code: duro.CodeUnavailable, Retryable: true, Leader: "10.0.0.2:7071"}
	if d := retryDelay(0, redirect, "10.0.0.1:7071"); d != 0 {
		t.Fatalf("a redirect to a new leader waited %v", d)
	}
	// Hints that keep changing are stale: the call backs off instead of
	// bouncing between nodes as fast as they answer.
	if d := retryDelay(3, redirect, "10.0.0.1:7071"); d == 0 {
		t.Fatal("a call kept following redirects without waiting")
	}
	if d := retryDelay(0, redirect, "10.0.0.2:7071"); d == 0 {
		t.Fatal("a redirect to the node just tried did not wait")
	}
	noLeader := &duro.Error{Code: duro.CodeUnavailable, Retryable: true}
	overloaded := &duro.Error{Code: duro.CodeUnavailable, Retryable: true, Overloaded: true}
	for attempt := 0; attempt < 20; attempt++ {
		if d := retryDelay(attempt, noLeader, "a"); d > 100*time.Millisecond {
			t.Fatalf("attempt %d waiting for a leader slept %v, past the 100 ms poll", attempt, d)
		}
		if d := retryDelay(attempt, overloaded, "a"); d > 500*time.Millisecond {
			t.Fatalf("attempt %d on an overloaded node slept %v", attempt, d)
		}
	}
	var most time.Duration
	for i := 0; i < 100; i++ {
		most = max(most, retryDelay(10, overloaded, "a"))
	}
	if most <= 100*time.Millisecond {
		t.Fatalf("an overloaded node got no more room than an election (%v)", most)
	}
}
