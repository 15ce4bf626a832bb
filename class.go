package duro

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
)

// Instance is one live object: whatever the class constructor returned.
type Instance any

// Handler runs one method call: it decodes arg, runs the method on inst and
// returns the encoded result.
type Handler func(ctx Context, inst Instance, arg []byte) ([]byte, error)

// Class is a namespace's object class: a constructor and named methods.
type Class struct {
	name    string
	newFn   func() Instance
	methods map[string]Handler
}

// NewClass declares a class for namespace name. newFn runs once per
// activation; it must not touch storage (it has no context).
func NewClass[T any](name string, newFn func() *T) *Class {
	return &Class{name: name, newFn: func() Instance { return newFn() }, methods: map[string]Handler{}}
}

// Name returns the class's namespace.
func (c *Class) Name() string { return c.name }

// New returns a fresh instance.
func (c *Class) New() Instance { return c.newFn() }

// Handler returns the method named m.
func (c *Class) Handler(m string) (Handler, bool) {
	h, ok := c.methods[m]
	return h, ok
}

// Methods returns the sorted method names.
func (c *Class) Methods() []string {
	out := make([]string, 0, len(c.methods))
	for m := range c.methods {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// Method registers fn as method name of class c. The argument is decoded from
// JSON into A (an empty or absent argument decodes as A's zero value) and the
// result is encoded as JSON. A decoding failure is ErrInvalidArgument.
func Method[T, A, R any](c *Class, name string, fn func(o *T, ctx Context, arg A) (R, error)) {
	if _, dup := c.methods[name]; dup {
		panic(fmt.Sprintf("duro: class %q: method %q registered twice", c.name, name))
	}
	c.methods[name] = func(ctx Context, inst Instance, raw []byte) ([]byte, error) {
		o, ok := inst.(*T)
		if !ok {
			return nil, fmt.Errorf("duro: class %q: instance is %T, not %T", c.name, inst, o)
		}
		var arg A
		if len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &arg); err != nil {
				return nil, fmt.Errorf("%w: method %s.%s: argument: %v", ErrInvalidArgument, c.name, name, err)
			}
		}
		res, err := fn(o, ctx, arg)
		if err != nil {
			return nil, err
		}
		return json.Marshal(res)
	}
}

// Registry maps namespaces to classes. It is safe for concurrent use.
type Registry struct {
	mu      sync.RWMutex // guards classes
	classes map[string]*Class
}

// NewRegistry returns a registry holding classes.
func NewRegistry(classes ...*Class) *Registry {
	r := &Registry{classes: map[string]*Class{}}
	for _, c := range classes {
		r.Register(c)
	}
	return r
}

// Register adds c; registering a namespace twice panics.
func (r *Registry) Register(c *Class) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.classes[c.name]; dup {
		panic(fmt.Sprintf("duro: namespace %q registered twice", c.name))
	}
	r.classes[c.name] = c
}

// Lookup returns the class of namespace ns.
func (r *Registry) Lookup(ns string) (*Class, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c, ok := r.classes[ns]
	return c, ok
}

// Namespaces returns the registered namespaces, sorted.
func (r *Registry) Namespaces() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.classes))
	for n := range r.classes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
