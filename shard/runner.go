package shard

import "time"

// workers runs short tasks (an object's turns, the wait for a proposed
// entry) on goroutines kept for reuse. A fresh goroutine starts with a small
// stack, and a turn (user code, JSON decoding) or a settling call (gRPC's
// context teardown) outgrows it: every burst of calls on an object paid a
// stack copy or two, about 6% of a node's CPU under put. A kept goroutine
// keeps its grown stack.
//
// go is never held up: a task goes to an idle worker if one is waiting, else
// to a new one, so a task that blocks (a turn calling another object) never
// waits for a free worker. A worker idle for workerLinger ends; the count of
// workers follows the peak of concurrent tasks.
type workers struct{ tasks chan func() }

const workerLinger = 2 * time.Second

var taskWorkers = workers{tasks: make(chan func())}

func (w workers) run(task func()) {
	select {
	case w.tasks <- task:
	default:
		go w.work(task)
	}
}

func (w workers) work(task func()) {
	idle := time.NewTimer(workerLinger)
	defer idle.Stop()
	for {
		task()
		task = nil // hold nothing while idle
		idle.Reset(workerLinger)
		select {
		case task = <-w.tasks:
		case <-idle.C:
			return
		}
	}
}
