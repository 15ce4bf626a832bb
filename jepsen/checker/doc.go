// Package checker holds the offline safety checkers of the chaos suite
// (CHAOS.md G-1). Each checker takes a recorded history and returns a Result;
// none of them talks to a cluster.
//
// # Basics
//
// A history is a []Op. Every Op carries both its invocation (Start) and its
// completion (End) time, measured on one monotonic clock, and one of three
// outcomes:
//
//   - Ok: the operation took effect exactly once, somewhere in [Start, End].
//   - Fail: the operation definitely did not take effect.
//   - Info: indeterminate. It may take effect at any time after Start, or
//     never; End is meaningless.
//
// The checkers are:
//
//   - Register: per-object linearizability of get/put/cas, using porcupine,
//     partitioned by Op.Object. A porcupine timeout is a failure of kind
//     "inconclusive", never a pass.
//   - Counter: every Ok read lies between the adds that definitely applied
//     before it and those that may have applied (Jepsen's counter bounds).
//   - ListAppend: duplicate, lost, phantom, aborted-read, order and realtime
//     anomalies on append-only lists of unique strings.
//   - Set: lost, phantom and aborted-read anomalies on grow-only sets.
//
// A Result is Valid only when it has no anomalies. Anomaly.Ops index into the
// history the checker was given.
//
// # Caveats
//
//   - "Final read" means the Ok read with the latest End. An Ok write counts
//     as lost only if it was acknowledged before the final read started; a
//     write concurrent with the final read may legitimately be missing.
//   - Values written to lists and sets must be unique per object; the checkers
//     cannot tell a duplicate apply from two equal writes.
//   - Operations the checkers do not understand are reported as "malformed",
//     which makes the result invalid rather than silently ignored.
package checker
