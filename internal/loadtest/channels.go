package loadtest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync/atomic"
)

// runChannels is fan-out over many channels with few subscribers each: the
// publisher goes round-robin over -channels channels, and -subs
// subscribers take the channels in turn. It measures the per-channel costs
// that one big channel hides: subscription bookkeeping, one encode per
// channel message, many small fan-outs.
func runChannels(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herald bench channels", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cm common
	cm.register(fs, "bench")
	var ff fanoutFlags
	ff.register(fs)
	n := fs.Int("channels", 1000, "channels, named CHANNEL-0 … CHANNEL-(n-1), published to round-robin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := ff.check("channels", fs); err != nil {
		return err
	}
	switch {
	case *n < 1:
		return errors.New("bench channels: -channels must be at least 1")
	case ff.window > 0:
		return errors.New("bench channels: -window is for fanout; channels publishes at -rate")
	case cm.proto == "ws":
		return errors.New("bench channels: a broadcast server has no channels")
	}
	t, err := cm.target()
	if err != nil {
		return err
	}
	sc := fanoutScenario{name: "channels", proto: t.proto, url: t.subscriberURL().String()}
	for i := range *n {
		sc.channels = append(sc.channels, fmt.Sprintf("%s-%d", t.channel, i))
	}
	var next atomic.Int64
	sc.subscribe = func(ctx context.Context, r *fanoutRun) (*subscriber, error) {
		ch := int(next.Add(1)-1) % len(r.channels)
		st := *t
		st.channel = r.channels[ch]
		c, err := st.subscribe(ctx, 4096, cm.dialTimeout)
		if err != nil {
			return nil, err
		}
		s := r.newSubscriber(c.close)
		s.channel = ch
		r.readWS(s, c, t.proto == "jsonl" || t.proto == "centrifugo")
		return s, nil
	}
	return runFanoutScenario(ctx, sc, &cm, t, ff, stdout, stderr)
}
