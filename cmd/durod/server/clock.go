package server

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"time"
)

// skewClock is the node clock with a test-set offset (chaos clock-skew
// tests: the kernel clock is machine-wide, and libfaketime does not reach Go
// binaries). It only exists when DURO_FAILPOINTS has clock-control=1.
type skewClock struct {
	offset atomic.Int64 // nanoseconds added to time.Now
}

// Now returns the wall clock plus the offset.
func (c *skewClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// ServeHTTP reports the offset (GET) or sets it (POST ?offset=1.5s, which
// may be negative).
func (c *skewClock) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		d, err := time.ParseDuration(r.URL.Query().Get("offset"))
		if err != nil {
			http.Error(w, "offset: "+err.Error(), http.StatusBadRequest)
			return
		}
		c.offset.Store(int64(d))
	}
	fmt.Fprintf(w, "%s\n", time.Duration(c.offset.Load()))
}
