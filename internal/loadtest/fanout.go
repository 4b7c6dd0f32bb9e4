package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fanoutResult is the fanout scenario's JSON line.
type fanoutResult struct {
	Scenario        string            `json:"scenario"`
	URL             string            `json:"url"`
	SubURLs         []string          `json:"sub_urls,omitempty"`
	Proto           string            `json:"proto"`
	Subs            int               `json:"subs"`
	Subscribed      int               `json:"subscribed"`
	Rate            float64           `json:"rate"`
	Window          int               `json:"window,omitempty"`
	DurationSeconds float64           `json:"duration_seconds"`
	Size            int               `json:"size"`
	Published       int64             `json:"published"`
	Acked           int64             `json:"acked"`
	PublishErrors   int64             `json:"publish_errors"`
	Unacked         int64             `json:"unacked"`
	PublishRate     float64           `json:"publish_rate"`
	PublisherLagMs  float64           `json:"publisher_max_lag_ms"`
	Expected        int64             `json:"expected"`
	Received        int64             `json:"received"`
	Lost            int64             `json:"lost"`
	Duplicates      int64             `json:"duplicates"`
	OutOfOrder      int64             `json:"out_of_order"`
	SubsComplete    int               `json:"subs_complete"`
	DeliveredPerSec float64           `json:"delivered_per_sec"`
	P50Ms           float64           `json:"p50_ms"`
	P90Ms           float64           `json:"p90_ms"`
	P99Ms           float64           `json:"p99_ms"`
	P999Ms          float64           `json:"p999_ms"`
	MaxMs           float64           `json:"max_ms"`
	MeanMs          float64           `json:"mean_ms"`
	AckP50Ms        float64           `json:"ack_p50_ms"`
	AckP99Ms        float64           `json:"ack_p99_ms"`
	Closed          int64             `json:"closed_by_server"`
	Errors          int64             `json:"errors"`
	ErrorKinds      map[string]string `json:"error_kinds,omitempty"`
	ClientRSSKiB    int64             `json:"client_rss_kib,omitempty"`
	ServerRSSKiB    int64             `json:"server_rss_kib,omitempty"`
	Nodes           int               `json:"server_nodes,omitempty"` // processes in server_cores, with -node-pids
	CPU             cpuUse            `json:"cpu"`
	// ServerCPUPerDelivery is the server's CPU time (all nodes, given
	// -pid) while publishing, in microseconds, over the deliveries the
	// subscribers received in that same interval; see serverCPUPerDelivery.
	ServerCPUPerDelivery float64 `json:"server_cpu_us_per_delivery,omitempty"`
	// Delivery options (fanout only); see options.go.
	Filters int  `json:"filters,omitempty"`
	Doc     bool `json:"doc,omitempty"`
	Delta   bool `json:"delta,omitempty"`
	// Spin: every subscriber was read by a spinning epoll set (-spin).
	Spin bool `json:"spin,omitempty"`
	// Epoll: every subscriber was read by an epoll set that sleeps in
	// Go's poller (-epoll).
	Epoll bool `json:"epoll,omitempty"`
	// KernelStamps: every subscriber's messages were timed by when the
	// kernel received them, not when the tool read them (-kernel-stamps);
	// UnstampedReads counts the reads that came without the kernel's time
	// all the same, whose messages were timed by the read.
	KernelStamps   bool  `json:"kernel_stamps,omitempty"`
	UnstampedReads int64 `json:"unstamped_reads,omitempty"`
	// PayloadBytes are the bytes of the timed message pushes the
	// subscribers read (WebSocket message payloads, JSONL lines, SSE event
	// data); BytesPerDelivery is PayloadBytes / Received.
	PayloadBytes     int64   `json:"payload_bytes"`
	BytesPerDelivery float64 `json:"bytes_per_delivery"`
	DeltaPushes      int64   `json:"delta_pushes,omitempty"` // of the timed pushes, those that were deltas
}

// fanoutFlags are the flags of the scenarios that fan messages out from
// one publisher (fanout, sse).
type fanoutFlags struct {
	subs     int
	window   int
	rate     float64
	duration time.Duration
	size     int
	drain    time.Duration
	pid      int
	nodePIDs []int
	// brokerPIDs are the broker's servers: their CPU is broker_cores.
	brokerPIDs []int
	// spin: the subscribers' readers poll without sleeping (see pollers).
	spin bool
	// epoll: the subscribers are read from epoll sets, a goroutine per
	// processor, not one per subscriber (see pollers).
	epoll bool
	// kernelStamps: the sets time each message by its segment's arrival
	// in the kernel (see pollers).
	kernelStamps bool
}

