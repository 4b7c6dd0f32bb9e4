package webhook_test

import (
	"errors"
	"testing"
	"time"

	"github.com/heraldhq/herald/webhook"
)

func TestSignAndVerify(t *testing.T) {
	t.Parallel()
	secret := []byte("s3cret")
	body := []byte(`{"id":"e1","type":"connect"}`)
	at := time.Unix(1_800_000_000, 0)
	h := webhook.Sign(secret, at, body)
	if err := webhook.Verify(secret, h, body, at.Add(time.Minute)); err != nil {
		t.Fatalf("a fresh signature: %v", err)
	}
	for name, tc := range map[string]struct {
		secret []byte
		header string
		body   []byte
		now    time.Time
	}{
		"other secret":      {[]byte("other"), h, body, at},
		"changed body":      {secret, h, []byte(`{"id":"e2","type":"connect"}`), at},
		"too old":           {secret, h, body, at.Add(webhook.MaxAge + time.Second)},
		"from the future":   {secret, h, body, at.Add(-webhook.MaxAge - time.Second)},
		"no header":         {secret, "", body, at},
		"no v1":             {secret, "t=1800000000", body, at},
		"t not a number":    {secret, "t=soon,v1=00", body, at},
		"another timestamp": {secret, "t=1800000001," + h[len("t=1800000000,"):], body, at},
	} {
		if err := webhook.Verify(tc.secret, tc.header, tc.body, tc.now); !errors.Is(err, webhook.ErrSignature) {
			t.Errorf("%s: %v, want ErrSignature", name, err)
		}
	}
}
