package herald_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
	"github.com/heraldhq/herald/internal/auth"
)

const tokenSecret = "test secret, not for production"

// mint signs a token for user with the test secret.
func mint(t *testing.T, user string, ttl time.Duration, ch *auth.Channels) string {
	t.Helper()
	tok, err := auth.MintHS256([]byte(tokenSecret), auth.Spec{User: user, TTL: ttl, Channels: ch}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func wsWithToken(base, tok string) string {
	return heraldtest.WSURL(base, "/ws") + "?token=" + url.QueryEscape(tok)
}

// Where a token is required, every client endpoint refuses a missing or
// bad one with 401 before the upgrade or the stream, and counts it.
func TestTokenRequired(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{TokenSecret: tokenSecret})
	before := metric(t, base, `herald_refusals_total{reason="unauthorized"}`)
	expired := mint(t, "ann", -time.Minute, nil)
	other, _ := auth.MintHS256([]byte("some other secret"), auth.Spec{User: "ann"}, time.Now())
	cases := []struct {
		name, url string
		header    http.Header
		msg       string
	}{
		{"ws, no token", heraldtest.WSURL(base, "/ws"), nil, "a token is required"},
		{"raw, no token", rawURL(base, "a"), nil, "a token is required"},
		{"ws, expired", wsWithToken(base, expired), nil, "token expired"},
		{"ws, other secret", heraldtest.WSURL(base, "/ws"), bearer(other), "token signature is invalid"},
		{"ws, garbage", wsWithToken(base, "not.a.token"), nil, "token is malformed"},
	}
	for _, c := range cases {
		status, body := dialStatusHeader(t, c.url, c.header)
		if status != http.StatusUnauthorized || !strings.Contains(body, `"code":"unauthorized"`) || !strings.Contains(body, c.msg) {
			t.Errorf("%s: %d %s, want 401 unauthorized saying %q", c.name, status, body, c.msg)
		}
	}
	resp, cancel := getSSE(t, nil, base+"/sse?channel=a", nil)
	defer cancel()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("SSE without a token: %s (WWW-Authenticate %q), want 401 with a challenge", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
	if got := metric(t, base, `herald_refusals_total{reason="unauthorized"}`) - before; got != float64(len(cases)+1) {
		t.Errorf("unauthorized refusals counted %v, want %d", got, len(cases)+1)
	}

	// A good token, by query or header, names the user.
	tok := mint(t, "ann", time.Hour, nil)
	for name, c := range map[string]*heraldtest.Client{
		"query":  heraldtest.Dial(t, wsWithToken(base, tok)),
		"header": heraldtest.DialHeader(t, heraldtest.WSURL(base, "/ws"), bearer(tok)),
	} {
		if c.Welcome["user"] != "ann" {
			t.Errorf("token by %s: welcome %v, want user ann", name, c.Welcome)
		}
	}
	s := openSSE(t, nil, base+"/sse?channel=a&token="+url.QueryEscape(tok), nil)
	s.Close()
}

func TestAnonymousAllowedBesideTokens(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{TokenSecret: tokenSecret, AllowAnonymous: true})
	if c := dial(t, base); c.Welcome["user"] != "" {
		t.Fatalf("anonymous welcome %v, want user \"\"", c.Welcome)
	}
	// A bad token is still refused: its holder believes it is someone.
	if status, _ := dialStatus(t, wsWithToken(base, "x.y.z")); status != http.StatusUnauthorized {
		t.Fatalf("bad token beside anonymous access: %d, want 401", status)
	}
}

func TestTokenWithoutKeyIsRefused(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	status, body := dialStatus(t, wsWithToken(base, mint(t, "ann", time.Hour, nil)))
	if status != http.StatusUnauthorized || !strings.Contains(body, "verifies no tokens") {
		t.Fatalf("token on a server without a key: %d %s, want 401", status, body)
	}
}

// The channels claim decides each command; what it does not list is
// forbidden and counted.
func TestTokenChannels(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{TokenSecret: tokenSecret})
	tok := mint(t, "ann", time.Hour, &auth.Channels{Subscribe: []string{"chat:*", "news"}, Publish: []string{"chat:*"}})
	c := heraldtest.Dial(t, wsWithToken(base, tok))
	before := metric(t, base, `herald_refusals_total{reason="forbidden"}`)

	c.MustOK(map[string]any{"op": "subscribe", "channel": "chat:lobby"})
	c.MustOK(map[string]any{"op": "subscribe", "channel": "news"})
	publish(t, c, "chat:lobby", "hi")
	forbidden := []map[string]any{
		{"op": "subscribe", "channel": "secret"},
		{"op": "history", "channel": "secret"},
		{"op": "presence", "channel": "newsroom"},
		{"op": "publish", "channel": "news", "data": 1},
		{"op": "publish", "channel": "other", "data": 1},
	}
	for _, cmd := range forbidden {
		r := c.Call(cmd, nil)
		if heraldtest.ErrorCode(r) != "forbidden" || !strings.Contains(errorMessage(r), "token does not allow") {
			t.Errorf("%v: %v, want forbidden by the token", cmd, r)
		}
	}
	if got := metric(t, base, `herald_refusals_total{reason="forbidden"}`) - before; got != float64(len(forbidden)) {
		t.Errorf("forbidden refusals counted %v, want %d", got, len(forbidden))
	}
	// SSE checks the same claim, before the stream starts.
	resp, cancel := getSSE(t, nil, base+"/sse?channel=news&channel=secret&token="+url.QueryEscape(tok), nil)
	defer cancel()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("SSE with a channel outside the token: %s, want 403", resp.Status)
	}
}