func (f *fanoutFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.subs, "subs", 1000, "subscribers on the channel")
	fs.Float64Var(&f.rate, "rate", 100, "publishes per second (open loop)")
	fs.IntVar(&f.window, "window", 0, "closed loop: publish as fast as every subscriber keeps up, with at most this many messages not yet delivered to all of them (0: open loop at -rate)")
	fs.DurationVar(&f.duration, "duration", 20*time.Second, "how long to publish")
	fs.IntVar(&f.size, "size", 128, "bytes of each message's data (timestamp, sequence number and padding)")
	fs.DurationVar(&f.drain, "drain", 10*time.Second, "longest wait for deliveries after the last publish")
	fs.IntVar(&f.pid, "pid", 0, "the server's process id, to report its CPU and RSS (0: not measured)")
	fs.Func("node-pids", "comma-separated process ids of further server nodes, whose CPU counts in server_cores with -pid's", pidList(&f.nodePIDs))
	fs.Func("broker-pids", "comma-separated process ids of the broker's servers (Redis, NATS), whose CPU is reported as broker_cores instead of in other_cores", pidList(&f.brokerPIDs))
	fs.BoolVar(&f.spin, "spin", false, "read the WebSocket subscribers by polling without sleeping, each reader using a core whole, so that no server send has to wake a reader (for a tool with cores of its own; Linux)")
	fs.BoolVar(&f.epoll, "epoll", false, "read the WebSocket subscribers from epoll sets, a goroutine per processor that sleeps until some of them have something, instead of a goroutine per subscriber: less of the tool's time per delivery (Linux)")
	fs.BoolVar(&f.kernelStamps, "kernel-stamps", false, "with -spin or -epoll, time each message by when the kernel received it (SO_TIMESTAMPNS), not by when the tool read it: the latency then leaves out the tool's own queue of reads (Linux)")
}

// check validates the parsed flags of scenario name.
func (f *fanoutFlags) check(name string, fs *flag.FlagSet) error {
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("bench %s: unexpected argument %q", name, fs.Arg(0))
	case f.subs < 1:
		return fmt.Errorf("bench %s: -subs must be at least 1", name)
	case f.rate <= 0:
		return fmt.Errorf("bench %s: -rate must be positive", name)
	case f.window < 0:
		return fmt.Errorf("bench %s: -window must not be negative", name)
	case f.duration <= 0:
		return fmt.Errorf("bench %s: -duration must be positive", name)
	case f.spin && f.epoll:
		return fmt.Errorf("bench %s: -spin and -epoll are two ways to read: choose one", name)
	case f.kernelStamps && !f.spin && !f.epoll:
		return fmt.Errorf("bench %s: -kernel-stamps needs -spin or -epoll", name)
	case f.spin && name == "sse":
		return errors.New("bench sse: -spin reads WebSocket subscribers only")
	case f.epoll && name == "sse":
		return errors.New("bench sse: -epoll reads WebSocket subscribers only")
	}
	return nil
}

func runFanout(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald bench fanout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cm common
	cm.register(fs, "fanout")
	var ff fanoutFlags
	ff.register(fs)
	var opts optionFlags
	opts.register(fs)
	var subURLs string
	fs.StringVar(&subURLs, "sub-urls", "", "comma-separated /ws endpoints the subscribers dial, spread round-robin (default: -url); the publisher uses -url")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := ff.check("fanout", fs); err != nil {
		return err
	}
	if err := opts.check(cm.proto, ff.size); err != nil {
		return err
	}
	t, err := cm.target()
	if err != nil {
		return err
	}
	subTargets, err := cm.subTargets(subURLs)
	if err != nil {
		return err
	}
	var next atomic.Uint64
	sc := fanoutScenario{name: "fanout", proto: t.proto, url: t.subscriberURL().String(), options: opts,
		subscribe: func(ctx context.Context, r *fanoutRun) (*subscriber, error) {
			i := next.Add(1) - 1
			st := *t
			if len(subTargets) > 0 {
				st = *subTargets[i%uint64(len(subTargets))]
			}
			st.subscribeFields = opts.subscribeFields(int(i))
			c, err := st.subscribe(ctx, 4096, cm.dialTimeout)
			if err != nil {
				return nil, err
			}
			s := r.newSubscriber(c.close)
			if opts.delta {
				s.delta = &deltaState{}
			}
			r.readWS(s, c, t.proto == "jsonl" || t.proto == "centrifugo")
			return s, nil
		}}
	for _, st := range subTargets {
		sc.subURLs = append(sc.subURLs, st.subscriberURL().String())
	}
	return runFanoutScenario(ctx, sc, &cm, t, ff, stdout, stderr)
}

