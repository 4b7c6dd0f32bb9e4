package protocol

import (
	"net/http"
	"unicode/utf8"
)

// Code is one of the contract's error codes.
type Code string

// The contract's error codes.
const (
	CodeBadRequest   Code = "bad_request"
	CodeUnauthorized Code = "unauthorized"
	CodeForbidden    Code = "forbidden"
	CodeNotFound     Code = "not_found"
	CodeTooLarge     Code = "too_large"
	CodeRateLimited  Code = "rate_limited"
	CodeUnavailable  Code = "unavailable"
	CodeInternal     Code = "internal"
)

// WebSocket close codes used by herald.
const (
	CloseNormal     = 1000
	CloseGoingAway  = 1001
	ClosePolicy     = 1008
	CloseTooBig     = 1009
	CloseInternal   = 1011
	closeCodeMaxLen = 123 // a close reason fits a control frame with its code
)

// Error is an error a client may see: a contract code and a message for
// people.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

// Errorf returns an *Error with code and message.
func Errorf(code Code, message string) *Error { return &Error{Code: code, Message: message} }

// Error returns "code: message".
func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// HTTPStatus is the status the code maps to wherever HTTP is answered.
func (c Code) HTTPStatus() int {
	switch c {
	case CodeBadRequest:
		return http.StatusBadRequest
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeForbidden:
		return http.StatusForbidden
	case CodeNotFound:
		return http.StatusNotFound
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// CloseReason trims a close reason to what fits a close frame, on a rune
// boundary: RFC 6455 requires the reason to be valid UTF-8, and clients
// fail a connection whose close reason is not.
func CloseReason(s string) string {
	if len(s) <= closeCodeMaxLen {
		return s
	}
	n := closeCodeMaxLen
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
