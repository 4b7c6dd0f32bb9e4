package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald/internal/auth"
)

var secret = []byte("a secret of the test, long enough")

func verifier(t *testing.T, k auth.Keys) *auth.Verifier {
	t.Helper()
	v, err := auth.New(k)
	if err != nil {
		t.Fatal(err)
	}
	if v == nil {
		t.Fatal("no verifier for configured keys")
	}
	return v
}

func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pemOf(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestNoKeysNoVerifier(t *testing.T) {
	v, err := auth.New(auth.Keys{})
	if v != nil || err != nil {
		t.Fatalf("New(no keys) = %v, %v; want nil, nil", v, err)
	}
}

func TestHS256(t *testing.T) {
	v := verifier(t, auth.Keys{Secret: secret})
	now := time.Now()
	tests := []struct {
		name   string
		claims jwt.MapClaims
		key    []byte
		err    string
	}{
		{"valid", jwt.MapClaims{"sub": "ann", "exp": now.Add(time.Hour).Unix()}, secret, ""},
		{"no exp", jwt.MapClaims{"sub": "ann"}, secret, ""},
		{"expired", jwt.MapClaims{"sub": "ann", "exp": now.Add(-time.Minute).Unix()}, secret, "token expired"},
		{"not yet", jwt.MapClaims{"sub": "ann", "nbf": now.Add(time.Hour).Unix()}, secret, "token not valid yet (nbf)"},
		{"other secret", jwt.MapClaims{"sub": "ann"}, []byte("another secret entirely"), "token signature is invalid"},
		{"numeric sub", jwt.MapClaims{"sub": 7}, secret, "token is malformed"},
		{"bad pattern", jwt.MapClaims{"sub": "ann", "channels": map[string]any{"subscribe": []string{"a*b*"}}}, secret, "bad channel pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Verify(sign(t, jwt.SigningMethodHS256, tt.key, tt.claims, ""))
			if tt.err == "" {
				if err != nil || id.User != "ann" {
					t.Fatalf("Verify = %+v, %v; want user ann", id, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Verify error %v, want one containing %q", err, tt.err)
			}
			if _, ok := err.(*auth.Error); !ok {
				t.Fatalf("error %T is not an *auth.Error", err)
			}
		})
	}
}

func TestExpiresAndClock(t *testing.T) {
	v := verifier(t, auth.Keys{Secret: secret})
	exp := time.Now().Add(time.Minute).Truncate(time.Second)
	tok := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "ann", "exp": exp.Unix()}, "")
	id, err := v.Verify(tok)
	if err != nil || !id.Expires.Equal(exp) {
		t.Fatalf("Verify = %+v, %v; want Expires %v", id, err, exp)
	}
	later := v.WithClock(func() time.Time { return exp.Add(time.Second) })
	if _, err := later.Verify(tok); err == nil || err.Error() != "token expired" {
		t.Fatalf("after exp: %v, want token expired", err)
	}
}

// No token chooses its own trust: alg none, HS256 signed with the public
// key's bytes, and a key of the wrong kind are all refused.
func TestAlgorithmConfusion(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pemOf(t, &rsaKey.PublicKey)
	onlyRSA := verifier(t, auth.Keys{PublicKeyPEM: pubPEM})
	both := verifier(t, auth.Keys{PublicKeyPEM: pubPEM, Secret: secret})

	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "eve"}, "")
	hsWithPub := sign(t, jwt.SigningMethodHS256, pubPEM, jwt.MapClaims{"sub": "eve"}, "")
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	esOther := sign(t, jwt.SigningMethodES256, ecKey, jwt.MapClaims{"sub": "eve"}, "")
	rs384 := sign(t, jwt.SigningMethodRS384, rsaKey, jwt.MapClaims{"sub": "eve"}, "")
	for name, tok := range map[string]string{"none": none, "HS256 with the public key": hsWithPub, "ES256 without an EC key": esOther, "RS384": rs384} {
		for vname, v := range map[string]*auth.Verifier{"public key only": onlyRSA, "public key and secret": both} {
			if id, err := v.Verify(tok); err == nil {
				t.Errorf("%s accepted by %s verifier: %+v", name, vname, id)
			}
		}
	}
	good := sign(t, jwt.SigningMethodRS256, rsaKey, jwt.MapClaims{"sub": "ann"}, "")
	if id, err := onlyRSA.Verify(good); err != nil || id.User != "ann" {
		t.Fatalf("RS256 with the configured key: %+v, %v", id, err)
	}
}

