package hub

import (
	"context"
	"time"

	"github.com/heraldhq/herald/broker"
)

// Catch-up: a subscribe with since first gets what history holds after
// since, then live messages. For a Paced subscriber (a connection with a
// bounded queue) history is read a page at a time, each page sized to the
// room the subscriber has, one page of one subscriber at a time, so a
// catch-up costs no more memory than the subscriber's bound. Live
// messages that arrive meanwhile wait in the entry's catchup, their bytes
// held against the same bound; past it they are dropped, and the
// catch-up reads on from history, which has them.

// Paced is a Subscriber with a bounded outgoing queue. Its methods must
// not block unless they say so.
type Paced interface {
	Subscriber
	// TryRoom reserves the subscriber's next catch-up page when it has
	// room for one now, and returns the bytes it may take; zero means
	// none (and nothing is reserved).
	TryRoom() int
	// WaitRoom blocks until the subscriber has room for a page and no
	// other page of it is being read, reserves it, and returns the bytes
	// it may take; it fails once the subscriber closes or ctx ends.
	WaitRoom(ctx context.Context) (int, error)
	// PageDone ends the reservation of TryRoom or WaitRoom, once the page
	// is delivered (or given up).
	PageDone()
	// Hold counts n more bytes of buffered live messages against the
	// subscriber's bound, and reports false (counting nothing) when they
	// do not fit. Unhold gives n bytes back.
	Hold(n int) bool
	Unhold(n int)
	// FellBehind closes the subscriber: history was trimmed past the
	// messages it still needed while it caught up.
	FellBehind()
}

// catchup is a subscriber's catch-up in progress.
type catchup struct {
	buf      []broker.Message // live messages that arrived meanwhile
	held     int              // bytes of buf held against a Paced subscriber
	overflow bool             // live messages were dropped: history has them
	missed   bool             // a repair found messages gone for good meanwhile
	// unrecovered: the subscriber was told recovered:false and has had
	// nothing yet, so history not reaching back is no news to it.
	unrecovered bool
	ctx         context.Context // ends when the subscription does
	cancel      context.CancelFunc
}

func (h *Hub) newCatchup() *catchup {
	ctx, cancel := context.WithCancel(h.ctx)
	return &catchup{ctx: ctx, cancel: cancel}
}

// Bounds of the live messages a subscriber that is not Paced buffers
// while it catches up, and of any subscriber's buffer in messages.
const (
	maxBuffered      = 1024
	maxBufferedBytes = 1 << 20
)

// bufferLocked keeps a live message for a subscriber still catching up,
// or drops the buffer when it would grow past the bounds.
func (cu *catchup) bufferLocked(sub Subscriber, m broker.Message) {
	if cu.overflow {
		return // read back from history once the page in flight is in
	}
	n := len(m.Data) + pushOverhead + len(m.Channel)
	fits := len(cu.buf) < maxBuffered
	if p, ok := sub.(Paced); ok {
		fits = fits && p.Hold(n)
	} else {
		fits = fits && cu.held+n <= maxBufferedBytes
	}
	if !fits {
		cu.dropLocked(sub)
		cu.overflow = true
		return
	}
	cu.held += n
	cu.buf = append(cu.buf, m)
}

// dropLocked empties the buffer and gives its bytes back.
func (cu *catchup) dropLocked(sub Subscriber) {
	if p, ok := sub.(Paced); ok && cu.held > 0 {
		p.Unhold(cu.held)
	}
	cu.buf, cu.held = nil, 0
}

// abandonLocked ends a catch-up that will not finish (the subscription
// ended, or failed).
func (cu *catchup) abandonLocked(sub Subscriber) {
	cu.dropLocked(sub)
	cu.cancel()
}

// Catch-up page sizes: the largest page in messages, and what a message
// adds to its data when pushed (op, channel, offset, publisher), in bytes
// beyond the channel name.
const (
	maxPage      = 256
	pushOverhead = 128
)

// pageLimit is how many messages a page of channel name reads for sub: all
// of them for a subscriber that is not Paced; otherwise what fits in room
// when every message is as large as largest (with its framing), at least
// one.
func pageLimit(sub Subscriber, name string, room, largest int) int {
	if _, ok := sub.(Paced); !ok {
		return -1
	}
	return min(max(room/(largest+pushOverhead+len(name)), 1), maxPage)
}

// catchUpPage is the first page of a catch-up: its messages, where the
// catch-up reads on when more is true, and whether the subscriber holds a
// page reservation (PageDone once the page is delivered).
type catchUpPage struct {
	broker.HistoryResult
	more     bool
	start    broker.Offset
	reserved bool
}

