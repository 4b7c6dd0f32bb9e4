// Package auth verifies herald's client tokens (JWT) and answers what a
// verified token lets its holder do.
//
// A token is signed with HS256 (a shared secret), RS256 (an RSA key) or
// ES256 (an ECDSA P-256 key). The algorithm a token names only chooses
// among the keys configured for that algorithm: a secret is never used for
// RS256 or ES256, a public key never as an HS256 secret, and "none" is
// never accepted, so no token can pick its own way to be trusted.
//
// Claims: sub (the user id), exp and nbf (checked), aud and iss (checked
// when Keys names an audience or an issuer), and the optional channels
// claim {"subscribe": [...], "publish": [...]}, whose patterns are exact
// channel names or prefixes ending in "*". A token without the channels
// claim restricts nothing; one with it allows only what it lists; one
// whose claim is anything else (null, a list, lists of other than strings,
// other keys) is refused.
package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald/internal/protocol"
)

// The algorithms herald accepts.
const (
	HS256 = "HS256"
	RS256 = "RS256"
	ES256 = "ES256"
)

// Keys are what a Verifier trusts; any combination may be set.
type Keys struct {
	// Secret verifies HS256 tokens.
	Secret []byte
	// PublicKeyPEM is an RSA public key (RS256) or an ECDSA P-256 public
	// key (ES256), PEM-encoded: "PUBLIC KEY", "RSA PUBLIC KEY" or a
	// "CERTIFICATE".
	PublicKeyPEM []byte
	// JWKS is a JSON Web Key Set whose RSA and P-256 keys verify RS256 and
	// ES256 tokens, chosen by the token's kid.
	JWKS []byte
	// Audience, when set, must be named by a token's aud (a string or a
	// list); Issuer, when set, must be its iss. Empty: not checked. Either
	// needs a key.
	Audience string
	Issuer   string
}

// Verifier checks tokens against its keys. It is immutable and safe for
// concurrent use.
type Verifier struct {
	secret  []byte
	pem     crypto.PublicKey // *rsa.PublicKey or *ecdsa.PublicKey; nil when unset
	jwks    []jose.JSONWebKey
	methods []string
	options []jwt.ParserOption // aud and iss, when checked
	// audience and issuer are Keys', for error messages.
	audience, issuer string
	now              func() time.Time
}

// New returns a Verifier for k, or an error naming what is wrong with a
// key. It returns a nil Verifier and no error when k holds no key.
func New(k Keys) (*Verifier, error) {
	v := &Verifier{secret: k.Secret, now: time.Now}
	if len(k.PublicKeyPEM) > 0 {
		key, err := parsePEM(k.PublicKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("token public key: %w", err)
		}
		v.pem = key
	}
	if len(k.JWKS) > 0 {
		keys, err := parseJWKS(k.JWKS)
		if err != nil {
			return nil, fmt.Errorf("token JWKS: %w", err)
		}
		v.jwks = keys
	}
	if len(v.secret) > 0 {
		v.methods = append(v.methods, HS256)
	}
	if v.hasKey(RS256) {
		v.methods = append(v.methods, RS256)
	}
	if v.hasKey(ES256) {
		v.methods = append(v.methods, ES256)
	}
	if len(v.methods) == 0 {
		if k.Audience != "" || k.Issuer != "" {
			return nil, errors.New("a token audience or issuer needs a token key (secret, public key or JWKS)")
		}
		return nil, nil
	}
	v.audience, v.issuer = k.Audience, k.Issuer
	if k.Audience != "" {
		v.options = append(v.options, jwt.WithAudience(k.Audience))
	}
	if k.Issuer != "" {
		v.options = append(v.options, jwt.WithIssuer(k.Issuer))
	}
	return v, nil
}

// WithClock returns a copy of v that reads the time from now; for tests.
func (v *Verifier) WithClock(now func() time.Time) *Verifier {
	c := *v
	c.now = now
	return &c
}

// Identity is what a verified token says about its holder.
type Identity struct {
	// User is the token's sub.
	User string
	// Expires is the token's exp; zero when it has none.
	Expires time.Time
	// restricted is set when the token carries a channels claim, which
	// then lists everything the holder may do.
	restricted bool
	subscribe  []string
	publish    []string
}

