package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/heraldhq/herald/internal/auth"
)

// patterns is a repeatable flag of channel patterns; each value may also
// list several, comma-separated.
type patterns []string

// Decode implements kong.MapperValue: it adds the patterns of one value.
func (p *patterns) Decode(ctx *kong.DecodeContext) error {
	v, err := popText(ctx, "pattern")
	if err != nil {
		return err
	}
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

// tokenCmd prints an HS256 token signed with --token-secret, for
// development.
type tokenCmd struct {
	TokenSecret string   `help:"HS256 secret, the server's --token-secret"`
	User        string   `help:"user id (the sub claim)" environ:"-"`
	TTL         span     `name:"ttl" default:"1h" help:"lifetime (0: the token never expires)" environ:"-"`
	Sub         patterns `help:"channels the token may subscribe to: a name, or a prefix ending in *; repeat or comma-separate (none of --sub and --pub: every channel)" placeholder:"PATTERN" environ:"-"`
	Pub         patterns `help:"channels the token may publish to; as --sub" placeholder:"PATTERN" environ:"-"`
	URL         string   `help:"accepted for symmetry with the other commands; unused" environ:"-"`
}

// Run prints the token.
func (c *tokenCmd) Run(r *runEnv) error {
	if c.TokenSecret == "" {
		return errors.New("token: no secret: pass --token-secret or set HERALD_TOKEN_SECRET")
	}
	spec := auth.Spec{User: c.User, TTL: time.Duration(c.TTL)}
	if len(c.Sub) > 0 || len(c.Pub) > 0 {
		spec.Channels = &auth.Channels{Subscribe: c.Sub, Publish: c.Pub}
	}
	tok, err := auth.MintHS256([]byte(c.TokenSecret), spec, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(r.stdout, tok)
	return err
}