func TestES256FromJWKSByKid(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &k1.PublicKey, KeyID: "one", Algorithm: "ES256"},
		{Key: k2, KeyID: "two"}, // a private key in the file: only its public half is used
		{Key: &rsaKey.PublicKey, KeyID: "rsa"},
	}}
	raw, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	v := verifier(t, auth.Keys{JWKS: raw})
	for kid, key := range map[string]*ecdsa.PrivateKey{"one": k1, "two": k2} {
		if id, err := v.Verify(sign(t, jwt.SigningMethodES256, key, jwt.MapClaims{"sub": kid}, kid)); err != nil || id.User != kid {
			t.Errorf("ES256 kid %s: %+v, %v", kid, id, err)
		}
	}
	if id, err := v.Verify(sign(t, jwt.SigningMethodRS256, rsaKey, jwt.MapClaims{"sub": "r"}, "rsa")); err != nil || id.User != "r" {
		t.Errorf("RS256 kid rsa: %+v, %v", id, err)
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, k1, jwt.MapClaims{"sub": "x"}, "two")); err == nil {
		t.Error("a token signed by key one under kid two was accepted")
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, k1, jwt.MapClaims{"sub": "x"}, "")); err == nil {
		t.Error("ES256 without kid among two EC keys was accepted")
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, k1, jwt.MapClaims{"sub": "x"}, "rsa")); err == nil {
		t.Error("ES256 naming the RSA key's kid was accepted")
	}
}

func TestBadKeys(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	sym, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: []byte("shh"), KeyID: "s"}}})
	priv, _ := x509.MarshalECPrivateKey(ecKey)
	tests := map[string]auth.Keys{
		"not PEM":            {PublicKeyPEM: []byte("hello")},
		"private key PEM":    {PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: priv})},
		"P-384 key":          {PublicKeyPEM: pemOf(t, &ecKey.PublicKey)},
		"JWKS not JSON":      {JWKS: []byte("{")},
		"JWKS symmetric key": {JWKS: sym},
		"JWKS empty":         {JWKS: []byte(`{"keys":[]}`)},
	}
	for name, k := range tests {
		if v, err := auth.New(k); err == nil {
			t.Errorf("%s: New = %v, want an error", name, v)
		}
	}
}

func TestChannelsClaim(t *testing.T) {
	v := verifier(t, auth.Keys{Secret: secret})
	tok, err := auth.MintHS256(secret, auth.Spec{User: "ann", TTL: time.Minute, Channels: &auth.Channels{
		Subscribe: []string{"chat:*", "news"},
		Publish:   []string{"chat:*"},
	}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ch       string
		sub, pub bool
	}{
		{"chat:a", true, true}, {"chat:", true, true}, {"news", true, false},
		{"newsroom", false, false}, {"chat", false, false}, {"other", false, false},
	} {
		if id.CanSubscribe(c.ch) != c.sub || id.CanPublish(c.ch) != c.pub {
			t.Errorf("%s: subscribe %v publish %v, want %v %v", c.ch, id.CanSubscribe(c.ch), id.CanPublish(c.ch), c.sub, c.pub)
		}
	}
	open, err := auth.MintHS256(secret, auth.Spec{User: "bob"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id, err = v.Verify(open)
	if err != nil || !id.CanSubscribe("any") || !id.CanPublish("any") || !id.Expires.IsZero() {
		t.Fatalf("token without channels claim or exp: %+v, %v; want everything allowed, no expiry", id, err)
	}
}

// FuzzVerify feeds arbitrary text to an HS256 verifier: it must never
// panic, and whatever it accepts must carry a valid HMAC-SHA256 signature
// by the secret over its first two parts, checked here independently.
func FuzzVerify(f *testing.F) {
	v, err := auth.New(auth.Keys{Secret: secret})
	if err != nil {
		f.Fatal(err)
	}
	good, _ := auth.MintHS256(secret, auth.Spec{User: "ann", Channels: &auth.Channels{Subscribe: []string{"a*"}}}, time.Unix(1700000000, 0))
	f.Add(good)
	f.Add(good[:len(good)-2])
	f.Add("")
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJldmUifQ.")
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := v.Verify(tok)
		if err != nil {
			if _, ok := err.(*auth.Error); !ok {
				t.Fatalf("error %T is not an *auth.Error", err)
			}
			return
		}
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted %q with %d parts", tok, len(parts))
		}
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(parts[0] + "." + parts[1]))
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
			t.Fatalf("accepted %q (user %q) without a valid signature", tok, id.User)
		}
	})
}

