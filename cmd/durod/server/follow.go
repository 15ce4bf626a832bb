package server

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/duro-io/duro"
)

// followPoll bounds how long a follower waits without a change signal before
// reading again (signals are local to this node's replica; the poll covers a
// replica that lags or restores a snapshot).
const followPoll = 5 * time.Second

// followPage is how many messages one read fetches.
const followPage = 100

// follow sends the entries of an ordered log object (a class whose Read
// takes {"from","limit"} and returns {"messages":[{"index",...}]}, like
// room) from index from on, first the committed ones, then each new one once
// committed, until ctx ends or send fails. Reads go through the SDK to the
// shard's leader, so they are linearizable: a follower never sees an entry
// that could be rolled back. idle, if set, is called each time the follower
// has caught up and waits.
func (n *Node) follow(ctx context.Context, ns string, id duro.ID, from uint64, send func(index uint64, msg json.RawMessage) error, idle func() error) error {
	c := n.calls.Load()
	if c == nil {
		return &duro.Error{Code: duro.CodeUnavailable, Retryable: true, Message: "node still starting"}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(n.stopping, cancel)()
	changed, stop := n.host.Watch(id)
	defer stop()
	stub := c.Namespace(ns).Get(id)
	for {
		arg, _ := json.Marshal(map[string]any{"from": from, "limit": followPage})
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		reply, err := stub.CallRaw(rctx, "Read", arg)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		var page struct {
			Messages []json.RawMessage `json:"messages"`
		}
		if err := json.Unmarshal(reply, &page); err != nil {
			return fmt.Errorf("follow %s: Read returned %s: %w", ns, reply, err)
		}
		for _, m := range page.Messages {
			var head struct {
				Index uint64 `json:"index"`
			}
			if err := json.Unmarshal(m, &head); err != nil {
				return fmt.Errorf("follow %s: message without an index: %s", ns, m)
			}
			if err := send(head.Index, m); err != nil {
				return err
			}
			from = head.Index + 1
		}
		if len(page.Messages) == followPage {
			continue
		}
		if idle != nil {
			if err := idle(); err != nil {
				return err
			}
		}
		t := time.NewTimer(followPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}
