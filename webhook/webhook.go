// Package webhook is what an application needs of herald's webhooks:
// the events herald sends (Event) and the check of their signature
// (Verify).
//
// herald POSTs one event per request, as JSON, with the header
//
//	Herald-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">
//
// keyed with the secret given to herald serve --webhook-secret. Answer any
// 2xx once the event is handled; anything else is retried, with backoff,
// for --webhook-retry-for. Delivery is at least once: the same event (the
// same ID) may arrive twice, so handle events idempotently by ID. One
// client's events arrive in the order they happened.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Event types.
const (
	Connect     = "connect"
	Disconnect  = "disconnect"
	Subscribe   = "subscribe"
	Unsubscribe = "unsubscribe"
	Occupied    = "occupied"
	Vacated     = "vacated"
	Undelivered = "undelivered"
)

// Types lists every event type, in the contract's order.
var Types = []string{Connect, Disconnect, Subscribe, Unsubscribe, Occupied, Vacated, Undelivered}

// Reasons a connection ends, in a disconnect event.
const (
	ReasonClosed   = "closed"   // by the client
	ReasonSlow     = "slow"     // it fell too far behind
	ReasonExpired  = "expired"  // its token or connect proxy's expire_at passed
	ReasonKicked   = "kicked"   // by the server API
	ReasonShutdown = "shutdown" // the node shut down
	ReasonError    = "error"    // a protocol or write error
	ReasonNodeLost = "node_lost"
)

// Event is one webhook event. Client events (connect, disconnect,
// subscribe, unsubscribe, undelivered) carry Client and User (User is ""
// for an anonymous client); channel events (occupied, vacated) carry
// Channel only.
type Event struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	Time      time.Time `json:"time"`
	Node      string    `json:"node"`
	Client    string    `json:"client,omitempty"`
	User      *string   `json:"user,omitempty"`
	Transport string    `json:"transport,omitempty"`
	Channel   string    `json:"channel,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Offset    string    `json:"offset,omitempty"`
}

// SignatureHeader is the header that carries an event's signature.
const SignatureHeader = "Herald-Signature"

// Sign returns the Herald-Signature value of body, signed at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + mac(secret, ts, body)
}

func mac(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// MaxAge is how old a signature Verify accepts: an event replayed later
// than this is refused.
const MaxAge = 5 * time.Minute

// ErrSignature is returned by Verify for a missing, malformed, wrong or
// stale signature.
var ErrSignature = errors.New("webhook: bad signature")

// Verify checks header, the Herald-Signature of body, against secret at
// now: the HMAC must match (compared in constant time) and t be at most
// MaxAge old (and not more than MaxAge ahead, for clock skew).
func Verify(secret []byte, header string, body []byte, now time.Time) error {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return fmt.Errorf("%w: want t=<unix seconds>,v1=<hex>", ErrSignature)
	}
	if age := now.Sub(time.Unix(sec, 0)); age > MaxAge || age < -MaxAge {
		return fmt.Errorf("%w: signed %v ago", ErrSignature, age.Round(time.Second))
	}
	if !hmac.Equal([]byte(sig), []byte(mac(secret, ts, body))) {
		return fmt.Errorf("%w: it does not match the body", ErrSignature)
	}
	return nil
}
