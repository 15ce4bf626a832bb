package rpc

import (
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TestPipelineSurvivesAbandonedConsumer: Raft stops reading a pipeline's
// responses as soon as one fails or its leadership ends, yet may still be
// sending. The sends must keep returning instead of blocking for good once
// the transport's internal buffers fill (which left a leader unable to
// replicate to that follower again and raft.Shutdown hanging).
func TestPipelineSurvivesAbandonedConsumer(t *testing.T) {
	a, b := newTestMux(t), newTestMux(t)
	quiet := hclog.NewNullLogger()
	src, err := a.RaftTransport(3, a.Addr().String(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := b.RaftTransport(3, b.Addr().String(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.(raft.WithClose).Close(); dst.(raft.WithClose).Close() })
	go func() {
		for rpc := range dst.Consumer() {
			req := rpc.Command.(*raft.AppendEntriesRequest)
			rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, Success: true}, nil)
		}
	}()
	p, err := src.AppendEntriesPipeline("b", raft.ServerAddress(b.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// Consume one response, then abandon the consumer like pipelineDecode.
	if _, err := p.AppendEntries(&raft.AppendEntriesRequest{Term: 1}, &raft.AppendEntriesResponse{}); err != nil {
		t.Fatal(err)
	}
	if f := <-p.Consumer(); f.Error() != nil || !f.Response().Success {
		t.Fatalf("first response: %v %+v", f.Error(), f.Response())
	}
	sent := make(chan error, 1)
	const n = 1000 // well past the transport's two buffers of 128
	go func() {
		for i := 0; i < n; i++ {
			if _, err := p.AppendEntries(&raft.AppendEntriesRequest{Term: 1}, &raft.AppendEntriesResponse{}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	select {
	case err := <-sent:
		if err != nil {
			t.Fatalf("AppendEntries: %v", err)
		}
	case <-time.After(time.Minute): // a hang, not a speed limit: 1,000 sends take milliseconds
		t.Fatal("pipeline sends blocked for good once nobody read the responses")
	}
	// Responses still arrive, in order, to a consumer that comes back.
	for i := 0; i < n; i++ {
		if f := <-p.Consumer(); f.Error() != nil {
			t.Fatalf("response %d: %v", i, f.Error())
		}
	}
}
