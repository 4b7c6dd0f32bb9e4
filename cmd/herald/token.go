package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/heraldhq/herald/internal/auth"
)

// patterns is a repeatable flag of channel patterns; each value may also
// list several, comma-separated.
type patterns []string

func (p *patterns) String() string { return strings.Join(*p, ",") }

func (p *patterns) Set(v string) error {
	for _, pat := range strings.Split(v, ",") {
		if pat = strings.TrimSpace(pat); pat == "" {
			continue
		}
		if !auth.ValidPattern(pat) {
			return fmt.Errorf("bad channel pattern %q: want a channel name or a prefix ending in *", pat)
		}
		*p = append(*p, pat)
	}
	return nil
}

// token prints an HS256 token signed with --token-secret, for development.
func token(_ context.Context, args, env []string, stdout, stderr io.Writer) error {
	envMap := envToMap(env)
	fs := flag.NewFlagSet("herald token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: herald token --user U [--sub PATTERN]… [--pub PATTERN]… [--ttl D]\n\n"+
			"Prints a client token signed with the server's --token-secret. Without --sub and --pub\n"+
			"the token allows every channel; with either, exactly the patterns given (a channel\n"+
			"name, or a prefix ending in *).\n\n")
		fs.PrintDefaults()
	}
	secret := fs.String("token-secret", envMap["HERALD_TOKEN_SECRET"], "HS256 secret (env HERALD_TOKEN_SECRET)")
	user := fs.String("user", "", "user id (the sub claim)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime (0: the token never expires)")
	var sub, pub patterns
	fs.Var(&sub, "sub", "channels the token may subscribe to; repeat or comma-separate")
	fs.Var(&pub, "pub", "channels the token may publish to; repeat or comma-separate")
	_ = fs.String("url", "", "accepted for symmetry with the other commands; unused")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token: unexpected argument %q", fs.Arg(0))
	}
	if *secret == "" {
		return errors.New("token: no secret: pass --token-secret or set HERALD_TOKEN_SECRET")
	}
	if *ttl < 0 {
		return errors.New("token: --ttl must not be negative")
	}
	spec := auth.Spec{User: *user, TTL: *ttl}
	if len(sub) > 0 || len(pub) > 0 {
		spec.Channels = &auth.Channels{Subscribe: sub, Publish: pub}
	}
	tok, err := auth.MintHS256([]byte(*secret), spec, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
