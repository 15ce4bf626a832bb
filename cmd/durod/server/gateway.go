package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/duro-io/duro"
	"github.com/duro-io/duro/client"
)

// maxBody bounds a gateway request body.
const maxBody = 4 << 20

// gateway serves POST /v1/ns/{namespace}/objects/{name-or-id}/{method}. It
// calls through the Go SDK, so it gets routing to shard leaders, retries and
// exactly-once like any client.
type gateway struct {
	c       *client.Client
	timeout time.Duration
	// follow streams an ordered log object (Node.follow), for GET .../follow.
	follow func(ctx context.Context, ns string, id duro.ID, from uint64, send func(uint64, json.RawMessage) error, idle func() error) error
}

type gatewayError struct {
	Error         string `json:"error"`
	Code          string `json:"code"`
	Retryable     bool   `json:"retryable"`
	Indeterminate bool   `json:"indeterminate"`
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// /v1/ns/{ns}/objects/{name}/{method}, .../follow, or .../http/...
	ns, name, method, rest, ok := parseObjectPath(r.URL.EscapedPath())
	if !ok {
		writeErr(w, http.StatusNotFound, &duro.Error{Code: duro.CodeNotFound, Message: "no such route; want POST /v1/ns/{namespace}/objects/{name-or-id}/{method}"})
		return
	}
	if method == "http" {
		g.passThrough(w, r, ns, name, rest)
		return
	}
	if method == "follow" && r.Method == http.MethodGet {
		g.serveFollow(w, r, ns, name)
		return
	}
	if rest != "" {
		writeErr(w, http.StatusNotFound, &duro.Error{Code: duro.CodeNotFound, Message: "no such route; want POST /v1/ns/{namespace}/objects/{name-or-id}/{method}"})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeErr(w, http.StatusMethodNotAllowed, &duro.Error{Code: duro.CodeInvalidArgument, Message: "use POST"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeErr(w, http.StatusRequestEntityTooLarge, &duro.Error{Code: duro.CodeInvalidArgument, Message: "request body: " + err.Error()})
		return
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		body = []byte("null")
	}
	if !json.Valid(body) {
		writeErr(w, http.StatusBadRequest, &duro.Error{Code: duro.CodeInvalidArgument, Message: "request body is not valid JSON"})
		return
	}
	id, ok := g.objectID(w, ns, name)
	if !ok {
		return
	}
	nsh := g.c.Namespace(ns)
	ctx, cancel := context.WithTimeout(r.Context(), g.timeout)
	defer cancel()
	reply, err := nsh.Get(id).CallRaw(ctx, method, body)
	if err != nil {
		e := duro.AsError(err)
		writeErr(w, statusOf(e), e)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(reply, '\n'))
}

// objectID resolves the {name-or-id} of a route, writing a 400 if an
// "id:" form is malformed.
func (g *gateway) objectID(w http.ResponseWriter, ns, name string) (duro.ID, bool) {
	nsh := g.c.Namespace(ns)
	if !strings.HasPrefix(name, "id:") {
		return nsh.IDFromName(name), true
	}
	id, err := nsh.IDFromString(strings.TrimPrefix(name, "id:"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, duro.AsError(err))
		return id, false
	}
	return id, true
}

// parseObjectPath splits an escaped path /v1/ns/{ns}/objects/{name}/{method}
// and whatever follows the method (rest, with its leading "/"; only the
// http pass-through route has one).
func parseObjectPath(p string) (ns, name, method, rest string, ok bool) {
	parts := strings.SplitN(strings.TrimPrefix(p, "/"), "/", 7)
	if len(parts) < 6 || parts[0] != "v1" || parts[1] != "ns" || parts[3] != "objects" {
		return "", "", "", "", false
	}
	if len(parts) == 7 {
		rest = "/" + parts[6]
	}
	var err error
	for _, i := range []int{2, 4, 5} {
		if parts[i], err = url.PathUnescape(parts[i]); err != nil || parts[i] == "" {
			return "", "", "", "", false
		}
	}
	return parts[2], parts[4], parts[5], rest, true
}

// passThrough hands an HTTP request to an object whose class serves HTTP
// (duro.HandleHTTP) and writes its response.
func (g *gateway) passThrough(w http.ResponseWriter, r *http.Request, ns, name, rest string) {
	id, ok := g.objectID(w, ns, name)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeErr(w, http.StatusRequestEntityTooLarge, &duro.Error{Code: duro.CodeInvalidArgument, Message: "request body: " + err.Error()})
		return
	}
	if rest == "" {
		rest = "/"
	}
	path, err := url.PathUnescape(rest)
	if err != nil {
		writeErr(w, http.StatusBadRequest, &duro.Error{Code: duro.CodeInvalidArgument, Message: "bad path: " + err.Error()})
		return
	}
	hdr := r.Header.Clone()
	hdr.Del("Cookie") // the gateway's origin is shared by every object
	arg, _ := json.Marshal(duro.HTTPRequest{Method: r.Method, Path: path, Query: r.URL.RawQuery, Header: hdr, Body: body})
	ctx, cancel := context.WithTimeout(r.Context(), g.timeout)
	defer cancel()
	reply, err := g.c.Namespace(ns).Get(id).CallRaw(ctx, duro.HTTPMethod, arg)
	if err != nil {
		e := duro.AsError(err)
		if e.Code == duro.CodeNotFound && strings.Contains(e.Message, duro.HTTPMethod) {
			e = &duro.Error{Code: duro.CodeNotFound, Message: fmt.Sprintf("namespace %q does not serve HTTP", ns)}
		}
		writeErr(w, statusOf(e), e)
		return
	}
	var resp duro.HTTPResponse
	if err := json.Unmarshal(reply, &resp); err != nil {
		writeErr(w, http.StatusBadGateway, &duro.Error{Code: duro.CodeInternal, Message: "object returned a malformed HTTP response"})
		return
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.Status)
	w.Write(resp.Body)
}

// serveFollow streams an ordered log object's entries as server-sent events
// (GET .../follow?from=N; a reconnecting EventSource resumes after its
// Last-Event-ID). Each event's id is the entry's index and its data the
// entry's JSON. Only committed entries are sent.
func (g *gateway) serveFollow(w http.ResponseWriter, r *http.Request, ns, name string) {
	id, ok := g.objectID(w, ns, name)
	if !ok {
		return
	}
	var from uint64
	if v := r.URL.Query().Get("from"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeErr(w, http.StatusBadRequest, &duro.Error{Code: duro.CodeInvalidArgument, Message: "from must be a non-negative integer"})
			return
		}
		from = n
	}
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			from = n + 1
		}
	}
	fl, _ := w.(http.Flusher)
	started := false
	start := func() {
		if !started {
			started = true
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
		}
	}
	flush := func() error {
		if fl != nil {
			fl.Flush()
		}
		return r.Context().Err()
	}
	err := g.follow(r.Context(), ns, id, from, func(index uint64, msg json.RawMessage) error {
		start()
		fmt.Fprintf(w, "id: %d\ndata: %s\n\n", index, bytes.ReplaceAll(msg, []byte("\n"), nil))
		return flush()
	}, func() error {
		start()
		io.WriteString(w, ": caught up\n\n")
		return flush()
	})
	if err != nil && !started {
		e := duro.AsError(err)
		writeErr(w, statusOf(e), e)
	}
}

func statusOf(e *duro.Error) int {
	switch {
	case e.Code == duro.CodeInvalidArgument:
		return http.StatusBadRequest
	case e.Code == duro.CodeNotFound:
		return http.StatusNotFound
	case e.Code == duro.CodeFailedPrecondition:
		return http.StatusPreconditionFailed
	case e.Code == duro.CodeAborted:
		return http.StatusConflict // e.g. a cycle of calls between objects
	case e.Indeterminate:
		return http.StatusGatewayTimeout
	case e.Retryable || e.Code == duro.CodeUnavailable:
		return http.StatusServiceUnavailable
	case e.Code == duro.CodeUnknown:
		return http.StatusUnprocessableEntity // the method itself returned an error
	}
	return http.StatusInternalServerError
}

func writeErr(w http.ResponseWriter, status int, e *duro.Error) {
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(gatewayError{Error: e.Message, Code: e.Code.String(), Retryable: e.Retryable, Indeterminate: e.Indeterminate})
}
