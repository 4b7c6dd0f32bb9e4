package client_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// A subscriber and a publisher on one server. In an application the URL
// is the herald server's, such as "https://herald.example.com".
func Example() {
	srv, err := herald.New(herald.Config{})
	if err != nil {
		log.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Shutdown(context.Background())

	ctx := context.Background()
	c, err := client.Dial(ctx, hs.URL, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	sub, err := c.Subscribe(ctx, "news")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Publish(ctx, "news", map[string]string{"title": "hello"}, "headline"); err != nil {
		log.Fatal(err)
	}
	m, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(m.Channel, m.Event, string(m.Data))
	// Output: news headline {"title":"hello"}
}

// Resuming after an offset saved earlier: every message after it that
// history still holds comes first.
func ExampleSince() {
	srv, err := herald.New(herald.Config{})
	if err != nil {
		log.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Shutdown(context.Background())

	ctx := context.Background()
	c, err := client.Dial(ctx, hs.URL, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	saved, _ := c.Publish(ctx, "feed", "one", "")
	_, _ = c.Publish(ctx, "feed", "two", "")
	_, _ = c.Publish(ctx, "feed", "three", "")

	sub, err := c.Subscribe(ctx, "feed", client.Since(saved))
	if err != nil {
		log.Fatal(err)
	}
	for range 2 {
		m, _ := sub.Next(ctx)
		fmt.Println(string(m.Data))
	}
	// Output:
	// "two"
	// "three"
}