// A connection is closed with 1008 when its token expires, unless a
// refresh moved the expiry; the refreshed token's channels apply from then
// on, and a token for someone else is refused.
func TestTokenExpiryAndRefresh(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{TokenSecret: tokenSecret})
	// JWT times are whole seconds: 2 s leaves at least one.
	expiring := heraldtest.Dial(t, wsWithToken(base, mint(t, "ann", 2*time.Second, nil)))
	refreshed := heraldtest.Dial(t, wsWithToken(base, mint(t, "ann", 2*time.Second, nil)))
	before := metric(t, base, `herald_refusals_total{reason="token_expired"}`)

	if r := refreshed.Call(map[string]any{"op": "refresh", "token": mint(t, "bob", time.Hour, nil)}, nil); heraldtest.ErrorCode(r) != "forbidden" {
		t.Fatalf("refresh with another user's token: %v, want forbidden", r)
	}
	if r := refreshed.Call(map[string]any{"op": "refresh", "token": "garbage"}, nil); heraldtest.ErrorCode(r) != "unauthorized" {
		t.Fatalf("refresh with a bad token: %v, want unauthorized", r)
	}
	refreshed.MustOK(map[string]any{"op": "refresh", "token": mint(t, "ann", time.Hour, &auth.Channels{Subscribe: []string{"b"}})})

	start := time.Now()
	if code := expiring.Closed(); code != websocket.StatusPolicyViolation {
		t.Fatalf("expired connection closed with %v, want 1008", code)
	}
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("closed %v after the token expired", waited)
	}
	if got := metric(t, base, `herald_refusals_total{reason="token_expired"}`) - before; got != 1 {
		t.Errorf("token_expired counted %v, want 1", got)
	}
	// The refreshed connection outlived the first token, under the new
	// token's channels.
	if r := refreshed.Call(map[string]any{"op": "subscribe", "channel": "a"}, nil); heraldtest.ErrorCode(r) != "forbidden" {
		t.Fatalf("subscribe outside the refreshed token: %v, want forbidden", r)
	}
	refreshed.MustOK(map[string]any{"op": "subscribe", "channel": "b"})
}

func TestRefreshWithoutTokenKey(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{})
	r := dial(t, base).Call(map[string]any{"op": "refresh", "token": "a.b.c"}, nil)
	if heraldtest.ErrorCode(r) != "bad_request" {
		t.Fatalf("refresh on a server without tokens: %v, want bad_request", r)
	}
}

// An SSE stream ends when its token expires.
func TestSSEStreamEndsAtTokenExpiry(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{TokenSecret: tokenSecret})
	s := openSSE(t, nil, base+"/sse?channel=a&token="+url.QueryEscape(mint(t, "ann", 2*time.Second, nil)), nil)
	deadline := time.After(heraldtest.Timeout)
	for {
		select {
		case _, ok := <-s.events:
			if !ok {
				return // ended by the server
			}
		case <-deadline:
			t.Fatal("SSE stream still open after its token expired")
		}
	}
}

// RS256 and ES256 tokens verify against a configured public key; an HS256
// token signed with that public key's text does not.
func TestPublicKeyTokens(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	_, base := newServer(t, herald.Config{TokenPublicKey: pubPEM})

	good, _ := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"sub": "ann"}).SignedString(key)
	if c := heraldtest.Dial(t, wsWithToken(base, good)); c.Welcome["user"] != "ann" {
		t.Fatalf("ES256 token: welcome %v", c.Welcome)
	}
	confused, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "eve"}).SignedString(pubPEM)
	if status, _ := dialStatus(t, wsWithToken(base, confused)); status != http.StatusUnauthorized {
		t.Fatalf("HS256 token signed with the public key: %d, want 401", status)
	}
}

func TestBadTokenKeyFailsNew(t *testing.T) {
	t.Parallel()
	if _, err := herald.New(herald.Config{TokenPublicKey: []byte("not a key")}); err == nil || !strings.Contains(err.Error(), "token public key") {
		t.Fatalf("New with a bad public key: %v, want an error naming it", err)
	}
}