// CanSubscribe reports whether the token allows subscribing to channel
// (and reading its history and presence).
func (id *Identity) CanSubscribe(channel string) bool {
	return !id.restricted || matchAny(id.subscribe, channel)
}

// CanPublish reports whether the token allows publishing to channel.
func (id *Identity) CanPublish(channel string) bool {
	return !id.restricted || matchAny(id.publish, channel)
}

// Channels are the patterns of a token's channels claim.
type Channels struct {
	Subscribe []string `json:"subscribe,omitempty"`
	Publish   []string `json:"publish,omitempty"`
}

type claims struct {
	jwt.RegisteredClaims
	// Channels is the channels claim as it came: nil when absent, "null"
	// when null; parseChannels reads it.
	Channels json.RawMessage `json:"channels,omitempty"`
}

// Error is why a token was not accepted; its text is safe to show the
// client.
type Error struct{ Reason string }

func (e *Error) Error() string { return e.Reason }

// Verify checks token's signature, exp and nbf, and returns its Identity.
// Every failure is an *Error.
func (v *Verifier) Verify(token string) (*Identity, error) {
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, v.key,
		append([]jwt.ParserOption{jwt.WithValidMethods(v.methods), jwt.WithTimeFunc(v.now)}, v.options...)...,
	)
	missing := errors.Is(err, jwt.ErrTokenRequiredClaimMissing)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, &Error{"token expired"}
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return nil, &Error{"token not valid yet (nbf)"}
	case errors.Is(err, jwt.ErrTokenInvalidAudience), missing && v.audience != "" && len(c.Audience) == 0:
		return nil, &Error{fmt.Sprintf("token is not for this server: its audience (aud) must name %q", v.audience)}
	case errors.Is(err, jwt.ErrTokenInvalidIssuer), missing && v.issuer != "" && c.Issuer == "":
		return nil, &Error{fmt.Sprintf("token is from another issuer: its iss must be %q", v.issuer)}
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, &Error{"token signature is invalid"}
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return nil, &Error{"token cannot be verified: " + unwrapReason(err)}
	case err != nil:
		return nil, &Error{"token is malformed: " + unwrapReason(err)}
	}
	id := &Identity{User: c.Subject}
	if c.ExpiresAt != nil {
		id.Expires = c.ExpiresAt.Time
	}
	if c.Channels != nil {
		ch, err := parseChannels(c.Channels)
		if err != nil {
			return nil, err
		}
		id.restricted = true
		id.subscribe, id.publish = ch.Subscribe, ch.Publish
	}
	return id, nil
}

// parseChannels reads a channels claim that is present: an object whose
// only keys are subscribe and publish, each a list of channel patterns.
// Anything else is an *Error: a claim that cannot be read must not grant
// more, or less, than its issuer meant.
func parseChannels(raw json.RawMessage) (*Channels, error) {
	bad := &Error{`token has a malformed channels claim: want {"subscribe":[…],"publish":[…]}, lists of channel patterns`}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return nil, bad
	}
	var ch Channels
	for k, v := range fields {
		var list *[]string
		switch k {
		case "subscribe":
			list = &ch.Subscribe
		case "publish":
			list = &ch.Publish
		default:
			return nil, bad
		}
		var items []any
		if err := json.Unmarshal(v, &items); err != nil || items == nil {
			return nil, bad
		}
		for _, it := range items {
			p, ok := it.(string)
			if !ok {
				return nil, bad
			}
			if !ValidPattern(p) {
				return nil, &Error{fmt.Sprintf("token has a bad channel pattern %q in its channels claim: want a channel name or a prefix ending in *", p)}
			}
			*list = append(*list, p)
		}
	}
	return &ch, nil
}

// unwrapReason is the innermost message of a jwt error chain, which names
// the cause without the library's prefixes.
func unwrapReason(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+2:]
	}
	return msg
}

// key picks the key for t among those configured for its algorithm.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if alg == HS256 {
		return v.secret, nil // WithValidMethods admits HS256 only with a secret
	}
	kid, _ := t.Header["kid"].(string)
	if kid != "" {
		for _, k := range v.jwks {
			if k.KeyID == kid && fits(alg, k.Key) {
				return k.Key, nil
			}
		}
	}
	if v.pem != nil && fits(alg, v.pem) {
		return v.pem, nil
	}
	if kid == "" {
		var only any
		n := 0
		for _, k := range v.jwks {
			if fits(alg, k.Key) {
				only, n = k.Key, n+1
			}
		}
		if n == 1 {
			return only, nil
		}
	}
	return nil, fmt.Errorf("no %s key with kid %q", alg, kid)
}

