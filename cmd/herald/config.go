package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/heraldhq/herald/internal/mask"
)

// secretSettings are printed masked.
var secretSettings = map[string]bool{"api-key": true, "token-secret": true, "admin-token": true}

// configCmd prints the configuration herald serve would run with, given
// the same flags and environment: every setting, where its value came
// from, secrets masked, unset ones as comments. Its output is a valid
// config file (with the masked secrets to fill in).
func configCmd(_ context.Context, args, env []string, stdout, stderr io.Writer) error {
	s, err := loadSettings(args, env, stderr)
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("# herald's effective configuration: flags > environment > config file > built-in defaults.\n")
	b.WriteString("# Secrets are masked; each line says where its value came from.\n")
	for _, o := range options() {
		v, ok := s.values[o.name]
		if !ok {
			fmt.Fprintf(&b, "# %s: (unset) %s\n", o.name, o.usage)
			continue
		}
		src := s.sources[o.name]
		switch {
		case secretSettings[o.name] && v != "":
			v = "****"
		case o.name == "broker":
			v = mask.URL(v)
		}
		fmt.Fprintf(&b, "%s: %s # %s\n", o.name, yamlScalar(v), src)
	}
	names := make([]string, 0, len(s.namespaces))
	for n := range s.namespaces {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) > 0 {
		b.WriteString("namespaces:\n")
	}
	for _, n := range names {
		ns := s.namespaces[n]
		fmt.Fprintf(&b, "  %s:\n", yamlScalar(n))
		if ns.HistorySize != 0 {
			fmt.Fprintf(&b, "    history-size: %d\n", ns.HistorySize)
		}
		if ns.HistoryTTL != 0 {
			fmt.Fprintf(&b, "    history-ttl: %s\n", ns.HistoryTTL)
		}
		for _, f := range []struct {
			key string
			on  bool
		}{
			{"presence", !ns.NoPresence},
			{"join-leave", ns.JoinLeave},
			{"client-publish", !ns.NoClientPublish},
			{"anonymous-subscribe", !ns.NoAnonymousSubscribe},
			{"anonymous-publish", !ns.NoAnonymousPublish},
		} {
			fmt.Fprintf(&b, "    %s: %s\n", f.key, strconv.FormatBool(f.on))
		}
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}

// yamlScalar writes v as a YAML scalar, quoted where YAML needs it.
func yamlScalar(v string) string {
	out, err := yaml.Marshal(v)
	if err != nil {
		return strconv.Quote(v)
	}
	return strings.TrimSuffix(string(out), "\n")
}
