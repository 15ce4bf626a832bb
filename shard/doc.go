// Package shard runs one node's shards: for each, a hashicorp/raft group
// whose state machine is an fsm.Machine, and on the group's leader the object
// host that runs calls.
//
// # Goroutines
//
//   - Each Shard owns a leadership goroutine that consumes raft's NotifyCh; it
//     activates the shard on winning (commit an Activate entry, which is also
//     the barrier: its future returns once everything before it is applied) and
//     resets every object on losing.
//   - Each active object has at most one turn goroutine, started when calls
//     are queued and ending when the queue is empty.
//   - Each proposed entry has a waiter goroutine that releases the reply once
//     the entry is applied (the output gate).
//   - Each Shard owns an idle sweep goroutine that evicts objects unused for
//     IdleTimeout (only fully idle ones: nothing queued, running or pending);
//     a cap on active objects evicts the least recently used idle ones.
//   - Each Shard has a verifier goroutine, running only while reads wait, that
//     batches leadership confirmations (raft.VerifyLeader) across reads.
//
// # Contract for callers
//
// Host.Submit never blocks on a turn; calls submitted for one object run in
// submission order (E-order). Every call ends with exactly one result. An
// error with Retryable set means the call did not run and nothing of it will
// ever be applied; Indeterminate means it may have been applied. A retry with
// the same (client, seq) is always safe: the fsm deduplicates it.
package shard
