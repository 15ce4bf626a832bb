package duro

import (
	"errors"
	"fmt"
)

// Code classifies an error the way clients see it. The values match gRPC's
// status codes where one fits.
type Code int

const (
	CodeOK                 Code = 0
	CodeCanceled           Code = 1
	CodeUnknown            Code = 2
	CodeInvalidArgument    Code = 3
	CodeDeadlineExceeded   Code = 4
	CodeNotFound           Code = 5
	CodeFailedPrecondition Code = 9
	CodeAborted            Code = 10
	CodeResourceExhausted  Code = 8
	CodeInternal           Code = 13
	CodeUnavailable        Code = 14
)

var codeNames = map[Code]string{
	CodeOK: "ok", CodeCanceled: "canceled", CodeUnknown: "unknown",
	CodeInvalidArgument: "invalid argument", CodeDeadlineExceeded: "deadline exceeded",
	CodeNotFound: "not found", CodeFailedPrecondition: "failed precondition",
	CodeAborted: "aborted", CodeResourceExhausted: "resource exhausted",
	CodeInternal: "internal", CodeUnavailable: "unavailable",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code(%d)", int(c))
}

// Sentinel errors. Compare with errors.Is.
var (
	// ErrInvalidArgument: bad input (malformed ID, oversize key or value,
	// undecodable argument). Nothing was changed.
	ErrInvalidArgument = &Error{Code: CodeInvalidArgument, Message: "invalid argument"}
	// ErrNotFound: unknown namespace or method.
	ErrNotFound = &Error{Code: CodeNotFound, Message: "not found"}
	// ErrUnavailable: the call was not executed; it is safe to retry.
	ErrUnavailable = &Error{Code: CodeUnavailable, Message: "unavailable", Retryable: true}
	// ErrIndeterminate: the call may or may not have been applied.
	ErrIndeterminate = &Error{Code: CodeUnavailable, Message: "outcome unknown", Indeterminate: true}
	// ErrOverloaded: the object or node shed the call; retry later.
	ErrOverloaded = &Error{Code: CodeResourceExhausted, Message: "overloaded", Retryable: true, Overloaded: true}
)

// Error is the error type every client-visible failure carries.
type Error struct {
	Code    Code
	Message string
	// Retryable: the call was not executed (or was deduplicated), so retrying
	// it is safe.
	Retryable bool
	// Overloaded: the call was shed because of load.
	Overloaded bool
	// Indeterminate: the call may have been applied. A retry with the same
	// session and sequence is still safe: the server deduplicates it.
	Indeterminate bool
	// Leader is the address of the node believed to lead the object's shard,
	// when known (for NotLeader redirects).
	Leader string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code.String()
	}
	return e.Message
}

// Is matches sentinel errors by class, so errors.Is(err, ErrInvalidArgument)
// holds for any invalid-argument error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	switch t {
	case ErrIndeterminate:
		return e.Indeterminate
	case ErrOverloaded:
		return e.Overloaded
	case ErrUnavailable:
		return e.Code == CodeUnavailable && !e.Indeterminate
	}
	return e.Code == t.Code && e.Retryable == t.Retryable && e.Indeterminate == t.Indeterminate
}

// Errorf returns an *Error of code c.
func Errorf(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Message: fmt.Sprintf(format, args...)}
}

// AsError converts any error into an *Error: an *Error in the chain is
// returned as is, a wrapped sentinel keeps its class with the full message,
// and anything else becomes CodeUnknown (an application error).
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		if e.Message == err.Error() {
			return e
		}
		c := *e
		c.Message = err.Error()
		return &c
	}
	return &Error{Code: CodeUnknown, Message: err.Error()}
}
