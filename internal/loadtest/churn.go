package loadtest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// churnResult is the churn scenario's JSON line.
type churnResult struct {
	Scenario        string            `json:"scenario"`
	URL             string            `json:"url"`
	Proto           string            `json:"proto"`
	Workers         int               `json:"workers"`
	DurationSeconds float64           `json:"duration_seconds"`
	Cycles          int64             `json:"cycles"`
	CyclesPerSec    float64           `json:"cycles_per_sec"`
	P50Ms           float64           `json:"connect_p50_ms"`
	P99Ms           float64           `json:"connect_p99_ms"`
	MaxMs           float64           `json:"connect_max_ms"`
	Errors          int64             `json:"errors"`
	ErrorKinds      map[string]string `json:"error_kinds,omitempty"`
	RSSBeforeKiB    int64             `json:"rss_before_kib,omitempty"`
	RSSAfterKiB     int64             `json:"rss_after_kib,omitempty"`
	CPU             cpuUse            `json:"cpu"`
}

// runChurn connects, subscribes and disconnects as fast as -c workers can
// for -duration: connections per second, the latency of connect +
// subscribe, and the server's RSS before and after (a leak shows there).
func runChurn(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald bench churn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cm common
	cm.register(fs, "churn")
	duration := fs.Duration("duration", 10*time.Second, "how long to churn")
	pid := fs.Int("pid", 0, "the server's process id, for its CPU and RSS (0: not measured)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench churn: unexpected argument %q", fs.Arg(0))
	}
	if *duration <= 0 {
		return errors.New("bench churn: -duration must be positive")
	}
	t, err := cm.target()
	if err != nil {
		return err
	}
	res := churnResult{Scenario: "churn", URL: t.subscriberURL().String(), Proto: t.proto, Workers: cm.concurrency,
		DurationSeconds: duration.Seconds()}
	if *pid > 0 {
		if v, err := rssKiB(*pid); err == nil {
			res.RSSBeforeKiB = v
		}
	}
	var (
		errs   errorLog
		cycles atomic.Int64
		lat    = new(histogram)
		wg     sync.WaitGroup
	)
	stop := make(chan struct{})
	start := time.Now()
	end := start.Add(*duration)
	pw := progress(stderr, time.Second, stop, func() string {
		el := time.Since(start).Seconds()
		return fmt.Sprintf("churn: %4.0fs %d cycles (%.0f/s), errors %d", el, cycles.Load(), float64(cycles.Load())/el, errs.n.Load())
	})
	cpu0 := sampleCPU(*pid, nil, nil)
	for range cm.concurrency {
		wg.Go(func() {
			// A cycle started before the end runs to its end: cutting it
			// would count as an error of the server's.
			for ctx.Err() == nil && time.Now().Before(end) {
				t0 := time.Now()
				c, err := t.subscribe(ctx, 1024, cm.dialTimeout)
				if err != nil {
					if ctx.Err() == nil {
						errs.add("connect", err)
					}
					continue
				}
				lat.add(time.Since(t0))
				c.close()
				cycles.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.CPU = cpuBetween(cpu0, sampleCPU(*pid, nil, nil))
	close(stop)
	pw.Wait()
	if *pid > 0 {
		if v, _, _, err := settleRSS(ctx, *pid, 100*time.Millisecond, 3, 5*time.Second); err == nil {
			res.RSSAfterKiB = v
		}
	}
	res.Cycles = cycles.Load()
	res.CyclesPerSec = round(float64(res.Cycles)/elapsed.Seconds(), 1)
	res.P50Ms, res.P99Ms, res.MaxMs = ms(lat.quantile(0.5)), ms(lat.quantile(0.99)), ms(time.Duration(lat.max.Load()))
	res.Errors = errs.n.Load()
	res.ErrorKinds = errs.summary()
	rows := []row{
		{"cycles", fmt.Sprintf("%d in %.1fs (%.0f/s) with %d workers (%s)", res.Cycles, elapsed.Seconds(), res.CyclesPerSec, res.Workers, res.Proto)},
		{"connect + subscribe", fmt.Sprintf("p50 %.2fms  p99 %.2fms  max %.2fms", res.P50Ms, res.P99Ms, res.MaxMs)},
		{"server RSS", fmt.Sprintf("%d KiB before, %d KiB after", res.RSSBeforeKiB, res.RSSAfterKiB)},
		{"CPU", cpuText(res.CPU)},
		{"errors", strconv.FormatInt(res.Errors, 10)},
	}
	if err := report(stdout, "herald bench churn", rows, res); err != nil {
		return err
	}
	return ctx.Err()
}
