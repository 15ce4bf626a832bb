package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
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
}

type gatewayError struct {
	Error         string `json:"error"`
	Code          string `json:"code"`
	Retryable     bool   `json:"retryable"`
	Indeterminate bool   `json:"indeterminate"`
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// /v1/ns/{ns}/objects/{name}/{method}
	ns, name, method, ok := parseObjectPath(r.URL.Path)
	if !ok {
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
	nsh := g.c.Namespace(ns)
	id := nsh.IDFromName(name)
	if strings.HasPrefix(name, "id:") {
		if id, err = nsh.IDFromString(strings.TrimPrefix(name, "id:")); err != nil {
			writeErr(w, http.StatusBadRequest, duro.AsError(err))
			return
		}
	}
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

func parseObjectPath(p string) (ns, name, method string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	if len(parts) != 6 || parts[0] != "v1" || parts[1] != "ns" || parts[3] != "objects" {
		return "", "", "", false
	}
	if parts[2] == "" || parts[4] == "" || parts[5] == "" {
		return "", "", "", false
	}
	return parts[2], parts[4], parts[5], true
}

func statusOf(e *duro.Error) int {
	switch {
	case e.Code == duro.CodeInvalidArgument:
		return http.StatusBadRequest
	case e.Code == duro.CodeNotFound:
		return http.StatusNotFound
	case e.Code == duro.CodeFailedPrecondition:
		return http.StatusPreconditionFailed
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
