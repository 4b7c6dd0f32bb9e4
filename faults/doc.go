// Package faults holds herald's fault-injection suite: its tests start
// Redis and NATS servers of their own, kill them, restart them (with
// their data, empty, or from an older copy of it) while clients publish
// flat out and subscribers resume across two herald nodes, and check after
// each fault that every acknowledged message reached every subscriber once
// and in order, or that the subscriber was told `recovered: false`.
//
// Run it with `go test ./faults` (it is part of `go test ./...`); it needs
// the redis-server and nats-server programs on PATH.
package faults