// firstPage reads where a subscription to name starts (first: Latest and
// whether history reaches back to since) and, when the subscriber has
// room now, the first page of its catch-up.
func (h *Hub) firstPage(ctx context.Context, sub Subscriber, name string, since *broker.Offset) (first broker.HistoryResult, page catchUpPage, err error) {
	if since == nil {
		first, err = h.broker.History(ctx, name, broker.HistoryQuery{Limit: 0})
		return first, catchUpPage{}, err
	}
	limit := -1
	if p, ok := sub.(Paced); ok {
		limit = 0 // no room now: all of it in the background
		if room := p.TryRoom(); room > 0 {
			page.reserved = true
			limit = pageLimit(sub, name, room, h.maxMessage)
		}
	}
	page.start = *since
	if since.IsZero() && limit >= 0 {
		// "Everything history holds": the zero since reads the newest
		// messages, so page from the start of the epoch instead.
		first, err = h.broker.History(ctx, name, broker.HistoryQuery{Limit: 0})
		if err != nil || first.Latest.IsZero() {
			return first, page, err
		}
		page.start = broker.Offset{Epoch: first.Latest.Epoch}
		if limit > 0 {
			page.HistoryResult, err = h.broker.History(ctx, name, broker.HistoryQuery{Since: page.start, Limit: limit})
		}
	} else {
		first, err = h.broker.History(ctx, name, broker.HistoryQuery{Since: *since, Limit: limit})
		page.HistoryResult = first
	}
	page.more = limit >= 0 && len(page.Messages) >= limit
	return first, page, err
}

// deliverReplay hands the catch-up messages its filter passes to sub and
// returns the offset of the last message and the size of the largest.
func (e *entry) deliverReplay(sub Subscriber, msgs []broker.Message) (last broker.Offset, largest int) {
	for _, m := range msgs {
		e.replayOne(sub, m)
		last, largest = m.Offset, max(largest, len(m.Data))
	}
	return last, largest
}

// replayOne hands sub one message it asked for (catch-up), whole, when
// its filter passes it.
func (e *entry) replayOne(sub Subscriber, m broker.Message) {
	if !e.passes(m) {
		return
	}
	sub.Deliver(&Delivery{Message: m, Replay: true})
	e.handed(m)
}

// finishLocked ends a catch-up that reached last: the live messages
// buffered meanwhile that came after it follow (not those of an epoch the
// channel moved past), and sub is live. A subscriber that a repair found
// missing messages meanwhile is told now.
func (e *entry) finishLocked(ch *channel, sub Subscriber, last broker.Offset) {
	cu := e.cu
	for _, m := range cu.buf {
		if m.Offset.Epoch == last.Epoch && m.Offset.Seq > last.Seq ||
			m.Offset.Epoch != last.Epoch && !ch.endedLocked(m.Offset.Epoch) {
			e.replayOne(sub, m)
		}
	}
	cu.abandonLocked(sub) // its bytes are queued now, and counted there
	e.cu, e.from = nil, last
	if s, ok := sub.(Interruptible); ok && cu.missed {
		s.MissedMessages()
	}
}

// catchUp reads the rest of sub's catch-up after last, a page at a time
// as a Paced subscriber drains, until history holds no more; then sub is
// live. It ends early when the subscription ends, when the subscriber
// closes, or on Stop. When history no longer holds the next message sub
// needs, sub is told: it fell behind (history trimmed), or it missed
// messages (history went to a new epoch).
func (h *Hub) catchUp(ch *channel, sub Subscriber, e *entry, last broker.Offset, largest int) {
	cu := e.cu
	wait := 50 * time.Millisecond
	for {
		done, err := h.catchUpPage(ch, sub, e, &last, &largest)
		switch {
		case done || cu.ctx.Err() != nil:
			return
		case err != nil:
			h.log.Warn("catch-up: read history", "channel", ch.name, "err", err)
			select {
			case <-cu.ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 2*time.Second)
		default:
			wait = 50 * time.Millisecond
		}
	}
}

// catchUpPage reads and delivers one page of a catch-up after *last, and
// reports whether the catch-up is over (finished, or given up).
func (h *Hub) catchUpPage(ch *channel, sub Subscriber, e *entry, last *broker.Offset, largest *int) (bool, error) {
	cu := e.cu
	limit := -1
	if p, ok := sub.(Paced); ok {
		room, err := p.WaitRoom(cu.ctx)
		if err != nil {
			return true, nil // the subscriber closed, or the subscription ended
		}
		defer p.PageDone()
		limit = pageLimit(sub, ch.name, room, *largest)
	}
	ctx, cancel := context.WithTimeout(cu.ctx, repairTimeout)
	res, err := h.broker.History(ctx, ch.name, broker.HistoryQuery{Since: *last, Limit: limit})
	cancel()
	if err != nil {
		return false, err
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.subs[sub] != e {
		return true, nil // unsubscribed meanwhile
	}
	if !res.Complete && !cu.unrecovered {
		// History no longer holds what comes after last: a new epoch
		// lost the old one's end, or history was trimmed past it.
		cu.abandonLocked(sub)
		if s, ok := sub.(Interruptible); ok && res.Latest.Epoch != last.Epoch {
			s.MissedMessages()
		} else if p, ok := sub.(Paced); ok {
			p.FellBehind()
		}
		return true, nil
	}
	if len(res.Messages) > 0 {
		cu.unrecovered = false // it has something now: a gap after it is news
		var big int
		*last, big = e.deliverReplay(sub, res.Messages)
		*largest = max(*largest, big)
	}
	switch {
	case limit >= 0 && len(res.Messages) >= limit:
		return false, nil
	case cu.overflow:
		// Live messages were dropped after this page was read: history
		// has them, read on.
		cu.overflow = false
		return false, nil
	}
	e.finishLocked(ch, sub, *last)
	return true, nil
}
