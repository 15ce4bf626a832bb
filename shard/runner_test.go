package shard

import (
	"sync"
	"testing"
)

// A task that blocks never holds up another: turns may wait on each other
// (an object calling an object), so waiting for a free worker could
// deadlock.
func TestWorkersNeverWaitForAFreeWorker(t *testing.T) {
	w := workers{tasks: make(chan func())}
	const n = 50
	release := make(chan struct{})
	var started, finished sync.WaitGroup
	started.Add(n)
	finished.Add(n)
	for range n {
		w.run(func() {
			defer finished.Done()
			started.Done()
			<-release // every task blocks until all n have started
		})
	}
	started.Wait()
	close(release)
	finished.Wait()

	// Idle workers take later tasks, and every task runs once.
	var count sync.WaitGroup
	var mu sync.Mutex
	ran := 0
	for range 3 * n {
		count.Add(1)
		w.run(func() {
			defer count.Done()
			mu.Lock()
			ran++
			mu.Unlock()
		})
	}
	count.Wait()
	if ran != 3*n {
		t.Fatalf("%d tasks ran, want %d", ran, 3*n)
	}
}
