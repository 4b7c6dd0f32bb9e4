package nats_test

import (
	"context"
	"encoding/base64"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/nats"
)

// A message's tags and key ride in headers of their own only when set: a
// message without them is stored, and republished, as before they
// existed. Their values hold no line breaks whatever the tags hold.
func TestTagsAndKeyHeadersOnlyWhenSet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*brokertest.Timeout)
	defer cancel()
	prefix := newPrefix(t)
	b := startBroker(t, nats.Config{URL: serverURL(), Prefix: prefix})
	stream, err := jetStream(t).Stream(ctx, b.StreamName())
	if err != nil {
		t.Fatal(err)
	}
	subject := prefix + ".msg." + base64.RawURLEncoding.EncodeToString([]byte("c"))
	tests := []struct {
		name  string
		p     broker.Publication
		extra []string // headers besides the ones every message has
	}{
		{"plain", broker.Publication{}, nil},
		{"empty tags", broker.Publication{Tags: map[string]string{}}, nil},
		{"tagged", broker.Publication{Tags: map[string]string{"line\r\nbreak": "a\nb", "ü": "=:&%"}}, []string{"Herald-Tags"}},
		{"keyed", broker.Publication{Key: "k\r\ney"}, []string{"Herald-Key"}},
	}
	for _, tt := range tests {
		tt.p.Data = []byte(`"` + tt.name + `"`)
		off, err := b.Publish(ctx, "c", tt.p, broker.HistoryOptions{Size: 10})
		if err != nil {
			t.Fatalf("%s: Publish: %v", tt.name, err)
		}
		raw, err := stream.GetMsg(ctx, off.Seq)
		if err != nil || raw.Subject != subject {
			t.Fatalf("%s: stored message %d: %+v, %v", tt.name, off.Seq, raw, err)
		}
		want := append([]string{"Herald-Epoch", "Herald-N", "Herald-Prev", "Herald-Size", "Herald-Time",
			jetstream.ExpectedLastSubjSeqHeader}, tt.extra...)
		slices.Sort(want)
		if got := slices.Sorted(maps.Keys(raw.Header)); !slices.Equal(got, want) {
			t.Errorf("%s: headers %q, want %q", tt.name, got, want)
		}
		for _, k := range tt.extra {
			if v := raw.Header.Get(k); strings.ContainsAny(v, "\r\n") {
				t.Errorf("%s: header %s = %q holds a line break", tt.name, k, v)
			}
		}
	}
}
