package main

import (
	_ "embed"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"gopkg.in/yaml.v3"

	"github.com/heraldhq/herald"
)

// defaultsYAML holds what herald serve runs with that is not a plain
// flag default: the demo's chat namespace.
//
//go:embed defaults.yaml
var defaultsYAML []byte

// layers gives each flag that is not on the command line its value from
// the environment (HERALD_ + the name in upper case, '-' as '_'), else
// from the --config file (commands with a --config flag only), else its
// default; and it remembers where each value came from. It is the
// parser's kong.Resolver; load fills it before the parser resolves.
type layers struct {
	env        map[string]string
	values     map[string]string // flag name → value text from env or file
	sources    map[string]string // flag name → "--name", "HERALD_NAME", the file's path, or "default"
	namespaces map[string]herald.Namespace
}

func newLayers(env []string) *layers {
	return &layers{
		env:        envToMap(env),
		values:     map[string]string{},
		sources:    map[string]string{},
		namespaces: map[string]herald.Namespace{},
	}
}

// Validate implements kong.Resolver.
func (l *layers) Validate(*kong.Application) error { return nil }

// Resolve implements kong.Resolver.
func (l *layers) Resolve(_ *kong.Context, _ *kong.Path, f *kong.Flag) (any, error) {
	if v, ok := l.values[f.Name]; ok {
		return v, nil
	}
	return nil, nil
}

// origin names where flag name's value came from, for an error about a
// value checked after parsing: "--name", "HERALD_NAME", or "FILE: name".
func (l *layers) origin(name string) string {
	switch src := l.sources[name]; src {
	case "", "default", "--" + name:
		return "--" + name
	case envName(name):
		return src
	default:
		return src + ": " + name
	}
}

// layered reports whether a flag may come from the environment and the
// file: not --help, --version and the few that say environ:"-".
func layered(f *kong.Flag) bool {
	return f.Name != "help" && f.Tag.Get("environ") != "-"
}

