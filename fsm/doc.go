// Package fsm is the replicated state machine of one shard.
//
// # Contract
//
// The machine is deterministic: its state after applying entries 1..i depends
// only on those entries. It runs no user code, starts no goroutines, reads no
// clock and does no I/O beyond its own bbolt file. Time comes from the entries.
//
// One Call entry is the whole write set of one object call, together with the
// caller's session (client ID, sequence number) and the reply. Applying it is
// atomic with recording the applied index and the reply in the session table,
// so a retried call whose entry committed is answered from the table and its
// writes are never applied twice.
//
// A Call entry is applied only if
//   - its (client, seq) is not already in the session table (else: Duplicate,
//     with the stored reply);
//   - its epoch equals the epoch of the last Activate entry (else: Rejected),
//     which fences off entries from an earlier leadership of the shard;
//   - its base version equals the object's version, the number of Call entries
//     applied to the object so far (else: Rejected). The leader runs calls on
//     speculative state; this check discards a call whose predecessor failed.
//
// A rejection is a deterministic result value, the same on every replica. An
// undecodable entry or a storage error is not: Apply panics, stopping the
// replica rather than letting it diverge.
//
// Reads (Get, List, Version, Session) may run concurrently with Apply from any
// goroutine; each sees a committed bbolt transaction.
package fsm
