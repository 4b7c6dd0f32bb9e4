package loadtest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// serverGauges are the /metrics samples the idle scenario reads before and
// after dialling, to split the memory a connection costs into its parts.
var serverGauges = []string{
	"herald_connections", "herald_subscriptions", "go_goroutines",
	"go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes",
}

// idleResult is the idle scenario's JSON line.
type idleResult struct {
	Scenario        string            `json:"scenario"`
	URL             string            `json:"url"`
	Proto           string            `json:"proto"`
	Conns           int               `json:"conns"`
	Subscribed      int               `json:"subscribed"`
	Errors          int64             `json:"errors"`
	ErrorKinds      map[string]string `json:"error_kinds,omitempty"`
	DialSeconds     float64           `json:"dial_seconds"`
	ConnectRate     float64           `json:"connect_rate"`
	PID             int               `json:"pid,omitempty"`
	RSSBeforeKiB    int64             `json:"rss_before_kib,omitempty"`
	RSSAfterKiB     int64             `json:"rss_after_kib,omitempty"`
	RSSEndKiB       int64             `json:"rss_end_kib,omitempty"`
	SettleSeconds   float64           `json:"settle_seconds,omitempty"`
	Settled         bool              `json:"settled,omitempty"`
	MemPerConnKiB   float64           `json:"mem_per_conn_kib,omitempty"`
	HeapPerConnKiB  float64           `json:"heap_per_conn_kib,omitempty"`
	StackPerConnKiB float64           `json:"stack_per_conn_kib,omitempty"`
	GoroutinesPer   float64           `json:"goroutines_per_conn,omitempty"`
	ServerConns     float64           `json:"server_conns,omitempty"`
	ServerSubs      float64           `json:"server_subscriptions,omitempty"`
	HoldSeconds     float64           `json:"hold_seconds"`
	Dropped         int64             `json:"dropped"`
	ClientRSSKiB    int64             `json:"client_rss_kib,omitempty"`
	DialCPU         cpuUse            `json:"dial_cpu"`
}

