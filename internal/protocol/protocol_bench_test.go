package protocol_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/protocol"
)

var benchSizes = []int{128, 1024, 16384}

func sizeName(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%dKiB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}

// benchData is a JSON object of about n bytes.
func benchData(n int) string {
	const head = `{"text":"`
	return head + strings.Repeat("x", max(0, n-len(head)-2)) + `"}`
}

func BenchmarkDecodeCommand(b *testing.B) {
	cases := []struct{ name, frame string }{
		{"op=ping", `{"id":7,"op":"ping"}`},
		{"op=subscribe", `{"id":1,"op":"subscribe","channel":"chat:room1","since":"42-a1b2c3"}`},
	}
	for _, size := range benchSizes {
		cases = append(cases, struct{ name, frame string }{
			"op=publish/size=" + sizeName(size),
			`{"id":2,"op":"publish","channel":"chat:room1","event":"msg","data":` + benchData(size) + `}`,
		})
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			frame := []byte(c.frame)
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := protocol.DecodeCommand(frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMessagePush(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("size="+sizeName(size), func(b *testing.B) {
			m := broker.Message{
				Channel: "chat:room1",
				Offset:  broker.Offset{Epoch: "a1b2c3d4", Seq: 123456},
				Data:    []byte(benchData(size)),
				Event:   "msg",
				User:    "alice",
				Client:  "K3J9-1z",
				Time:    time.Unix(1700000000, 0),
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if len(protocol.MessagePush(m)) == 0 {
					b.Fatal("empty push")
				}
			}
		})
	}
}

// BenchmarkSSEEvent is the SSE writer's per-message work: the event (once
// per message, shared by every stream) and the stream's cursor (once per
// stream and message).
func BenchmarkSSEEvent(b *testing.B) {
	for _, size := range benchSizes {
		b.Run("size="+sizeName(size), func(b *testing.B) {
			m := broker.Message{
				Channel: "chat:room1",
				Offset:  broker.Offset{Epoch: "a1b2c3d4", Seq: 123456},
				Data:    []byte(benchData(size)),
				Event:   "msg",
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if len(protocol.SSEEvent(m)) == 0 {
					b.Fatal("empty event")
				}
			}
		})
	}
	b.Run("cursor/channels=4", func(b *testing.B) {
		c := protocol.SSECursor{
			{Channel: "chat:room1", Offset: broker.Offset{Epoch: "a1b2c3d4", Seq: 123456}},
			{Channel: "chat:room2", Offset: broker.Offset{Epoch: "a1b2c3d4", Seq: 99}},
			{Channel: "news", Offset: broker.Offset{Epoch: "e5f6a7b8", Seq: 7}},
			{Channel: "alerts", Offset: broker.Offset{}},
		}
		b.ReportAllocs()
		for b.Loop() {
			if c.String() == "" {
				b.Fatal("empty cursor")
			}
		}
	})
}
