package rpc

import (
	"sync"

	"github.com/hashicorp/raft"
)

// raftTransport is hashicorp/raft's NetworkTransport with pipelines that
// cannot wedge.
//
// In NetworkTransport a pipeline's decoder hands each response to a channel
// of 128 that only Raft's pipelineDecode reads, and AppendEntries waits for
// room in another channel of 128 that only that decoder drains. Raft stops
// reading responses as soon as one fails (a follower that rejects, restarts
// or shuts down) or its leadership ends, while its sender may still be
// writing: with 256 requests in flight, the sender blocks in AppendEntries
// for good. The replication goroutine then never returns, the follower gets
// nothing more from this leader, and raft.Shutdown waits forever (seen as a
// durod that did not exit on SIGTERM after a loaded run).
type raftTransport struct {
	*raft.NetworkTransport
}

// AppendEntriesPipeline returns a pipeline whose responses are always taken
// off the transport's decoder, whether or not Raft still reads them.
func (t raftTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return newDrainedPipeline(p), nil
}

// drainedPipeline moves responses from the inner pipeline into an unbounded
// queue that feeds Consumer. The queue holds at most the requests sent and
// not yet consumed, and the sender stops once Raft has stopped consuming.
type drainedPipeline struct {
	raft.AppendPipeline
	out  chan raft.AppendFuture
	done chan struct{}
	once sync.Once
}

func newDrainedPipeline(p raft.AppendPipeline) *drainedPipeline {
	d := &drainedPipeline{AppendPipeline: p, out: make(chan raft.AppendFuture), done: make(chan struct{})}
	go d.forward(p.Consumer())
	return d
}

func (d *drainedPipeline) forward(in <-chan raft.AppendFuture) {
	var queue []raft.AppendFuture
	for {
		var out chan raft.AppendFuture
		var next raft.AppendFuture
		if len(queue) > 0 {
			out, next = d.out, queue[0]
		}
		select {
		case f := <-in:
			queue = append(queue, f)
		case out <- next:
			queue[0] = nil
			queue = queue[1:]
		case <-d.done:
			return
		}
	}
}

func (d *drainedPipeline) Consumer() <-chan raft.AppendFuture { return d.out }

func (d *drainedPipeline) Close() error {
	d.once.Do(func() { close(d.done) })
	return d.AppendPipeline.Close()
}