func (v *Verifier) hasKey(alg string) bool {
	if v.pem != nil && fits(alg, v.pem) {
		return true
	}
	for _, k := range v.jwks {
		if fits(alg, k.Key) {
			return true
		}
	}
	return false
}

// fits reports whether key is of the kind alg verifies with.
func fits(alg string, key any) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return alg == RS256
	case *ecdsa.PublicKey:
		return alg == ES256 && k.Curve == elliptic.P256()
	}
	return false
}

// parsePEM reads one public key or certificate.
func parsePEM(b []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		return nil, fmt.Errorf("PEM block %q: want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE (never a private key)", block.Type)
	}
	if err != nil {
		return nil, err
	}
	if !fits(RS256, key) && !fits(ES256, key) {
		return nil, fmt.Errorf("key of type %T: want RSA or ECDSA P-256", key)
	}
	return key, nil
}

// parseJWKS reads a key set's RSA and P-256 public keys. Symmetric keys
// are refused: an HS256 secret belongs in Keys.Secret, not beside public
// keys.
func parseJWKS(b []byte) ([]jose.JSONWebKey, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, err
	}
	var out []jose.JSONWebKey
	for i, k := range set.Keys {
		if _, sym := k.Key.([]byte); sym {
			return nil, fmt.Errorf("key %d (kid %q) is symmetric: give an HS256 secret as the token secret", i, k.KeyID)
		}
		if !k.IsPublic() {
			k = k.Public()
		}
		if !fits(RS256, k.Key) && !fits(ES256, k.Key) {
			return nil, fmt.Errorf("key %d (kid %q) of type %T: want RSA or EC P-256", i, k.KeyID, k.Key)
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errors.New("no keys")
	}
	return out, nil
}

// ValidPattern reports whether p is a channel name, or a prefix of one
// ending in "*" ("*" alone matches every channel).
func ValidPattern(p string) bool {
	prefix, wild := strings.CutSuffix(p, "*")
	if wild && prefix == "" {
		return true
	}
	return protocol.ValidChannel(prefix)
}

// Match reports whether channel matches pattern.
func Match(pattern, channel string) bool {
	if prefix, wild := strings.CutSuffix(pattern, "*"); wild {
		return strings.HasPrefix(channel, prefix)
	}
	return pattern == channel
}

func matchAny(patterns []string, channel string) bool {
	for _, p := range patterns {
		if Match(p, channel) {
			return true
		}
	}
	return false
}

// Spec is what Mint puts in a token.
type Spec struct {
	User string
	// Channels, when not nil, becomes the channels claim.
	Channels *Channels
	// TTL sets exp that far from now (a negative TTL mints an expired
	// token, for tests); zero mints a token without exp.
	TTL time.Duration
}

// MintHS256 signs a token for s with secret; herald token uses it, and
// tests do.
func MintHS256(secret []byte, s Spec, now time.Time) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("mint token: no secret")
	}
	c := claims{RegisteredClaims: jwt.RegisteredClaims{Subject: s.User, IssuedAt: jwt.NewNumericDate(now)}}
	if s.Channels != nil {
		b, err := json.Marshal(s.Channels)
		if err != nil {
			return "", fmt.Errorf("mint token: %w", err)
		}
		c.Channels = b
	}
	if s.TTL != 0 {
		c.ExpiresAt = jwt.NewNumericDate(now.Add(s.TTL))
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return tok, nil
}

// Bearer returns the credentials of r's "Authorization: Bearer …" header,
// "" without one.
func Bearer(r *http.Request) string {
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(cred)
}

// Secret is a shared secret (an API key, an admin token) that compares in
// constant time, whatever the length of what it is compared with.
type Secret struct{ hash [sha256.Size]byte }

// NewSecret keeps s for comparisons.
func NewSecret(s string) Secret { return Secret{sha256.Sum256([]byte(s))} }

// Matches reports whether got is the secret.
func (s Secret) Matches(got string) bool {
	h := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(h[:], s.hash[:]) == 1
}
