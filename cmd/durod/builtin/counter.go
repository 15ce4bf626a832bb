package builtin

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/duro-io/duro"
)

// counterKey is the storage key holding the counter as a decimal string.
var counterKey = []byte("n")

// counter is a signed 64-bit counter; an absent value reads as 0.
type counter struct{}

func newCounterClass() *duro.Class {
	c := duro.NewClass(CounterNamespace, func() *counter { return &counter{} })
	duro.Method(c, "Increment", (*counter).Increment)
	duro.Method(c, "Get", (*counter).Get)
	return c
}

// Increment adds by (which may be negative) and returns the new value. A
// result outside int64 is an invalid argument and nothing is written.
func (*counter) Increment(ctx duro.Context, by int64) (int64, error) {
	st := ctx.Storage()
	n, err := loadCounter(st)
	if err != nil {
		return 0, err
	}
	if (by > 0 && n > math.MaxInt64-by) || (by < 0 && n < math.MinInt64-by) {
		return 0, invalid("counter: %d + %d overflows int64", n, by)
	}
	n += by
	if err := st.Put(counterKey, strconv.AppendInt(nil, n, 10)); err != nil {
		return 0, err
	}
	return n, nil
}

// Get returns the current value; its argument is ignored.
func (*counter) Get(ctx duro.Context, _ json.RawMessage) (int64, error) {
	return loadCounter(ctx.Storage())
}

func loadCounter(st duro.Storage) (int64, error) {
	raw, ok, err := st.Get(counterKey)
	if err != nil || !ok {
		return 0, err
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("counter: corrupt stored value %q: %v", raw, err)
	}
	return n, nil
}
