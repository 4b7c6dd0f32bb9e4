package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"
	"gopkg.in/yaml.v3"

	"github.com/heraldhq/herald/internal/mask"
)

// secretSettings are printed masked.
var secretSettings = map[string]bool{"api-key": true, "token-secret": true, "admin-token": true, "webhook-secret": true}

// masked is what herald config prints for a secret; a config file that
// still holds it is refused.
const masked = "****"

// proxyURLSettings are URLs printed with any password masked, as the
// broker's.
var proxyURLSettings = map[string]bool{"proxy-connect": true, "proxy-subscribe": true, "proxy-publish": true, "proxy-rpc": true, "proxy-refresh": true}

// configCmd prints the configuration herald serve would run with, given
// the same flags and environment: every setting, where its value came
// from, secrets masked, unset ones as comments. Its output is a valid
// config file (with the masked secrets to fill in).
type configCmd struct {
	serveFlags
}

// Run prints the configuration.
func (c *configCmd) Run(r *runEnv, kctx *kong.Context) error {
	s, err := c.settings(r.layers.namespaces, r.layers.origin)
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("# herald's effective configuration: flags > environment > config file > built-in defaults.\n")
	b.WriteString("# Secrets are masked; each line says where its value came from.\n")
	for _, f := range kctx.Flags() {
		if !layered(f) || f.Name == "config" || f.Name == "version" {
			continue
		}
		value := kctx.FlagValue(f)
		v := flagText(value)
		if v == "" && !f.HasDefault {
			fmt.Fprintf(&b, "# %s: (unset) %s\n", f.Name, f.Help)
			continue
		}
		switch {
		case secretSettings[f.Name] && v != "":
			v = masked
		case f.Name == "broker" || f.Name == "outbox" || f.Name == "otel-endpoint" || proxyURLSettings[f.Name]:
			v = mask.URL(v)
		}
		switch value.(type) {
		case string, []string:
			v = yamlScalar(v) // numbers, durations and booleans need no quotes
		}
		fmt.Fprintf(&b, "%s: %s # %s\n", f.Name, v, r.layers.sources[f.Name])
	}
	names := sortedKeys(s.config.Namespaces)
	if len(names) > 0 {
		b.WriteString("namespaces:\n")
	}
	for _, n := range names {
		ns := s.config.Namespaces[n]
		fmt.Fprintf(&b, "  %s:\n", yamlScalar(n))
		if ns.HistorySize != 0 {
			fmt.Fprintf(&b, "    history-size: %d\n", ns.HistorySize)
		}
		if ns.HistoryTTL != 0 {
			fmt.Fprintf(&b, "    history-ttl: %s\n", span(ns.HistoryTTL))
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
			{"receipts", ns.Receipts},
		} {
			fmt.Fprintf(&b, "    %s: %s\n", f.key, strconv.FormatBool(f.on))
		}
		if ns.Overflow != "" {
			fmt.Fprintf(&b, "    overflow: %s\n", ns.Overflow)
		}
		if ns.ReceiptTimeout != 0 {
			fmt.Fprintf(&b, "    receipt-timeout: %s\n", span(ns.ReceiptTimeout))
		}
	}
	_, err = io.WriteString(r.stdout, b.String())
	return err
}

// flagText writes a flag's value as its config-file text.
func flagText(v any) string {
	if list, ok := v.([]string); ok {
		return strings.Join(list, ",")
	}
	return fmt.Sprint(v)
}

// yamlScalar writes v as a YAML scalar, quoted where YAML needs it.
func yamlScalar(v string) string {
	out, err := yaml.Marshal(v)
	if err != nil {
		return strconv.Quote(v)
	}
	return strings.TrimSuffix(string(out), "\n")
}
