package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
)

// The flag value types below check their text when it is parsed, whether
// it comes from a flag, the environment or the config file, so that a
// bad value is refused before anything starts, with the flag's name.

// count is a whole number, 0 or more.
type count int

// Decode implements kong.MapperValue.
func (c *count) Decode(ctx *kong.DecodeContext) error {
	s, err := popText(ctx, "count")
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return fmt.Errorf("want a whole number, 0 or more; got %q", s)
	}
	*c = count(n)
	return nil
}

// perSecond is a rate per second, 0 or more.
type perSecond float64

// Decode implements kong.MapperValue.
func (r *perSecond) Decode(ctx *kong.DecodeContext) error {
	s, err := popText(ctx, "rate")
	if err != nil {
		return err
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f != f {
		return fmt.Errorf("want a number per second, 0 or more; got %q", s)
	}
	*r = perSecond(f)
	return nil
}

// span is a duration, 0 or more, written as Go writes durations (10m,
// 1h30m, 500ms).
type span time.Duration

// Decode implements kong.MapperValue.
func (d *span) Decode(ctx *kong.DecodeContext) error {
	s, err := popText(ctx, "duration")
	if err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("want a duration such as 10m or 500ms; got %q", s)
	}
	*d = span(v)
	return nil
}

// String writes d the short way: 10m rather than 10m0s.
func (d span) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// popText takes a flag's value as text.
func popText(ctx *kong.DecodeContext, what string) (string, error) {
	t, err := ctx.Scan.PopValue(what)
	if err != nil {
		return "", err
	}
	return fmt.Sprint(t.Value), nil
}
