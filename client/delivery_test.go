package client_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/heraldtest"
)

// Against a real server: a filtered subscription gets only what its
// filter matches, with the tags; a delta subscription's Next returns
// every version of a document whole, byte for byte, though the server
// sent all but the first as deltas; in a namespace with
// receipts, Next acknowledges the message it returned before, as the
// receipts API then shows.
func TestDeliveryOptionsAgainstServer(t *testing.T) {
	t.Parallel()
	_, hs := heraldtest.NewServer(t, herald.Config{Namespaces: map[string]herald.Namespace{"orders": {Receipts: true}}})
	ctx := ctxT(t)
	a, b := dial(t, hs.URL, nil), dial(t, hs.URL, nil)

	filtered, err := a.Subscribe(ctx, "prices", client.Filter(json.RawMessage(`{"tag":"sym","eq":"AAPL"}`)))
	if err != nil {
		t.Fatal(err)
	}
	for i, sym := range []string{"TSLA", "AAPL", "IBM", "AAPL"} {
		if _, err := b.Publish(ctx, "prices", map[string]int{"n": i}, "", client.WithTags(map[string]string{"sym": sym})); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{`{"n":1}`, `{"n":3}`} {
		m, err := filtered.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Data) != want || m.Tags["sym"] != "AAPL" {
			t.Fatalf("filtered subscription got %s with tags %v, want %s tagged AAPL", m.Data, m.Tags, want)
		}
	}

	deltas, err := a.Subscribe(ctx, "doc", client.Delta())
	if err != nil {
		t.Fatal(err)
	}
	// A second delta subscriber that sees the frames as they are sent.
	wire := heraldtest.Dial(t, heraldtest.WSURL(hs.URL, "/ws"))
	wire.MustOK(map[string]any{"op": "subscribe", "channel": "doc", "delta": "fossil"})
	doc := func(v int) string {
		return fmt.Sprintf(`{"body":%q,"version":%d,"note":"é %d"}`, strings.Repeat("lorem ipsum ", 300), v, v)
	}
	for v := range 5 {
		if _, err := b.Publish(ctx, "doc", json.RawMessage(doc(v)), ""); err != nil {
			t.Fatal(err)
		}
		m, err := deltas.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Data) != doc(v) {
			t.Fatalf("version %d came as %.60q…", v, m.Data)
		}
	}
	sent := 0
	for range 5 {
		if wire.Next()["delta"] == true {
			sent++
		}
	}
	if sent != 4 {
		t.Fatalf("%d of the 5 versions went as deltas, want every one after the first", sent)
	}

	orders, err := a.Subscribe(ctx, "orders:1")
	if err != nil {
		t.Fatal(err)
	}
	if !orders.Receipts() {
		t.Fatal("a subscription in a namespace with receipts does not know it")
	}
	off, err := b.Publish(ctx, "orders:1", "book", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := orders.Next(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, "orders:1", "pen", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := orders.Next(ctx); err != nil { // the handler of "book" returned
		t.Fatal(err)
	}
	heraldtest.WaitFor(t, heraldtest.Timeout, func() error {
		resp, err := http.Get(hs.URL + "/api/channels/orders:1/receipts?offset=" + off)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var r struct{ Acked, Pending []struct{ Client string } }
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return err
		}
		if len(r.Acked) != 1 || r.Acked[0].Client != a.ID() || len(r.Pending) != 0 {
			return fmt.Errorf("receipts of %s: %+v", off, r)
		}
		return nil
	})
}
