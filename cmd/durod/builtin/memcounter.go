package builtin

import (
	"encoding/json"
	"fmt"

	"github.com/duro-io/duro"
)

// MemCounterNamespace is the namespace of the memcounter class.
const MemCounterNamespace = "memcounter"

// memcounter keeps a counter both in memory and in storage, and a list of the
// tokens of every Hit. It exists for the chaos suite (CHAOS.md T05, T07): an
// instance is rebuilt from committed state on activation, so the in-memory
// value must equal the stored one in every reply. A deposed instance that
// kept running after a new leader committed would drift from storage (double
// ownership); a retried Hit applied twice would leave its token twice.
type memcounter struct {
	mem         int64 // guarded by the object's turn: one call at a time
	activations int64
}

var memTokensKey = []byte("tokens")

// Activate loads the stored value into memory.
func (m *memcounter) Activate(ctx duro.Context) error {
	n, err := loadCounter(ctx.Storage())
	if err != nil {
		return err
	}
	m.mem = n
	m.activations++
	return nil
}

// MemHitArg is the argument of memcounter.Hit: a token unique to the call.
type MemHitArg struct {
	Token string `json:"token"`
}

// MemState is what memcounter.Hit and memcounter.Read return.
type MemState struct {
	Mem         int64    `json:"mem"`    // the instance's in-memory value
	Stored      int64    `json:"stored"` // the value in storage after the call
	Activations int64    `json:"activations"`
	Tokens      []string `json:"tokens,omitempty"` // Read only
}

func newMemCounterClass() *duro.Class {
	c := duro.NewClass(MemCounterNamespace, func() *memcounter { return &memcounter{} })
	duro.Method(c, "Hit", (*memcounter).Hit)
	duro.Method(c, "Read", (*memcounter).Read)
	return c
}

func loadTokens(st duro.Storage) ([]string, error) {
	raw, ok, err := st.Get(memTokensKey)
	if err != nil || !ok {
		return []string{}, err
	}
	var toks []string
	if err := json.Unmarshal(raw, &toks); err != nil {
		return nil, fmt.Errorf("memcounter: corrupt token list: %v", err)
	}
	return toks, nil
}

// Hit adds one to the counter in memory and in storage and appends the
// token to the stored list, in one write.
func (m *memcounter) Hit(ctx duro.Context, a MemHitArg) (MemState, error) {
	if a.Token == "" {
		return MemState{}, invalid("memcounter: token must not be empty")
	}
	st := ctx.Storage()
	n, err := loadCounter(st)
	if err != nil {
		return MemState{}, err
	}
	toks, err := loadTokens(st)
	if err != nil {
		return MemState{}, err
	}
	raw, _ := json.Marshal(append(toks, a.Token))
	n++
	err = st.PutMany([]duro.KV{{Key: counterKey, Value: []byte(fmt.Sprint(n))}, {Key: memTokensKey, Value: raw}})
	if err != nil {
		return MemState{}, err
	}
	m.mem++
	return MemState{Mem: m.mem, Stored: n, Activations: m.activations}, nil
}

// Read returns the counter in memory and in storage and the token list.
func (m *memcounter) Read(ctx duro.Context, _ json.RawMessage) (MemState, error) {
	n, err := loadCounter(ctx.Storage())
	if err != nil {
		return MemState{}, err
	}
	toks, err := loadTokens(ctx.Storage())
	if err != nil {
		return MemState{}, err
	}
	return MemState{Mem: m.mem, Stored: n, Activations: m.activations, Tokens: toks}, nil
}
