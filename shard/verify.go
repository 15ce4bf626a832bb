package shard

import (
	"context"
	"sync"

	"github.com/hashicorp/raft"
)

// verifier batches leadership confirmations: every waiter is answered by a
// raft.VerifyLeader round that started after it began waiting.
type verifier struct {
	r *raft.Raft

	mu      sync.Mutex // guards waiting, running
	waiting []chan error
	running bool
}

func (v *verifier) verify(ctx context.Context) error {
	ch := make(chan error, 1)
	v.mu.Lock()
	v.waiting = append(v.waiting, ch)
	if !v.running {
		v.running = true
		go v.loop()
	}
	v.mu.Unlock()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (v *verifier) loop() {
	for {
		v.mu.Lock()
		batch := v.waiting
		v.waiting = nil
		if len(batch) == 0 {
			v.running = false
			v.mu.Unlock()
			return
		}
		v.mu.Unlock()
		err := v.r.VerifyLeader().Error()
		for _, ch := range batch {
			ch <- err
		}
	}
}