// A channels claim is an object of two lists of patterns, or it is
// refused; absent, it restricts nothing.
func TestChannelsClaimShape(t *testing.T) {
	t.Parallel()
	v := verifier(t, auth.Keys{Secret: secret})
	for claim, want := range map[string]string{
		`{}`:                                    "",
		`{"subscribe":[],"publish":[]}`:         "",
		`{"subscribe":["a*"]}`:                  "",
		`null`:                                  "malformed channels claim",
		`[]`:                                    "malformed channels claim",
		`"*"`:                                   "malformed channels claim",
		`{"subscribe":null}`:                    "malformed channels claim",
		`{"subscribe":"a"}`:                     "malformed channels claim",
		`{"publish":[1]}`:                       "malformed channels claim",
		`{"publish":["a",null]}`:                "malformed channels claim",
		`{"subscribe":["a"],"Subscribe":["*"]}`: "malformed channels claim",
		`{"subscribe":["a b"]}`:                 "bad channel pattern",
	} {
		var c any
		if err := json.Unmarshal([]byte(claim), &c); err != nil {
			t.Fatal(err)
		}
		id, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "ann", "channels": c}, ""))
		switch {
		case want == "" && (err != nil || id.CanSubscribe("b") || id.CanPublish("b")):
			t.Errorf("channels %s: %+v, %v; want accepted, allowing nothing on b", claim, id, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("channels %s: %+v, %v; want refused with %q", claim, id, err, want)
		}
	}
}

// Audience and Issuer are required of every token once set, through the
// jwt parser's own checks.
func TestAudienceAndIssuer(t *testing.T) {
	t.Parallel()
	v := verifier(t, auth.Keys{Secret: secret, Audience: "herald", Issuer: "https://id.example"})
	for _, tc := range []struct {
		claims jwt.MapClaims
		want   string
	}{
		{jwt.MapClaims{"aud": "herald", "iss": "https://id.example"}, ""},
		{jwt.MapClaims{"aud": []string{"mail", "herald"}, "iss": "https://id.example"}, ""},
		{jwt.MapClaims{"aud": "mail", "iss": "https://id.example"}, "audience"},
		{jwt.MapClaims{"aud": []string{"mail"}, "iss": "https://id.example"}, "audience"},
		{jwt.MapClaims{"iss": "https://id.example"}, "audience"},
		{jwt.MapClaims{"aud": "herald", "iss": "https://evil.example"}, "iss"},
		{jwt.MapClaims{"aud": "herald"}, "iss"},
	} {
		tc.claims["sub"] = "ann"
		_, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, tc.claims, ""))
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.claims, err, tc.want)
		}
	}
	// Without them, aud and iss are not looked at.
	if _, err := verifier(t, auth.Keys{Secret: secret}).Verify(sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "ann", "aud": "mail", "iss": "x"}, "")); err != nil {
		t.Errorf("aud and iss unchecked: %v", err)
	}
	if _, err := auth.New(auth.Keys{Audience: "herald"}); err == nil {
		t.Error("an audience without a key was accepted")
	}
}