// signHS256 signs claims with the test secret as they are, for claims
// auth.MintHS256 would not write.
func signHS256(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(tokenSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// tokenRefusedEverywhere fails unless tok is refused with 401 naming
// reason over WebSocket and SSE, and as a refresh of a connection made
// with good (refresh answers unauthorized and keeps the old token).
func tokenRefusedEverywhere(t *testing.T, base, tok, good, reason string) {
	t.Helper()
	if status, body := dialStatus(t, wsWithToken(base, tok)); status != http.StatusUnauthorized || !strings.Contains(body, reason) {
		t.Errorf("WebSocket: %d %s, want 401 naming %q", status, body, reason)
	}
	resp, cancel := getSSE(t, nil, base+"/sse?channel=a&token="+url.QueryEscape(tok), nil)
	var body []byte
	if resp.StatusCode != http.StatusOK { // a stream would not end
		body, _ = io.ReadAll(resp.Body)
	}
	cancel()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), reason) {
		t.Errorf("SSE: %s %s, want 401 naming %q", resp.Status, body, reason)
	}
	c := heraldtest.Dial(t, wsWithToken(base, good))
	if r := c.Call(map[string]any{"op": "refresh", "token": tok}, nil); heraldtest.ErrorCode(r) != "unauthorized" || !strings.Contains(errorMessage(r), reason) {
		t.Errorf("refresh: %v, want unauthorized naming %q", r, reason)
	}
}

// A channels claim that is not {"subscribe":[…],"publish":[…]} is refused
// rather than read as something: null used to grant everything while {}
// grants nothing. Without the claim a token restricts nothing.
func TestMalformedChannelsClaimRefused(t *testing.T) {
	t.Parallel()
	_, base := newServer(t, herald.Config{TokenSecret: tokenSecret})
	good := mint(t, "ann", time.Hour, nil)
	for _, claim := range []string{
		`null`, `"*"`, `["*"]`, `1`, `true`,
		`{"subscribe":null}`, `{"publish":null}`, `{"subscribe":"*"}`, `{"subscribe":[1]}`,
		`{"subscribe":[null]}`, `{"publish":{"*":true}}`, `{"subscribe":["a"],"subscibe":["*"]}`,
	} {
		t.Run(claim, func(t *testing.T) {
			var v any
			if err := json.Unmarshal([]byte(claim), &v); err != nil {
				t.Fatal(err)
			}
			tok := signHS256(t, jwt.MapClaims{"sub": "ann", "channels": v})
			tokenRefusedEverywhere(t, base, tok, good, "channels claim")
		})
	}
	if c := heraldtest.Dial(t, wsWithToken(base, signHS256(t, jwt.MapClaims{"sub": "ann"}))); c.Welcome["user"] != "ann" {
		t.Fatalf("token without a channels claim: %v", c.Welcome)
	}
	c := heraldtest.Dial(t, wsWithToken(base, signHS256(t, jwt.MapClaims{"sub": "ann", "channels": map[string]any{}})))
	if r := c.Call(map[string]any{"op": "subscribe", "channel": "a"}, nil); heraldtest.ErrorCode(r) != "forbidden" {
		t.Fatalf("subscribe with channels {}: %v, want forbidden", r)
	}
}

// With TokenAudience and TokenIssuer set, a token from the same key set
// issued for another service, or by another issuer, opens nothing.
func TestTokenAudienceAndIssuer(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256"}}})
	if err != nil {
		t.Fatal(err)
	}
	const aud, iss = "herald.example", "https://id.example"
	_, base := newServer(t, herald.Config{TokenJWKS: jwks, TokenAudience: aud, TokenIssuer: iss})
	sign := func(claims jwt.MapClaims) string {
		claims["sub"] = "ann"
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
		tok.Header["kid"] = "k1"
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := sign(jwt.MapClaims{"aud": aud, "iss": iss})
	for name, tok := range map[string]string{
		"aud as a list": sign(jwt.MapClaims{"aud": []string{"other.example", aud}, "iss": iss}),
		"aud and iss":   good,
	} {
		if c := heraldtest.Dial(t, wsWithToken(base, tok)); c.Welcome["user"] != "ann" {
			t.Fatalf("%s: welcome %v", name, c.Welcome)
		}
		openSSE(t, nil, base+"/sse?channel=a&token="+url.QueryEscape(tok), nil).Close()
		heraldtest.Dial(t, wsWithToken(base, good)).MustOK(map[string]any{"op": "refresh", "token": tok})
	}
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		reason string
	}{
		{"another service's audience", jwt.MapClaims{"aud": "billing.example", "iss": iss}, "audience"},
		{"no audience", jwt.MapClaims{"iss": iss}, "audience"},
		{"another issuer", jwt.MapClaims{"aud": aud, "iss": "https://other.example"}, "issuer"},
		{"no issuer", jwt.MapClaims{"aud": aud}, "issuer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tokenRefusedEverywhere(t, base, sign(tc.claims), good, tc.reason)
		})
	}
}