func runIdle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald bench idle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cm common
	cm.register(fs, "idle")
	n := fs.Int("n", 10000, "connections to open")
	hold := fs.Duration("hold", 10*time.Second, "how long to hold them once dialled")
	pid := fs.Int("pid", 0, "the server's process id: its RSS gives memory per connection (0: not measured)")
	settleMax := fs.Duration("settle", 30*time.Second, "longest wait for the server's RSS to stop growing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench idle: unexpected argument %q", fs.Arg(0))
	}
	if *n < 1 {
		return errors.New("bench idle: -n must be at least 1")
	}
	t, err := cm.target()
	if err != nil {
		return err
	}
	res := idleResult{Scenario: "idle", URL: t.subscriberURL().String(), Proto: t.proto, Conns: *n, PID: *pid}

	gBefore := scrape(ctx, t.metrics, serverGauges...)
	if *pid > 0 {
		v, _, _, err := settleRSS(ctx, *pid, 100*time.Millisecond, 3, 5*time.Second)
		if err != nil {
			return fmt.Errorf("bench idle: %w", err)
		}
		res.RSSBeforeKiB = v
	}

	// Dial.
	var (
		mu    sync.Mutex
		conns = make([]*wsConn, 0, *n)
		errs  errorLog
	)
	cpu0 := sampleCPU(*pid, nil, nil)
	start := time.Now()
	stop := make(chan struct{})
	pw := progress(stderr, time.Second, stop, func() string {
		mu.Lock()
		k := len(conns)
		mu.Unlock()
		return fmt.Sprintf("idle: subscribed %d/%d, errors %d, %.0f conns/s", k, *n, errs.n.Load(), float64(k)/time.Since(start).Seconds())
	})
	dialAll(ctx, t, *n, cm.concurrency, 1024, cm.dialTimeout, &errs, func(c *wsConn) {
		c.detach()
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	})
	close(stop)
	pw.Wait()
	dialDur := time.Since(start)
	res.DialCPU = cpuBetween(cpu0, sampleCPU(*pid, nil, nil))
	res.Subscribed = len(conns)
	res.DialSeconds = round(dialDur.Seconds(), 3)
	res.ConnectRate = round(float64(len(conns))/dialDur.Seconds(), 1)
	fmt.Fprintf(stderr, "idle: %d subscribed in %v (%.0f conns/s), %d errors\n", len(conns), dialDur.Round(time.Millisecond), res.ConnectRate, errs.n.Load())
	defer func() {
		for _, c := range conns {
			c.close()
		}
	}()

	// Hold: one sweeper answers pings and notices dropped connections
	// while the server's memory settles.
	holdStart := time.Now()
	sw := newSweeper(conns, &errs)
	swStop := make(chan struct{})
	var swWG sync.WaitGroup
	swWG.Add(1)
	go func() { defer swWG.Done(); sw.run(swStop) }()

	if *pid > 0 && len(conns) > 0 {
		v, waited, settled, err := settleRSS(ctx, *pid, 200*time.Millisecond, 5, *settleMax)
		if err != nil {
			close(swStop)
			swWG.Wait()
			return fmt.Errorf("bench idle: %w", err)
		}
		res.RSSAfterKiB, res.SettleSeconds, res.Settled = v, round(waited.Seconds(), 2), settled
		res.MemPerConnKiB = round(float64(v-res.RSSBeforeKiB)/float64(len(conns)), 2)
		fmt.Fprintf(stderr, "idle: server RSS %d KiB -> %d KiB (settled=%v after %v): %.2f KiB per connection\n",
			res.RSSBeforeKiB, v, settled, waited.Round(time.Millisecond), res.MemPerConnKiB)
	}
	gAfter := scrape(ctx, t.metrics, serverGauges...)
	if len(conns) > 0 && len(gAfter) > 0 {
		per := func(name string, unit float64) float64 {
			return round((gAfter[name]-gBefore[name])/unit/float64(len(conns)), 2)
		}
		res.HeapPerConnKiB = per("go_memstats_heap_inuse_bytes", 1024)
		res.StackPerConnKiB = per("go_memstats_stack_inuse_bytes", 1024)
		res.GoroutinesPer = per("go_goroutines", 1)
		res.ServerConns, res.ServerSubs = gAfter["herald_connections"], gAfter["herald_subscriptions"]
	}

	left := time.Until(holdStart.Add(*hold))
	ph := progress(stderr, 2*time.Second, swStop, func() string {
		return fmt.Sprintf("idle: holding %d connections, dropped %d, %v left", len(conns)-int(sw.dropped.Load()), sw.dropped.Load(), time.Until(holdStart.Add(*hold)).Round(time.Second))
	})
	if left > 0 && len(conns) > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(left):
		}
	}
	close(swStop)
	swWG.Wait()
	ph.Wait()
	sw.sweep() // a last look before closing
	res.HoldSeconds = round(time.Since(holdStart).Seconds(), 2)
	res.Dropped = sw.dropped.Load()
	if *pid > 0 {
		if v, err := rssKiB(*pid); err == nil {
			res.RSSEndKiB = v
		}
	}
	if v, err := rssKiB(os.Getpid()); err == nil {
		res.ClientRSSKiB = v
	}
	res.Errors = errs.n.Load()
	res.ErrorKinds = errs.summary()

	rows := []row{
		{"connections", fmt.Sprintf("%d subscribed of %d (%s)", res.Subscribed, res.Conns, res.Proto)},
		{"connect rate", fmt.Sprintf("%.0f conns/s (%.2fs)", res.ConnectRate, res.DialSeconds)},
		{"CPU while dialling", cpuText(res.DialCPU)},
		{"errors", strconv.FormatInt(res.Errors, 10)},
		{"dropped while held", fmt.Sprintf("%d in %.1fs", res.Dropped, res.HoldSeconds)},
	}
	if *pid > 0 {
		rows = append(rows,
			row{"server RSS", fmt.Sprintf("%d KiB before, %d KiB subscribed (settled=%v in %.1fs), %d KiB at end", res.RSSBeforeKiB, res.RSSAfterKiB, res.Settled, res.SettleSeconds, res.RSSEndKiB)},
			row{"memory per connection", fmt.Sprintf("%.2f KiB", res.MemPerConnKiB)},
		)
	}
	if len(gAfter) > 0 {
		rows = append(rows, row{"per connection (Go runtime)", fmt.Sprintf("heap %.2f KiB, stack %.2f KiB, %.2f goroutines", res.HeapPerConnKiB, res.StackPerConnKiB, res.GoroutinesPer)})
	}
	kinds := make([]string, 0, len(res.ErrorKinds))
	for k := range res.ErrorKinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		rows = append(rows, row{"errors: " + k, res.ErrorKinds[k]})
	}
	if err := report(stdout, "herald bench idle", rows, res); err != nil {
		return err
	}
	if res.Subscribed == 0 {
		return errors.New("bench idle: no connection could subscribe")
	}
	return ctx.Err()
}

// sweeper watches idle connections from one goroutine: it drains what
// each socket received without blocking, answers pings, and counts the
// connections the server closed.
type sweeper struct {
	conns   []*wsConn
	gone    []bool
	errs    *errorLog
	buf     []byte
	dropped atomic.Int64
}

func newSweeper(conns []*wsConn, errs *errorLog) *sweeper {
	return &sweeper{conns: conns, gone: make([]bool, len(conns)), errs: errs, buf: make([]byte, 4096)}
}

func (s *sweeper) run(stop <-chan struct{}) {
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
			s.sweep()
		}
	}
}

// sweep must not run concurrently with itself.
func (s *sweeper) sweep() {
	for i, c := range s.conns {
		if s.gone[i] {
			continue
		}
		if err := c.poll(s.buf); err != nil {
			s.gone[i] = true
			s.dropped.Add(1)
			s.errs.add("dropped", err)
		}
	}
}
