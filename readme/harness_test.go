//go:build unix

package readme_test

import (
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// The quick start's server is ready only when the herald on its port is
// the one the line started: another herald there (another run of this
// test, a server left running) refuses this run's API key, and must not
// be taken for it.
func TestQuickStartReadyOnlyForItsOwnServer(t *testing.T) {
	t.Parallel()
	_, other := heraldtest.NewServer(t, herald.Config{APIKey: "another run's key"})
	h := &harness{base: other.URL, apiKey: newAPIKey(t)}
	if err := h.quickStartReady(); err == nil {
		t.Fatal("a herald started with another API key passed for the quick start's server")
	}
	_, ours := heraldtest.NewServer(t, herald.Config{APIKey: h.apiKey})
	h.base = ours.URL
	if err := h.quickStartReady(); err != nil {
		t.Fatalf("the quick start's own server: %v", err)
	}
	if other := newAPIKey(t); other == h.apiKey {
		t.Fatalf("two runs got the same API key %q", other)
	}
}
