// Package client is the Go SDK of duro.
//
//	c, err := client.Dial(ctx, []string{"127.0.0.1:7071", "127.0.0.1:7072"})
//	defer c.Close()
//	ns := c.Namespace("counter")
//	stub := ns.Get(ns.IDFromName("room-1"))
//	var n int64
//	err = stub.Call(ctx, "Increment", 1, &n)
//
// Every call carries the client's session ID and a sequence number, so a call
// retried after a timeout, a lost reply or a leader change runs exactly once.
// Calls made through one Stub reach the object in the order they were made,
// even when issued concurrently without waiting (E-order).
//
// Errors are *duro.Error values: errors.Is(err, client.ErrIndeterminate)
// tells a call that may have been applied; ErrUnavailable one that was not;
// ErrInvalidArgument and ErrNotFound bad input.
package client
