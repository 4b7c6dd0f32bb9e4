package herald

import "github.com/heraldhq/herald/internal/protocol"

// Error is an error a client may see: one of the contract's codes and a
// message for people. Return one from a hook to refuse with that code. Any
// other error reaches the client as "unavailable" when it is (or wraps)
// broker.ErrUnavailable or context.Canceled, and otherwise as "internal",
// logged and with its text hidden.
type Error = protocol.Error

// Code is one of the contract's error codes; Code.HTTPStatus maps it to
// the HTTP status the contract gives it.
type Code = protocol.Code

// The contract's error codes.
const (
	CodeBadRequest   = protocol.CodeBadRequest
	CodeUnauthorized = protocol.CodeUnauthorized
	CodeForbidden    = protocol.CodeForbidden
	CodeNotFound     = protocol.CodeNotFound
	CodeTooLarge     = protocol.CodeTooLarge
	CodeRateLimited  = protocol.CodeRateLimited
	CodeUnavailable  = protocol.CodeUnavailable
	CodeInternal     = protocol.CodeInternal
)

// Errorf returns an *Error with code and message, for hooks to return.
func Errorf(code Code, message string) *Error { return protocol.Errorf(code, message) }
