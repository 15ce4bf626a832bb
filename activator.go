package duro

// Activator is implemented by instances that prepare themselves when they are
// activated (created in memory on a leader, on first use or after eviction).
//
// Activate runs once per activation, on the object's turn goroutine, before
// the first call. Its ctx is that call's: Storage reads see the object's
// current state; writes made there join the first call's write set (they are
// applied only if that call writes successfully). If Activate returns an
// error, the first call fails with it and the instance is discarded: the next
// call activates a fresh one.
type Activator interface {
	Activate(ctx Context) error
}
