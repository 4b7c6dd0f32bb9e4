// Package broker is herald's plug-in contract for message brokers.
//
// A Broker assigns every published message its offset, keeps each channel's
// history and delivers every message to every herald node that subscribed to
// its channel — this node included — through the one Handler the node
// registered with Start. The in-memory broker (broker/memory) calls the
// Handler inline; brokers that span several nodes (Redis, NATS) call it from
// their receive loops. Either way the hub above runs the same code.
//
// Guarantees every implementation gives (checked by broker/brokertest):
//   - Publish returns only after the message is stored in history (when the
//     channel keeps history) and handed to the fan-out; its offset is greater
//     than every earlier offset of that channel.
//   - The Handler sees the messages of one channel in offset order, each once,
//     with Prev naming the previous message of the channel.
//   - History returns messages oldest first, and reports whether it reaches
//     back to the offset asked for.
package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
)

// ErrUnavailable is returned (wrapped) by every Broker method when the
// broker's backing service cannot be reached. herald maps it to the
// `unavailable` error code and HTTP 503.
var ErrUnavailable = errors.New("broker unavailable")

// Offset is a message's position in its channel. Seq grows strictly within a
// channel; Epoch names one life of the channel's history, so that an offset
// taken before the history was lost (a broker restart, an expired channel) is
// recognised as such. The zero Offset means "before the first message".
type Offset struct {
	Epoch string
	Seq   uint64
}

// IsZero reports whether o is the zero Offset.
func (o Offset) IsZero() bool { return o.Seq == 0 && o.Epoch == "" }

// String returns the wire form "SEQ-EPOCH", or "" for the zero Offset.
func (o Offset) String() string {
	if o.IsZero() {
		return ""
	}
	return strconv.FormatUint(o.Seq, 10) + "-" + o.Epoch
}

// ParseOffset parses the wire form made by Offset.String. The empty string
// parses to the zero Offset.
func ParseOffset(s string) (Offset, error) {
	if s == "" {
		return Offset{}, nil
	}
	seq, epoch, ok := strings.Cut(s, "-")
	if !ok || epoch == "" || len(epoch) > 64 {
		return Offset{}, errors.New("offset: want SEQ-EPOCH")
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return Offset{}, errors.New("offset: sequence is not a number")
	}
	return Offset{Epoch: epoch, Seq: n}, nil
}

// Message is one message of a channel, as stored in history and delivered.
type Message struct {
	Channel string
	Offset  Offset
	// Prev is the Seq of the channel's previous message in the same epoch,
	// 0 for the first. Seqs need not be contiguous, so Prev is how a
	// receiver sees that it missed a message: a Prev above the last Seq it
	// got.
	Prev uint64
	// Data is the message's JSON value, or its raw bytes when Binary is set
	// (a binary frame published in raw WebSocket mode).
	Data   json.RawMessage
	Binary bool
	// Event is the optional event name the publisher gave.
	Event string
	// User and Client name the publisher; both are empty for the server API.
	User   string
	Client string
	// Time is when the broker accepted the message.
	Time time.Time
	// Trace is the W3C traceparent of the publish that made the message
	// ("" when it was not traced): each node's fan-out continues that
	// trace. Brokers carry it live and keep it in history.
	Trace string
	// Tags are the publisher's string tags (nil for none), which
	// subscribers' filters match; Key is its conflation key ("" for
	// none). Brokers carry both live and keep them in history.
	Tags map[string]string
	Key  string
	// Ended is set on the first message of an epoch a node started
	// because the broker had lost messages it had acknowledged (it came
	// back with an older state, or without the channel's messages): the
	// newest offset of the lost epoch that node had seen. A receiver that
	// saw less of that epoch may have missed acknowledged messages that
	// no history holds any more, and tells its subscribers so. Zero
	// otherwise. Live delivery is what needs it; history may leave it out.
	Ended Offset
}

// Publication is what a publisher hands to Publish; the broker adds the
// channel, offset and time.
type Publication struct {
	Data   json.RawMessage
	Binary bool
	Event  string
	User   string
	Client string
	// Trace is the traceparent of the publish, carried to Message.Trace.
	Trace string
	// Tags and Key are carried to Message.Tags and Message.Key.
	Tags map[string]string
	Key  string
}

// HistoryOptions are the retention limits of one channel, resolved by the
// caller from its namespace configuration.
type HistoryOptions struct {
	// Size is how many messages the channel keeps; 0 keeps none.
	Size int
	// TTL is how long a message is kept; 0 keeps it until Size pushes it out.
	TTL time.Duration
}

