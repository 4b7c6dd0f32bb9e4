package main

import (
	"io"
)

// loadSettings parses `herald serve ARGS` with env, as run would, and
// returns the settings serve would start with, without starting it.
func loadSettings(args, env []string, stderr io.Writer) (*settings, error) {
	var c cli
	l := newLayers(env)
	parser, err := newParser(&c, l, io.Discard, stderr)
	if err != nil {
		return nil, err
	}
	if _, err := parser.Parse(append([]string{"serve"}, args...)); err != nil {
		return nil, err
	}
	return c.Serve.settings(l.namespaces, l.origin)
}