// subTargets parses -sub-urls, a comma-separated list of /ws endpoints
// with the same form as -url; empty gives none (subscribers use -url).
func (c *common) subTargets(list string) ([]*target, error) {
	var ts []*target
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		cc := *c
		cc.url = u
		t, err := cc.target()
		if err != nil {
			return nil, fmt.Errorf("%w (in -sub-urls)", err)
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// fanoutScenario is what sets a fan-out scenario apart: how its
// subscribers connect and read. Publishing, tallying and reporting are
// shared.
type fanoutScenario struct {
	name  string // scenario name, for the report
	proto string // what subscribers speak, for the report
	url   string // where subscribers connect, for the report
	// subURLs are the endpoints subscribers are spread over, when not url.
	subURLs []string
	// channels, when set, are published to round-robin (the channels
	// scenario); subscribers take them in turn. Unset: the target's one.
	channels []string
	// subscribe connects one subscriber, starts its reader and returns it.
	subscribe func(ctx context.Context, r *fanoutRun) (*subscriber, error)
	// options are the delivery options the run uses (fanout's flags).
	options optionFlags
}

// runFanoutScenario dials ff.subs subscribers the scenario's way, then
// publishes over a WebSocket to t.ws at ff.rate for ff.duration, waits for
// the deliveries and reports them.
func runFanoutScenario(ctx context.Context, sc fanoutScenario, cm *common, t *target, ff fanoutFlags, stdout, stderr io.Writer) error {
	name := sc.name
	res := fanoutResult{Scenario: name, URL: sc.url, SubURLs: sc.subURLs, Proto: sc.proto, Subs: ff.subs,
		Rate: ff.rate, Window: ff.window, DurationSeconds: ff.duration.Seconds(), Size: ff.size,
		Filters: sc.options.filters, Doc: sc.options.doc, Delta: sc.options.delta}
	if ff.window > 0 {
		res.Rate = 0
	}
	if len(ff.nodePIDs) > 0 {
		res.Nodes = len(ff.nodePIDs)
		if ff.pid > 0 {
			res.Nodes++
		}
	}
	r := &fanoutRun{t: t, lat: new(shardedHistogram), ack: new(histogram), pending: map[uint64]pendingPub{}, options: sc.options}
	if sc.options.doc {
		r.doc = newDocument(ff.size)
	}
	r.channels = sc.channels
	if len(r.channels) == 0 {
		r.channels = []string{t.channel}
	}
	r.ackedBy = make([]atomic.Int64, len(r.channels))
	if ff.spin || ff.epoll {
		r.pollers = newPollers(ff.spin, ff.kernelStamps)
	}

	// Subscribers.
	var mu sync.Mutex
	start := time.Now()
	stop := make(chan struct{})
	pw := progress(stderr, time.Second, stop, func() string {
		mu.Lock()
		k := len(r.subs)
		mu.Unlock()
		return fmt.Sprintf("%s: subscribed %d/%d, errors %d", name, k, ff.subs, r.errs.n.Load())
	})
	dialPool(ctx, ff.subs, cm.concurrency, &r.errs, func(ctx context.Context) error {
		s, err := sc.subscribe(ctx, r)
		if err != nil {
			return err
		}
		mu.Lock()
		r.subs = append(r.subs, s)
		mu.Unlock()
		return nil
	})
	close(stop)
	pw.Wait()
	res.Subscribed = len(r.subs)
	// The epoll sets start once the subscribers are in, so that spinning
	// ones do not slow the handshakes; a run says it spun (or read from
	// sets) only when they took every subscriber.
	r.pollers.start()
	all := r.pollers.watched() == len(r.subs)
	res.Spin, res.Epoll = ff.spin && all, ff.epoll && all
	res.KernelStamps = ff.kernelStamps && all
	fmt.Fprintf(stderr, "%s: %d subscribers in %v, %d errors\n", name, len(r.subs), time.Since(start).Round(time.Millisecond), r.errs.n.Load())
	defer r.closeAll()
	if len(r.subs) == 0 {
		return fmt.Errorf("bench %s: no subscriber could subscribe", name)
	}

	// Publisher.
	pubCtx, cancel := context.WithTimeout(ctx, cm.dialTimeout)
	var (
		pub *wsConn
		err error
	)
	switch t.proto {
	case "ws", "centrifugo":
		pub, err = t.dial(pubCtx, 4096)
	default:
		pub, err = dialWS(pubCtx, t.ws, "herald.v1", 4096)
	}
	cancel()
	if err != nil {
		return fmt.Errorf("bench %s: publisher: %w", name, err)
	}
	r.pub = pub
	r.pubDone = make(chan struct{})
	go r.readAcks()

	// Warm up: publish sequence 0 until every subscriber has seen it, so
	// subscriptions without a reply (raw mode, SSE) are live too.
	warm := time.Now()
	for r.ready() < len(r.subs) && time.Since(warm) < cm.dialTimeout && ctx.Err() == nil {
		for ch := range r.channels {
			if err := r.publish(0, ch, ff.size, false); err != nil {
				return fmt.Errorf("bench %s: publisher: %w", name, err)
			}
		}
		waitUntil(ctx, 50*time.Millisecond, func() bool { return r.ready() == len(r.subs) })
	}
	if k := r.ready(); k < len(r.subs) {
		fmt.Fprintf(stderr, "%s: only %d of %d subscribers received the warm-up message\n", name, k, len(r.subs))
	}

	// Publish at a fixed rate.
	interval := time.Duration(float64(time.Second) / ff.rate)
	cpu0 := sampleCPU(ff.pid, ff.nodePIDs, ff.brokerPIDs)
	pubStart := time.Now()
	r.pubStart.Store(pubStart.UnixNano())
	end := pubStart.Add(ff.duration)
	stop = make(chan struct{})
	var published atomic.Int64
	pw = progress(stderr, time.Second, stop, func() string {
		el := time.Since(pubStart).Seconds()
		got := r.received()
		return fmt.Sprintf("%s: %4.0fs published %d, delivered %d (%.0f/s), p99 %.2fms, closed %d",
			name, el, published.Load(), got, float64(got)/el, ms(r.lat.merged().quantile(0.99)), r.closed.Load())
	})
	var maxLag time.Duration
	timer := time.NewTimer(0)
	<-timer.C
	for seq := uint64(1); ctx.Err() == nil; seq++ {
		if ff.window > 0 {
			// Closed loop: wait until every live subscriber has all but
			// the last window messages.
			for !r.seenBy(seq-min(seq, uint64(ff.window))) && time.Now().Before(end) && ctx.Err() == nil {
				time.Sleep(20 * time.Microsecond)
			}
			if !time.Now().Before(end) {
				break
			}
		} else {
			due := pubStart.Add(time.Duration(seq-1) * interval)
			if !due.Before(end) {
				break
			}
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				select {
				case <-ctx.Done():
				case <-timer.C:
				}
			}
			maxLag = max(maxLag, time.Since(due))
		}
		if err := r.publish(seq, int((seq-1)%uint64(len(r.channels))), ff.size, true); err != nil {
			r.errs.add("publish", err)
			break
		}
		published.Store(int64(seq))
	}
	pubEnd := time.Now()
	// The CPU and the deliveries cover the same interval, from the first
	// publish to the last: deliveries still in flight then (at most a
	// window's, or a latency's worth of the rate) had part of their cost
	// counted and none of their deliveries.
	cpu1 := sampleCPU(ff.pid, ff.nodePIDs, ff.brokerPIDs)
	res.CPU = cpuBetween(cpu0, cpu1)
	res.ServerCPUPerDelivery = serverCPUPerDelivery(cpu0, cpu1, r.received())
	if ff.pid > 0 {
		if v, err := rssKiB(ff.pid); err == nil {
			res.ServerRSSKiB = v
		}
	}

	// Drain: wait for every ack and every delivery, or for progress to stop.
	lastGot, lastChange := int64(-1), time.Now()
	waitUntil(ctx, ff.drain, func() bool {
		got := r.received()
		if got != lastGot {
			lastGot, lastChange = got, time.Now()
		}
		return (r.unacked() == 0 && got >= r.expected()) || time.Since(lastChange) > 3*time.Second
	})
	close(stop)
	pw.Wait()
	r.closeAll()

	// Tally.
	res.Published = published.Load()
	res.Acked = r.acked.Load()
	res.PublishErrors = r.pubErrs.Load()
	res.Unacked = int64(r.unacked())
	res.PublishRate = round(float64(res.Published)/pubEnd.Sub(pubStart).Seconds(), 1)
	res.PublisherLagMs = ms(maxLag)
	for _, s := range r.subs {
		want := r.ackedBy[s.channel].Load()
		res.Expected += want
		res.Received += s.distinct
		res.Duplicates += s.dups
		res.OutOfOrder += s.ooo
		res.PayloadBytes += s.bytes
		res.DeltaPushes += s.deltas
		if s.distinct >= want {
			res.SubsComplete++
		}
	}
	res.Lost = res.Expected - res.Received
	if res.Received > 0 {
		res.BytesPerDelivery = round(float64(res.PayloadBytes)/float64(res.Received), 1)
	}
	if last := r.lastRecv.Load(); last > 0 && res.Received > 0 {
		res.DeliveredPerSec = round(float64(res.Received)/time.Duration(last-pubStart.UnixNano()).Seconds(), 1)
	}
	lat := r.lat.merged()
	res.P50Ms, res.P90Ms = ms(lat.quantile(0.50)), ms(lat.quantile(0.90))
	res.P99Ms, res.P999Ms = ms(lat.quantile(0.99)), ms(lat.quantile(0.999))
	res.MaxMs, res.MeanMs = ms(time.Duration(lat.max.Load())), ms(lat.mean())
	res.AckP50Ms, res.AckP99Ms = ms(r.ack.quantile(0.50)), ms(r.ack.quantile(0.99))
	res.Closed = r.closed.Load()
	res.Errors = r.errs.n.Load()
	res.UnstampedReads = r.pollers.unstampedReads()
	res.ErrorKinds = r.errs.summary()
	if v, err := rssKiB(os.Getpid()); err == nil {
		res.ClientRSSKiB = v
	}

	rows := []row{
		{"subscribers", fmt.Sprintf("%d of %d (%s)", res.Subscribed, res.Subs, res.Proto)},
		{"published", fmt.Sprintf("%d in %.1fs (%.1f/s, asked %.1f/s), %d-byte data, acked %d, errors %d, unacked %d",
			res.Published, pubEnd.Sub(pubStart).Seconds(), res.PublishRate, res.Rate, res.Size, res.Acked, res.PublishErrors, res.Unacked)},
		{"delivered", fmt.Sprintf("%d of %d expected (%.0f msg/s)", res.Received, res.Expected, res.DeliveredPerSec)},
		{"lost", fmt.Sprintf("%d (subscribers complete: %d/%d)", res.Lost, res.SubsComplete, res.Subscribed)},
		{"duplicates / out of order", fmt.Sprintf("%d / %d", res.Duplicates, res.OutOfOrder)},
		{"payload per delivery", fmt.Sprintf("%.1f bytes (%d delta pushes)", res.BytesPerDelivery, res.DeltaPushes)},
		{"latency", fmt.Sprintf("p50 %.2fms  p90 %.2fms  p99 %.2fms  p99.9 %.2fms  max %.2fms  mean %.2fms",
			res.P50Ms, res.P90Ms, res.P99Ms, res.P999Ms, res.MaxMs, res.MeanMs)},
		{"publish ack", fmt.Sprintf("p50 %.2fms  p99 %.2fms", res.AckP50Ms, res.AckP99Ms)},
		{"publisher max lag", fmt.Sprintf("%.2fms", res.PublisherLagMs)},
		{"CPU while publishing", cpuText(res.CPU)},
		{"server CPU per delivery", fmt.Sprintf("%.2fµs (all nodes, while publishing)", res.ServerCPUPerDelivery)},
		{"closed by server", strconv.FormatInt(res.Closed, 10)},
		{"errors", strconv.FormatInt(res.Errors, 10)},
	}
	kinds := make([]string, 0, len(res.ErrorKinds))
	for k := range res.ErrorKinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		rows = append(rows, row{"errors: " + k, res.ErrorKinds[k]})
	}
	if err := report(stdout, "herald bench "+name, rows, res); err != nil {
		return err
	}
	return ctx.Err()
}

