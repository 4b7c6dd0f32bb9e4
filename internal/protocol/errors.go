package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/heraldhq/herald/broker"
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
	CloseNormal    = 1000
	CloseGoingAway = 1001
	ClosePolicy    = 1008
	CloseTooBig    = 1009
	CloseInternal  = 1011
	// CloseKicked closes a connection the application disconnected
	// (server API): herald.js and the Go client do not reconnect after it.
	CloseKicked     = 4000
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

// CloseCode is the WebSocket close code for a connection ended by an
// error of code c: 1009 for too_large, 1011 for internal and unavailable,
// 1008 (policy) for the rest.
func (c Code) CloseCode() int {
	switch c {
	case CodeTooLarge:
		return CloseTooBig
	case CodeInternal, CodeUnavailable:
		return CloseInternal
	default:
		return ClosePolicy
	}
}

// BadChannel is the error for a channel name that is not valid.
func BadChannel() *Error {
	return Errorf(CodeBadRequest, "bad channel name: 1-255 bytes of A-Z a-z 0-9 _ - . : @ = ,")
}

// BadJSON is the error for a JSON input that json.Unmarshal refused: where
// its syntax breaks, or which field has the wrong type, what it wants and
// what it got (`field "channel": want a string, got number`). It does not
// echo the input back, bar a short number that does not fit its field.
func BadJSON(err error) *Error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return Errorf(CodeBadRequest, "malformed JSON: syntax error at byte "+strconv.FormatInt(syntax.Offset, 10))
	case errors.As(err, &typ):
		msg := "want " + jsonWant(typ.Type) + ", got " + jsonGot(typ.Value)
		if typ.Field != "" {
			msg = "field " + strconv.Quote(typ.Field) + ": " + msg
		}
		return Errorf(CodeBadRequest, msg)
	default:
		return Errorf(CodeBadRequest, "malformed JSON: cannot decode")
	}
}

// jsonWant names the JSON a Go type decodes from.
func jsonWant(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	default:
		return t.String()
	}
}

// jsonGot names the JSON value of an UnmarshalTypeError: "number",
// "string", "array", "object", "boolean", or a number with its text
// ("number 1.5") when that is short.
func jsonGot(value string) string {
	const maxNumber = 24
	switch {
	case value == "bool":
		return "boolean"
	case strings.HasPrefix(value, "number ") && len(value) > len("number ")+maxNumber:
		return "number"
	default:
		return value
	}
}

// Public returns what a client may see of err, wherever it is answered
// (a command's reply, an HTTP response): an *Error as it is, an
// unreachable broker as unavailable, a cancelled call (its connection is
// closing) as unavailable. Anything else is internal: internal is called
// with it, for the log, and the client sees only "internal error".
func Public(err error, internal func(error)) *Error {
	var pe *Error
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.Is(err, broker.ErrUnavailable):
		return Errorf(CodeUnavailable, "the broker is unavailable, try again")
	case errors.Is(err, context.Canceled):
		return Errorf(CodeUnavailable, "connection closing")
	default:
		if internal != nil {
			internal(err)
		}
		return Errorf(CodeInternal, "internal error")
	}
}

// WriteHTTP answers with the contract's error shape,
// {"error":{"code","message"}}, and the status of e's code.
func WriteHTTP(w http.ResponseWriter, e *Error) { WriteHTTPStatus(w, e.Code.HTTPStatus(), e) }

// WriteHTTPStatus is WriteHTTP with a status of the caller's (405 for a
// wrong method, which has no code of its own).
func WriteHTTPStatus(w http.ResponseWriter, status int, e *Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(ErrorBody(e))
}

// ErrorBody is the contract's error shape for e, one line of JSON.
func ErrorBody(e *Error) []byte {
	return append(mustMarshal(struct {
		Error *Error `json:"error"`
	}{e}), '\n')
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
