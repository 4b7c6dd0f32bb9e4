package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// readSoon reads what nc has received, waiting at most a millisecond.
func readSoon(nc net.Conn, buf []byte) (int, error) {
	_ = nc.SetReadDeadline(time.Now().Add(time.Millisecond))
	n, err := nc.Read(buf)
	_ = nc.SetReadDeadline(time.Time{})
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		err = nil
	}
	return n, err
}

// rssKiB reads the resident set size of process pid from /proc, in KiB.
func rssKiB(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read RSS of pid %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read RSS of pid %d: %q: %w", pid, v, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("read RSS of pid %d: no VmRSS line", pid)
}

// settleRSS polls the RSS of pid every interval until it stops growing:
// the last window samples span no more than max(256 KiB, 0.2%). It gives
// up after limit and returns the last sample either way.
func settleRSS(ctx context.Context, pid int, interval time.Duration, window int, limit time.Duration) (kib int64, waited time.Duration, settled bool, err error) {
	start := time.Now()
	var samples []int64
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		v, err := rssKiB(pid)
		if err != nil {
			return 0, time.Since(start), false, err
		}
		samples = append(samples, v)
		if len(samples) >= window {
			last := samples[len(samples)-window:]
			lo, hi := last[0], last[0]
			for _, s := range last {
				lo, hi = min(lo, s), max(hi, s)
			}
			if hi-lo <= max(256, hi/500) {
				return v, time.Since(start), true, nil
			}
		}
		if time.Since(start) >= limit {
			return v, time.Since(start), false, nil
		}
		select {
		case <-ctx.Done():
			return v, time.Since(start), false, ctx.Err()
		case <-tk.C:
		}
	}
}

// scrape reads the named samples (metric names without labels, summed
// over labels) from a Prometheus text endpoint. Missing names are left
// out of the result; it is best effort.
func scrape(ctx context.Context, metricsURL string, names ...string) map[string]float64 {
	out := map[string]float64{}
	if metricsURL == "" {
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return out
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return out
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if i := strings.IndexByte(name, '{'); i >= 0 {
			// Labels may hold spaces: take the value after the closing brace.
			j := strings.LastIndexByte(line, '}')
			name, rest = name[:i], strings.TrimSpace(line[j+1:])
		}
		if !want[name] {
			continue
		}
		val, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
		if f, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] += f
		}
	}
	return out
}
