package duro

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
)

// HTTPMethod is the method name under which a class registered with
// HandleHTTP serves the gateway's pass-through route
// /v1/ns/{namespace}/objects/{name}/http/...
const HTTPMethod = "$http"

// HTTPRequest is a pass-through HTTP request as the gateway sends it to the
// object (JSON; Body base64).
type HTTPRequest struct {
	Method string      `json:"method"`
	Path   string      `json:"path"` // below .../http, starting with "/"
	Query  string      `json:"query"`
	Header http.Header `json:"header"`
	Body   []byte      `json:"body"`
}

// HTTPResponse is the object's answer to an HTTPRequest.
type HTTPResponse struct {
	Status int         `json:"status"`
	Header http.Header `json:"header"`
	Body   []byte      `json:"body"`
}

// HandleHTTP makes class c serve HTTP on the gateway's pass-through route,
// the analogue of a Durable Object's fetch. fn runs as an ordinary turn of
// the object (its writes commit before the response is sent); the response
// is buffered, so it cannot stream.
func HandleHTTP[T any](c *Class, fn func(o *T, ctx Context, w http.ResponseWriter, r *http.Request)) {
	if _, dup := c.methods[HTTPMethod]; dup {
		panic(fmt.Sprintf("duro: class %q: HandleHTTP called twice", c.name))
	}
	c.methods[HTTPMethod] = func(ctx Context, inst Instance, raw []byte) ([]byte, error) {
		o, ok := inst.(*T)
		if !ok {
			return nil, fmt.Errorf("duro: class %q: instance is %T, not %T", c.name, inst, o)
		}
		var hr HTTPRequest
		if err := json.Unmarshal(raw, &hr); err != nil {
			return nil, fmt.Errorf("%w: http request: %v", ErrInvalidArgument, err)
		}
		url := hr.Path
		if hr.Query != "" {
			url += "?" + hr.Query
		}
		r, err := http.NewRequestWithContext(ctx, hr.Method, url, bytes.NewReader(hr.Body))
		if err != nil {
			return nil, fmt.Errorf("%w: http request: %v", ErrInvalidArgument, err)
		}
		if hr.Header != nil {
			r.Header = hr.Header
		}
		w := &responseBuffer{header: http.Header{}}
		fn(o, ctx, w, r)
		if w.status == 0 {
			w.status = http.StatusOK
		}
		return json.Marshal(HTTPResponse{Status: w.status, Header: w.header, Body: w.body.Bytes()})
	}
}

type responseBuffer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *responseBuffer) Header() http.Header { return w.header }

func (w *responseBuffer) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *responseBuffer) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}
