package wal

import (
	"os"
	"runtime"
	"syscall"
)

// rawSyncs bounds how many fdatasyncs run as raw system calls at once: one
// fewer than the Ps the process had when it started, so that at least one P
// is always free to run the rest of the node (none when GOMAXPROCS is 1).
//
// An fdatasync made the usual way (syscall.Syscall) outlasts the runtime's
// 20 µs patience: sysmon hands the caller's P to another thread, waking it,
// and when the sync returns the caller finds its P gone, parks its thread and
// queues its goroutine behind the others. That happens on every batch a
// follower stores, on the path of the round. A raw system call keeps the P:
// no hand-off, no wake-up, and the goroutine goes on at once
// (docs/benchmarks.md has the figures).
//
// The price: the P does nothing else during the sync, and a stop-the-world
// (the garbage collector's) waits for the sync to end. Syncs here take
// 0.15–1.5 ms. A disk that stops answering would stall the whole process at
// the next collection, not one shard's goroutine: the shards it leads would
// miss its heartbeats and elect leaders elsewhere (reasoned, not tested).
var rawSyncs = make(chan struct{}, max(runtime.GOMAXPROCS(0)-1, 0))

// datasync flushes f's data and the metadata needed to read it back (its
// size), not its timestamps.
func datasync(f *os.File) error {
	select {
	case rawSyncs <- struct{}{}:
		defer func() { <-rawSyncs }()
	default:
		return syscall.Fdatasync(int(f.Fd()))
	}
	fd := f.Fd()
	for {
		_, _, errno := syscall.RawSyscall(syscall.SYS_FDATASYNC, fd, 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		runtime.KeepAlive(f)
		if errno != 0 {
			return errno
		}
		return nil
	}
}