// waitUntil polls cond every few milliseconds for at most d.
func waitUntil(ctx context.Context, d time.Duration, cond func() bool) {
	deadline := time.Now().Add(d)
	for !cond() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

type pendingPub struct {
	sent    time.Time
	timed   bool
	channel int // index into fanoutRun.channels
}

// fanoutRun is the shared state of one fanout run.
type fanoutRun struct {
	t        *target
	channels []string       // published to round-robin; one for fanout
	ackedBy  []atomic.Int64 // timed publishes acknowledged, per channel
	subs     []*subscriber
	errs     errorLog
	lat      *shardedHistogram // delivery latency, its shards dealt out to the subscribers
	nsubs    atomic.Int64      // subscribers made, for their shards
	ack      *histogram        // publish → ok reply

	pub      *wsConn
	pubDone  chan struct{}
	nextID   uint64 // publishing goroutine only
	pmu      sync.Mutex
	pending  map[uint64]pendingPub // by command id
	acked    atomic.Int64          // timed publishes acknowledged ok
	pubErrs  atomic.Int64
	pubStart atomic.Int64
	lastRecv atomic.Int64 // unix nanoseconds of the latest delivery
	pollers  *pollers     // read the WebSocket subscribers with -spin or -epoll; nil: goroutines do
	closed   atomic.Int64 // subscribers the server closed
	closing  atomic.Bool
	once     sync.Once

	options optionFlags
	doc     *document // the data, with -doc; publishing goroutine only

	// behind is the subscriber that was furthest behind at the last look;
	// publishing goroutine only (seenBy).
	behind *subscriber
}

// publish sends one publish carrying seq and the send time, padded to
// size bytes of data, in the target's protocol.
func (r *fanoutRun) publish(seq uint64, ch int, size int, timed bool) error {
	channel := quote(r.channels[ch])
	r.nextID++
	id := r.nextID
	now := time.Now()
	var b bytes.Buffer
	b.Grow(size + 128)
	switch r.t.proto {
	case "ws":
		id = seq // no replies: the publisher's own copy of the broadcast is its ack
	case "centrifugo":
		b.WriteString(`{"id":`)
		b.WriteString(strconv.FormatUint(id, 10))
		b.WriteString(`,"publish":{"channel":`)
		b.WriteString(channel)
		b.WriteString(`,"data":`)
	default:
		b.WriteString(`{"id":`)
		b.WriteString(strconv.FormatUint(id, 10))
		b.WriteString(`,"op":"publish","channel":`)
		b.WriteString(channel)
		r.options.writeTags(&b, seq)
		b.WriteString(`,"data":`)
	}
	if r.doc != nil {
		r.doc.write(&b, seq, now)
	} else {
		dataStart := b.Len()
		b.WriteString(`{"bench_ts":`)
		b.WriteString(strconv.FormatInt(now.UnixNano(), 10))
		b.WriteString(`,"bench_seq":`)
		b.WriteString(strconv.FormatUint(seq, 10))
		b.WriteString(`,"pad":"`)
		if pad := size - (b.Len() - dataStart) - 2; pad > 0 {
			b.WriteString(strings.Repeat("x", pad))
		}
		b.WriteString(`"}`)
	}
	switch r.t.proto {
	case "ws":
	case "centrifugo":
		b.WriteString(`}}`)
	default:
		b.WriteString(`}`)
	}
	if timed || r.t.proto != "ws" {
		r.pmu.Lock()
		r.pending[id] = pendingPub{sent: now, timed: timed, channel: ch}
		r.pmu.Unlock()
	}
	return r.pub.writeText(b.Bytes())
}

// seenBy reports whether every subscriber still connected has every
// message up to seq. It checks the subscriber that was furthest behind
// first, and looks at all of them only once that one has caught up: the
// closed loop asks many times per message, and reading every
// subscriber's progress each time was a tenth of the load tool's CPU.
func (r *fanoutRun) seenBy(seq uint64) bool {
	if b := r.behind; b != nil && !readerDone(b) && b.high.Load() < seq {
		return false
	}
	low := uint64(1<<64 - 1)
	r.behind = nil
	for _, s := range r.subs {
		if readerDone(s) {
			continue
		}
		if h := s.high.Load(); h < low {
			low, r.behind = h, s
		}
	}
	return low >= seq
}

// readerDone reports whether s's reader has returned.
func readerDone(s *subscriber) bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// readAcks reads the publisher's replies: herald's and Centrifugo's by
// command id; for a broadcast server, the publisher's own copy of each
// message, by sequence number.
func (r *fanoutRun) readAcks() {
	defer close(r.pubDone)
	for {
		_, msg, err := r.pub.readMessage()
		if err != nil {
			if !r.closing.Load() {
				r.errs.add("publisher", err)
			}
			return
		}
		now := time.Now()
		for line := range bytes.SplitSeq(msg, []byte{'\n'}) {
			r.ackLine(line, now)
		}
	}
}

func (r *fanoutRun) ackLine(line []byte, now time.Time) {
	var id uint64
	var refused []byte
	if r.t.proto == "ws" {
		seq, ok := numberAfter(line, keySeq)
		if !ok || seq == 0 {
			return
		}
		id = seq
	} else {
		var rep struct {
			ID    uint64          `json:"id"`
			OK    bool            `json:"ok"`
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(line, &rep) != nil || rep.ID == 0 {
			return // the welcome, a push, a ping
		}
		id = rep.ID
		if rep.Error != nil || (!rep.OK && r.t.proto != "centrifugo") {
			refused = rep.Error
		}
	}
	r.pmu.Lock()
	p, ok := r.pending[id]
	delete(r.pending, id)
	r.pmu.Unlock()
	if !ok || !p.timed {
		return
	}
	if refused != nil {
		r.pubErrs.Add(1)
		r.errs.add("publish refused", errors.New(string(refused)))
		return
	}
	r.acked.Add(1)
	r.ackedBy[p.channel].Add(1)
	r.ack.add(now.Sub(p.sent))
}

func (r *fanoutRun) unacked() int {
	r.pmu.Lock()
	defer r.pmu.Unlock()
	n := 0
	for _, p := range r.pending {
		if p.timed {
			n++
		}
	}
	return n
}

func (r *fanoutRun) ready() int {
	n := 0
	for _, s := range r.subs {
		if s.ready.Load() {
			n++
		}
	}
	return n
}

// expected is how many deliveries the acknowledged publishes make.
func (r *fanoutRun) expected() int64 {
	var n int64
	for _, s := range r.subs {
		n += r.ackedBy[s.channel].Load()
	}
	return n
}

func (r *fanoutRun) received() int64 {
	var n int64
	for _, s := range r.subs {
		n += s.count.Load()
	}
	return n
}

// closeAll closes every connection and waits for their readers.
func (r *fanoutRun) closeAll() {
	r.once.Do(func() {
		r.closing.Store(true)
		for _, s := range r.subs {
			s.close()
		}
		for _, s := range r.subs {
			<-s.done
		}
		r.pollers.stop()
		if r.pub != nil {
			r.pub.close()
			<-r.pubDone
		}
	})
}

// subscriber is one fan-out subscriber and its reader's tallies; the
// plain fields are the reader's own until done is closed.
type subscriber struct {
	r       *fanoutRun
	channel int           // index into fanoutRun.channels
	close   func()        // closes the connection, which ends the reader
	done    chan struct{} // closed when the reader returns
	ready   atomic.Bool   // received the warm-up message
	count   atomic.Int64  // distinct sequence numbers received, for progress
	high    atomic.Uint64 // every sequence number up to this one received (closed loop)
	lat     *histogram    // the shard of fanoutRun.lat this subscriber adds to
	pending latencyBatch  // what the frame being read adds to lat
	tsAt    int           // where "bench_ts" was in the last message
	seqAt   int           // where "bench_seq" was after the timestamp

	seen     []uint64 // bitset of sequence numbers received
	distinct int64
	dups     int64
	ooo      int64
	maxSeq   uint64
	bytes    int64       // payload bytes of the timed pushes
	delta    *deltaState // set for a subscription with deltas
	deltas   int64       // timed pushes that were deltas
}

// newSubscriber returns a subscriber whose connection close closes; its
// reader must close s.done when it returns.
func (r *fanoutRun) newSubscriber(close func()) *subscriber {
	lat := r.lat.shard(int(r.nsubs.Add(1)))
	return &subscriber{r: r, close: close, done: make(chan struct{}), lat: lat}
}

var (
	keyTS  = []byte(`"bench_ts":`)
	keySeq = []byte(`"bench_seq":`)
)

// ended records why a subscriber's connection ended, unless the run
// closed it.
func (s *subscriber) ended(err error) {
	if s.r.closing.Load() {
		return
	}
	var ce *closeError
	switch {
	case errors.As(err, &ce):
		s.r.closed.Add(1)
		s.r.errs.add("closed by server "+strconv.Itoa(ce.Code), err)
	default:
		s.r.errs.add("subscriber", err)
	}
}

// readWS reads a WebSocket subscriber's messages until its connection
// ends; jsonl splits frames into lines.
func (s *subscriber) readWS(c *wsConn, jsonl bool) {
	defer close(s.done)
	for {
		_, msg, err := c.readMessage()
		if err != nil {
			s.ended(err)
			return
		}
		s.message(msg, time.Now().UnixNano(), jsonl)
	}
}

// message tallies one WebSocket message received at now; jsonl splits it
// into lines.
func (s *subscriber) message(msg []byte, now int64, jsonl bool) {
	defer s.pending.flush(s.lat)
	if !jsonl {
		s.handle(msg, now)
		return
	}
	for len(msg) > 0 {
		var line []byte
		line, msg, _ = bytes.Cut(msg, []byte{'\n'})
		s.handle(line, now)
	}
}

// readWS starts reading a WebSocket subscriber: from one of the run's
// epoll sets with -spin or -epoll (where the system has them), else on a
// goroutine of its own.
func (r *fanoutRun) readWS(s *subscriber, c *wsConn, jsonl bool) {
	if r.pollers.watch(s, c, jsonl) != nil {
		go s.readWS(c, jsonl)
	}
}

// handle tallies one message; frames without the bench fields (replies,
// the welcome) are ignored. A subscription with deltas rebuilds the
// message's data first, and a push it cannot rebuild is an error.
func (s *subscriber) handle(msg []byte, now int64) {
	data, delta := msg, false
	if s.delta != nil {
		var ok bool
		var err error
		data, delta, ok, err = s.delta.rebuild(msg)
		if err != nil {
			s.r.errs.add("delta", err)
			return
		}
		if !ok {
			return
		}
	}
	// The data starts {"bench_ts":T,"bench_seq":S: the sequence number
	// is looked for after the timestamp, not from the start again.
	ts, rest, ok := numberAt(data, keyTS, &s.tsAt)
	if !ok {
		return
	}
	seq, _, ok := numberAt(rest, keySeq, &s.seqAt)
	if !ok {
		return
	}
	if seq == 0 {
		s.ready.Store(true)
		return
	}
	s.bytes += int64(len(msg))
	if delta {
		s.deltas++
	}
	s.pending.add(s.lat, time.Duration(now-int64(ts)))
	s.r.lastRecv.Store(now)
	w, bit := seq/64, uint64(1)<<(seq%64)
	for uint64(len(s.seen)) <= w {
		s.seen = append(s.seen, 0)
	}
	if s.seen[w]&bit != 0 {
		s.dups++
		return
	}
	s.seen[w] |= bit
	s.distinct++
	s.count.Add(1)
	if seq < s.maxSeq {
		s.ooo++
	}
	s.maxSeq = max(s.maxSeq, seq)
	for h := s.high.Load() + 1; h/64 < uint64(len(s.seen)) && s.seen[h/64]&(1<<(h%64)) != 0; h++ {
		s.high.Store(h)
	}
}

// numberAfter parses the unsigned integer that follows key in b.
func numberAfter(b, key []byte) (uint64, bool) {
	at := -1
	n, _, ok := numberAt(b, key, &at)
	return n, ok
}

// numberAt parses the unsigned integer that follows key in b, and returns
// what follows it. It looks for key at *at first, and sets *at to where
// it found it: a server puts a field of its pushes to one subscriber at
// the same place in each, or nearly, so that the search through the
// envelope is rarely needed.
func numberAt(b, key []byte, at *int) (n uint64, rest []byte, ok bool) {
	i := *at
	if i < 0 || i > len(b)-len(key) || !bytes.Equal(b[i:i+len(key)], key) {
		if i = bytes.Index(b, key); i < 0 {
			return 0, nil, false
		}
		*at = i
	}
	b = b[i+len(key):]
	j := 0
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		n = n*10 + uint64(b[j]-'0')
	}
	return n, b[j:], j > 0
}
