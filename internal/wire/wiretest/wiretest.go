// Package wiretest holds what the transports' tests need to write without
// a session.
package wiretest

import "github.com/heraldhq/herald/internal/wire"

// batch is a wire.Source of payloads fixed in advance.
type batch struct {
	ps      []*wire.Payload
	written func(error)
}

func (b *batch) Take() []*wire.Payload { return b.ps }
func (b *batch) Written(err error)     { b.written(err) }

// Batch returns a Source that gives ps and calls written when they are
// written or failed.
func Batch(ps []*wire.Payload, written func(error)) wire.Source {
	return &batch{ps: ps, written: written}
}
