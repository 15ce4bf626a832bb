package builtin

import (
	"fmt"

	"github.com/duro-io/duro"
)

// Namespaces of the built-in classes.
const (
	CounterNamespace = "counter"
	KVNamespace      = "kv"
	LockNamespace    = "lock"
	RoomNamespace    = "room"
)

// Classes returns freshly built copies of the built-in classes, in namespace
// order: counter, kv, lock, memcounter, room.
func Classes() []*duro.Class {
	return []*duro.Class{newCounterClass(), newKVClass(), newLockClass(), newMemCounterClass(), newRoomClass()}
}

// invalid returns an error wrapping duro.ErrInvalidArgument.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{duro.ErrInvalidArgument}, args...)...)
}
