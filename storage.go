package duro

import "context"

// Default limits on key and value sizes; a node may be configured otherwise.
const (
	DefaultMaxKeyBytes   = 2 << 10
	DefaultMaxValueBytes = 128 << 10
)

// KV is one key and its value.
type KV struct {
	Key   []byte
	Value []byte
}

// ListOptions selects a range of keys. Start is inclusive and End exclusive;
// Prefix, when set, restricts the range further. Limit 0 means no limit.
type ListOptions struct {
	Start   []byte
	End     []byte
	Prefix  []byte
	Reverse bool
	Limit   int
}

// Storage is one object's transactional key-value storage, usable only inside
// a call. Reads see the call's own earlier writes at once. All writes of a call
// are committed together, or not at all, when the call returns without error.
//
// Keys longer than the node's key limit, or values longer than its value
// limit, are rejected with ErrInvalidArgument.
type Storage interface {
	// Get returns the value of key and whether it exists.
	Get(key []byte) ([]byte, bool, error)
	// GetMany returns the values of the keys that exist.
	GetMany(keys [][]byte) (map[string][]byte, error)
	Put(key, value []byte) error
	PutMany(kvs []KV) error
	// Delete removes key and reports whether it existed.
	Delete(key []byte) (bool, error)
	// DeleteMany removes keys and reports how many existed.
	DeleteMany(keys [][]byte) (int, error)
	List(opts ListOptions) ([]KV, error)
	// DeleteAll removes every key of the object.
	DeleteAll() error
	// Transaction runs fn; if fn returns an error, every write fn made is
	// undone and the error is returned. The whole call is atomic anyway;
	// Transaction gives all-or-nothing for a part of it.
	Transaction(fn func(Storage) error) error

	// GetAlarm returns the time of the object's alarm, if one is set. Inside
	// the Alarm handler the alarm that fired is already cleared.
	GetAlarm() (Time, bool, error)
	// SetAlarm sets the object's one alarm to t, replacing any other. When
	// it is due the object's Alarm handler runs (the instance must implement
	// Alarmer, or SetAlarm fails with ErrInvalidArgument). The alarm changes
	// with the call's other writes. DeleteAll leaves the alarm alone.
	SetAlarm(t Time) error
	// DeleteAlarm removes the object's alarm, if any.
	DeleteAlarm() error
}

// Context is what a method receives: the call's context.Context (deadline,
// cancellation) plus the object's identity, storage and the call's log time.
type Context interface {
	context.Context
	ID() ID
	Namespace() string
	Storage() Storage
	// Now is the time of the call, taken from the node's clock when the call
	// started. It is recorded in the log entry, so replicas agree on it.
	Now() Time
	// Stub returns a handle for calling object id of namespace ns from this
	// call (see Stub).
	Stub(ns string, id ID) Stub
}
