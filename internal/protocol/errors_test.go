package protocol_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/protocol"
)

// Every error reaches a client through one door: what it may see as it
// is, what it may not as "internal" (logged), with one status and one
// close code per code.
func TestPublic(t *testing.T) {
	t.Parallel()
	forbidden := protocol.Errorf(protocol.CodeForbidden, "not yours")
	cases := []struct {
		err    error
		code   protocol.Code
		logged bool
	}{
		{forbidden, protocol.CodeForbidden, false},
		{fmt.Errorf("hub: subscribe: %w", forbidden), protocol.CodeForbidden, false},
		{fmt.Errorf("redis: %w", broker.ErrUnavailable), protocol.CodeUnavailable, false},
		{fmt.Errorf("call: %w", context.Canceled), protocol.CodeUnavailable, false},
		{errors.New("disk on fire"), protocol.CodeInternal, true},
	}
	for _, c := range cases {
		var logged error
		got := protocol.Public(c.err, func(err error) { logged = err })
		if got.Code != c.code || (logged != nil) != c.logged {
			t.Errorf("Public(%v) = %v, logged %v; want %s, logged %v", c.err, got, logged, c.code, c.logged)
		}
		if c.logged && got.Message != "internal error" {
			t.Errorf("Public(%v) shows %q to the client", c.err, got.Message)
		}
	}
}

func TestCodeTable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		code   protocol.Code
		status int
		close  int
	}{
		{protocol.CodeBadRequest, http.StatusBadRequest, protocol.ClosePolicy},
		{protocol.CodeUnauthorized, http.StatusUnauthorized, protocol.ClosePolicy},
		{protocol.CodeForbidden, http.StatusForbidden, protocol.ClosePolicy},
		{protocol.CodeNotFound, http.StatusNotFound, protocol.ClosePolicy},
		{protocol.CodeTooLarge, http.StatusRequestEntityTooLarge, protocol.CloseTooBig},
		{protocol.CodeRateLimited, http.StatusTooManyRequests, protocol.ClosePolicy},
		{protocol.CodeUnavailable, http.StatusServiceUnavailable, protocol.CloseInternal},
		{protocol.CodeInternal, http.StatusInternalServerError, protocol.CloseInternal},
	}
	for _, c := range cases {
		if s, cl := c.code.HTTPStatus(), c.code.CloseCode(); s != c.status || cl != c.close {
			t.Errorf("%s: status %d, close %d; want %d, %d", c.code, s, cl, c.status, c.close)
		}
		w := httptest.NewRecorder()
		protocol.WriteHTTP(w, protocol.Errorf(c.code, "m"))
		if want := `{"error":{"code":"` + string(c.code) + `","message":"m"}}` + "\n"; w.Code != c.status || w.Body.String() != want {
			t.Errorf("%s: WriteHTTP gave %d %q, want %d %q", c.code, w.Code, w.Body.String(), c.status, want)
		}
	}
}
