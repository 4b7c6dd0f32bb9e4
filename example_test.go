package herald_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// Mount herald's endpoints in an application's own mux, beside its routes.
func ExampleServer_mount() {
	rt, err := herald.New(herald.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Shutdown(context.Background())

	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/hello", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "hello from the app")
	})
	mux.Handle("GET /ws", rt.WebSocketHandler())
	mux.Handle("GET /ws/{channel}", rt.RawHandler())
	mux.Handle("GET /herald.js", rt.SDKHandler())

	app := httptest.NewServer(mux)
	defer app.Close()
	resp, err := http.Get(app.URL + "/api/hello")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	fmt.Println(resp.Status)
	// Output: 200 OK
}

// Publish from the application; the offset identifies the message in its
// channel.
func ExampleServer_Publish() {
	rt, err := herald.New(herald.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Shutdown(context.Background())

	off, err := rt.Publish(context.Background(), "news", map[string]string{"title": "hello"}, herald.WithEvent("headline"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(off != "")
	// Output: true
}

// Name users with the Connect hook (an application would read its own
// session cookie there) and refuse publishes with AuthorizePublish: the
// client gets the error's code and message.
func ExampleHooks() {
	cfg := herald.Config{Hooks: herald.Hooks{
		Connect: func(_ context.Context, req herald.ConnectRequest) (herald.ConnectResult, error) {
			return herald.ConnectResult{User: req.Request.URL.Query().Get("user")}, nil
		},
		AuthorizePublish: func(_ context.Context, c herald.Client, channel string, p *herald.Publication) error {
			if strings.HasPrefix(channel, "admin:") && c.User != "admin" {
				return herald.Errorf(herald.CodeForbidden, "admins only")
			}
			return nil
		},
	}}
	rt, err := herald.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Shutdown(context.Background())
	srv := httptest.NewServer(rt)
	defer srv.Close()

	ctx := context.Background()
	for _, user := range []string{"ann", "admin"} {
		c, err := client.Dial(ctx, srv.URL+"/ws?user="+user, nil)
		if err != nil {
			log.Fatal(err)
		}
		_, err = c.Publish(ctx, "admin:notes", "restart at noon", "")
		fmt.Println(user, err)
		_ = c.Close()
	}
	// Output:
	// ann herald: forbidden: admins only
	// admin <nil>
}
