package herald_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/heraldtest"
)

// A collector registered on Server.Registerer is served on /metrics with
// herald's; with a Registerer of the caller's, Registerer returns it.
func TestRegisterer(t *testing.T) {
	t.Parallel()
	srv, hs := heraldtest.NewServer(t, herald.Config{})
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "beside_herald_total", Help: "A test counter."})
	srv.Registerer().MustRegister(c)
	c.Add(3)
	resp, err := http.Get(hs.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "\nbeside_herald_total 3\n") || !strings.Contains(string(b), "herald_connections") {
		t.Fatalf("/metrics lacks beside_herald_total 3 or herald's own:\n%s", b)
	}

	reg := prometheus.NewRegistry()
	own, _ := heraldtest.NewServer(t, herald.Config{Registerer: reg})
	if own.Registerer() != prometheus.Registerer(reg) {
		t.Fatal("Registerer is not Config.Registerer")
	}
}
