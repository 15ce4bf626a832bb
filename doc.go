// Package duro is what an object class author imports: object IDs, class and
// method registration, the call context and the per-object storage interface.
//
// It has no server dependencies, so a program that registers its own classes
// and starts a node (see cmd/durod/server) does not import a cycle.
//
// # Basics
//
// A class is registered under a namespace name with a constructor; its methods
// take a JSON-decoded argument and return a JSON-encoded result:
//
//	c := duro.NewClass("counter", func() *Counter { return new(Counter) })
//	duro.Method(c, "Increment", (*Counter).Increment)
//
// Each object runs one call at a time. Everything a call writes through
// Context.Storage is committed as one Raft log entry, and the caller gets the
// reply only after that entry is applied.
//
// # Caveats
//
// In-memory fields of an object may be dropped at any time (leadership change,
// eviction): keep what must survive in Storage.
package duro