// load reads the environment and the config file for the selected
// command, checking every value as its flag would. It runs before the
// parser resolves flags (kong's BeforeResolve).
func (l *layers) load(kctx *kong.Context) error {
	flags := map[string]*kong.Flag{}
	for _, f := range kctx.Flags() {
		if layered(f) {
			flags[f.Name] = f
			l.sources[f.Name] = "default"
		}
	}
	for _, p := range kctx.Path {
		if p.Flag != nil {
			l.sources[p.Flag.Name] = "--" + p.Flag.Name
		}
	}
	set := func(f *kong.Flag, v, source string) error {
		if err := checkValue(f, v); err != nil {
			return fmt.Errorf("%s: %w", source, err)
		}
		l.values[f.Name], l.sources[f.Name] = v, source
		return nil
	}

	if cf, ok := flags["config"]; ok {
		def, err := parseConfigFile(defaultsYAML, nil)
		if err != nil {
			return fmt.Errorf("embedded defaults: %w", err)
		}
		def.mergeNamespaces(l.namespaces)
		path, _ := kctx.FlagValue(cf).(string)
		from := "--config"
		if !strings.HasPrefix(l.sources["config"], "--") {
			path, from = l.env[envName("config")], envName("config")
		}
		if path != "" {
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("%s: %w", from, err)
			}
			file, err := parseConfigFile(b, flags)
			if err != nil {
				return fmt.Errorf("config %s: %w", path, err)
			}
			file.mergeNamespaces(l.namespaces)
			for _, name := range sortedKeys(file.values) {
				if secretSettings[name] && file.values[name] == masked {
					return fmt.Errorf("config %s: key %q: %s is how herald config masks a secret: put the secret there", path, name, masked)
				}
				if l.sources[name] == "default" {
					if err := set(flags[name], file.values[name], path+": "+name); err != nil {
						return err
					}
					l.sources[name] = path
				}
			}
		}
	}
	for _, name := range sortedKeys(flags) {
		if v, ok := l.env[envName(name)]; ok && !strings.HasPrefix(l.sources[name], "--") {
			if err := set(flags[name], v, envName(name)); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkValue parses v as flag f would, into a value of its own.
func checkValue(f *kong.Flag, v string) error {
	scan := kong.ScanFromTokens(kong.Token{Type: kong.FlagValueToken, Value: v})
	if err := f.Mapper.Decode(&kong.DecodeContext{Value: f.Value, Scan: scan}, reflect.New(f.Target.Type()).Elem()); err != nil {
		return err
	}
	if f.Enum != "" && !slices.Contains(f.EnumSlice(), v) {
		return fmt.Errorf("want one of %s; got %q", strings.Join(f.EnumSlice(), ", "), v)
	}
	return nil
}

// configFile is what a --config file (or the embedded defaults) holds.
type configFile struct {
	values     map[string]string // flag name → value text
	namespaces map[string]namespaceRules
}

// namespaceRules are one namespace's keys in a config file; a key left
// out keeps what an earlier layer (the embedded defaults) said.
type namespaceRules struct {
	HistorySize        *int           `yaml:"history-size"`
	HistoryTTL         *time.Duration `yaml:"history-ttl"`
	Presence           *bool          `yaml:"presence"`
	JoinLeave          *bool          `yaml:"join-leave"`
	ClientPublish      *bool          `yaml:"client-publish"`
	AnonymousSubscribe *bool          `yaml:"anonymous-subscribe"`
	AnonymousPublish   *bool          `yaml:"anonymous-publish"`
	Overflow           *string        `yaml:"overflow"`
	Receipts           *bool          `yaml:"receipts"`
	ReceiptTimeout     *time.Duration `yaml:"receipt-timeout"`
}

// apply sets what r says on ns.
func (r namespaceRules) apply(ns herald.Namespace) herald.Namespace {
	if r.HistorySize != nil {
		ns.HistorySize = *r.HistorySize
	}
	if r.HistoryTTL != nil {
		ns.HistoryTTL = *r.HistoryTTL
	}
	if r.Presence != nil {
		ns.NoPresence = !*r.Presence
	}
	if r.JoinLeave != nil {
		ns.JoinLeave = *r.JoinLeave
	}
	if r.ClientPublish != nil {
		ns.NoClientPublish = !*r.ClientPublish
	}
	if r.AnonymousSubscribe != nil {
		ns.NoAnonymousSubscribe = !*r.AnonymousSubscribe
	}
	if r.AnonymousPublish != nil {
		ns.NoAnonymousPublish = !*r.AnonymousPublish
	}
	if r.Overflow != nil {
		ns.Overflow = *r.Overflow
	}
	if r.Receipts != nil {
		ns.Receipts = *r.Receipts
	}
	if r.ReceiptTimeout != nil {
		ns.ReceiptTimeout = *r.ReceiptTimeout
	}
	return ns
}

// namespaceKeys are the keys a namespace may have, from namespaceRules.
func namespaceKeys() []string {
	t := reflect.TypeFor[namespaceRules]()
	keys := make([]string, t.NumField())
	for i := range keys {
		keys[i] = t.Field(i).Tag.Get("yaml")
	}
	return keys
}

// mergeNamespaces applies the file's namespace rules onto into.
func (c *configFile) mergeNamespaces(into map[string]herald.Namespace) {
	for name, r := range c.namespaces {
		into[name] = r.apply(into[name])
	}
}

// parseConfigFile reads a config file: every key a flag of flags (its
// value a single scalar) or namespaces. nil flags allows namespaces only.
// Unknown keys are errors that name the key.
func parseConfigFile(b []byte, flags map[string]*kong.Flag) (*configFile, error) {
	var doc map[string]yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	c := &configFile{values: map[string]string{}, namespaces: map[string]namespaceRules{}}
	for _, k := range sortedKeys(doc) {
		node := doc[k]
		switch {
		case k == "namespaces":
			if err := c.readNamespaces(&node); err != nil {
				return nil, err
			}
		case k == "config":
			return nil, fmt.Errorf("key %q: a config file cannot name another", k)
		case flags[k] != nil:
			switch {
			case node.Kind == yaml.ScalarNode:
				c.values[k] = node.Value
			case node.Kind == yaml.SequenceNode && flags[k].IsSlice():
				items := make([]string, len(node.Content))
				for i, n := range node.Content {
					if n.Kind != yaml.ScalarNode {
						return nil, fmt.Errorf("key %q: line %d: want a list of single values", k, n.Line)
					}
					items[i] = n.Value
				}
				c.values[k] = strings.Join(items, ",")
			default:
				return nil, fmt.Errorf("key %q: want a single value", k)
			}
		default:
			return nil, fmt.Errorf("unknown key %q", k)
		}
	}
	return c, nil
}

// readNamespaces reads the namespaces key: each namespace's keys are
// decoded one by one, so that an error names the key and its line.
func (c *configFile) readNamespaces(node *yaml.Node) error {
	var nss map[string]map[string]yaml.Node
	if err := node.Decode(&nss); err != nil {
		return fmt.Errorf("key \"namespaces\": want a map of namespace names to rules: %w", err)
	}
	fields := map[string]int{} // key → namespaceRules field
	t := reflect.TypeFor[namespaceRules]()
	for i := range t.NumField() {
		fields[t.Field(i).Tag.Get("yaml")] = i
	}
	for _, name := range sortedKeys(nss) {
		var r namespaceRules
		for _, k := range sortedKeys(nss[name]) {
			i, ok := fields[k]
			if !ok {
				return fmt.Errorf("key \"namespaces.%s.%s\": unknown key (want one of %s)", name, k, strings.Join(namespaceKeys(), ", "))
			}
			v := nss[name][k]
			if err := v.Decode(reflect.ValueOf(&r).Elem().Field(i).Addr().Interface()); err != nil {
				return fmt.Errorf("key \"namespaces.%s.%s\": %w", name, k, err)
			}
		}
		c.namespaces[name] = r
	}
	return nil
}

// envName is the environment variable of a flag.
func envName(name string) string {
	return "HERALD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func envToMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