// HistoryQuery selects messages from a channel's history.
type HistoryQuery struct {
	// Since returns only messages after this offset. The zero Offset means
	// no cursor: the newest Limit messages are returned. An offset from
	// another epoch (a history that is gone) returns the oldest messages
	// the current history holds, with Complete false.
	Since Offset
	// Limit caps how many messages are returned: 0 returns none (only the
	// latest offset), a negative value returns all that match.
	Limit int
}

// HistoryResult is the answer to a History call.
type HistoryResult struct {
	// Messages are oldest first.
	Messages []Message
	// Latest is the offset of the newest message the channel ever had in the
	// current epoch (zero for a channel with no history).
	Latest Offset
	// Complete is true when nothing after Since was lost: Since is in the
	// current epoch and history still holds every message after it. For
	// the zero Since it is true when history still holds every message of
	// the current epoch (nothing was trimmed or expired).
	Complete bool
}

// ClientInfo names one subscribed connection in presence, join and leave.
type ClientInfo struct {
	Client string `json:"client"`
	User   string `json:"user"`
	// Transport is how the client is connected: "websocket" (the JSON protocol
	// on /ws), "raw" (a raw WebSocket on /ws/{channel}) or "sse" (a
	// Server-Sent Events stream, which only reads). Empty where whoever
	// recorded the entry did not say. A Broker keeps it as it keeps User.
	Transport string `json:"transport,omitempty"`
	// Info is what the application said of the connection when it let it
	// in (any JSON value, compact), shown in presence; nil for none.
	// A PresenceStore keeps it as given and replaces it on every
	// AddPresence of the client. Joins and leaves need not carry it.
	Info json.RawMessage `json:"info,omitempty"`
}

// Handler receives what a Broker delivers to this node. Calls for one channel
// are made one at a time, in offset order; they must not block.
type Handler interface {
	// HandleMessage is called for every message of a channel this node is
	// subscribed to.
	HandleMessage(m Message)
	// HandleJoin and HandleLeave are called for presence changes published
	// with PublishJoin and PublishLeave on any node.
	HandleJoin(channel string, c ClientInfo)
	HandleLeave(channel string, c ClientInfo)
	// HandleReconnect is called after the broker got its backing service
	// back following an outage, once it receives live messages again.
	// Messages published meanwhile may never reach HandleMessage; they are
	// in History, where the Handler can read them.
	HandleReconnect()
}

// Broker moves messages between herald nodes and keeps channel history.
// All methods are safe for concurrent use.
type Broker interface {
	// Start connects the broker and registers h; it is called once, before
	// any other method.
	Start(ctx context.Context, h Handler) error
	// Subscribe makes this node receive channel's messages and join/leave
	// events through the Handler. Calls are not counted: one Unsubscribe
	// undoes any number of Subscribes.
	Subscribe(ctx context.Context, channel string) error
	// Unsubscribe stops delivery of channel to this node.
	Unsubscribe(ctx context.Context, channel string) error
	// Publish stores p in channel's history under opts and delivers it to
	// every subscribed node; it returns the offset it assigned.
	Publish(ctx context.Context, channel string, p Publication, opts HistoryOptions) (Offset, error)
	// History reads channel's history.
	History(ctx context.Context, channel string, q HistoryQuery) (HistoryResult, error)
	// PublishJoin and PublishLeave deliver a presence change to every
	// subscribed node. They are not stored in history.
	PublishJoin(ctx context.Context, channel string, c ClientInfo) error
	PublishLeave(ctx context.Context, channel string, c ClientInfo) error
	// Close releases the broker's resources; no Handler call starts after it
	// returns.
	Close() error
}

// HealthChecker is an optional ability of a Broker that depends on a
// backing service: herald's /healthz asks it whether that service answers.
type HealthChecker interface {
	// Healthy returns nil when the backing service answers within ctx, and
	// an error wrapping ErrUnavailable otherwise (a closed broker included).
	// It must be cheap: it is called on every health probe.
	Healthy(ctx context.Context) error
}

// PresenceStore keeps who is subscribed to each channel, across all nodes.
type PresenceStore interface {
	// AddPresence records c as subscribed to channel.
	AddPresence(ctx context.Context, channel string, c ClientInfo) error
	// RemovePresence forgets c in channel.
	RemovePresence(ctx context.Context, channel string, c ClientInfo) error
	// Presence lists channel's subscribers.
	Presence(ctx context.Context, channel string) ([]ClientInfo, error)
}

// NewEpoch returns a fresh random epoch name, for a broker starting a
// channel's history, or starting it again after losing it.
func NewEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
