// Command herald is the herald server and its command-line tools.
//
//	herald [serve] [flags]   run the server (the default)
//	herald pub CHANNEL DATA  publish (as a client with --token, else through the server API)
//	herald sub CHANNEL...    print messages as they come
//	herald disconnect (--user U | --client C) [--reason R]
//	                         close connections (server API; the other orders too)
//	herald subscribe (--user U | --client C) [--since OFFSET] CHANNEL
//	herald unsubscribe (--user U | --client C) CHANNEL
//	herald broadcast CHANNEL[,CHANNEL...] DATA   publish to each channel
//	herald connections [--user U] [--json]       list connections
//	herald token --user U    print a client token signed with --token-secret
//	herald config [flags]    print the effective configuration, secrets masked
//	herald bench SCENARIO    load-test a running server
//	herald version           print the version
//	herald help [COMMAND]    list the commands, or one command's flags
//
// Flags, environment variables and the config file are parsed by kong
// (github.com/alecthomas/kong): the command line is declared as the
// structs below, so a flag's type, default, group and help live in one
// place, values are checked when they are parsed, and a mistyped flag
// gets the nearest one suggested. (kong over cobra with pflag, or ff:
// neither suggests a flag or groups one command's flags in its help
// without templates of our own, and their usual config layering, viper,
// is process-global; kong's resolvers take the environment and the file
// as run passes them.) Every serve flag is also an environment
// variable (HERALD_ + upper-case name, '-' as '_') and a key of the
// config file (--config FILE, YAML). Flags win over the environment,
// which wins over the file, which wins over the defaults.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/heraldhq/herald/internal/loadtest"
)

// version is set at build time with -ldflags "-X main.version=…"; without
// it herald reports the version of its module.
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) { // the load tool's usage, printed already
			msg := err.Error()
			if !strings.HasPrefix(msg, "herald: ") { // the library's errors say it already
				msg = "herald: " + msg
			}
			fmt.Fprintln(os.Stderr, msg)
		}
		os.Exit(2)
	}
}

// cli is herald's command line.
type cli struct {
	Version bool `help:"Print the version." environ:"-"`

	Serve       serveCmd       `cmd:"" default:"withargs" help:"Run the server (the default command)."`
	Pub         pubCmd         `cmd:"" help:"Publish a message: as a client with --token, else through the server API."`
	Sub         subCmd         `cmd:"" help:"Print messages of channels as they come."`
	Disconnect  disconnectCmd  `cmd:"" help:"Close a user's or a client's connections for good."`
	Subscribe   subscribeCmd   `cmd:"" help:"Subscribe a user's or a client's connections to a channel."`
	Unsubscribe unsubscribeCmd `cmd:"" help:"End a user's or a client's subscriptions to a channel."`
	Broadcast   broadcastCmd   `cmd:"" help:"Publish one message to several channels; print the offsets."`
	Connections connectionsCmd `cmd:"" help:"List connections on every node: a user's, or all."`
	Token       tokenCmd       `cmd:"" help:"Print a client token signed with --token-secret, for development."`
	Config      configCmd      `cmd:"" help:"Print the configuration serve would run with, secrets masked."`
	Bench       benchCmd       `cmd:"" help:"Load-test a running server: herald bench SCENARIO -h for a scenario's flags."`
	VersionCmd  versionCmd     `cmd:"" name:"version" help:"Print the version."`
	Help        helpCmd        `cmd:"" help:"List the commands, or a command's flags (herald help COMMAND)."`
}

// runEnv is what every command runs with.
type runEnv struct {
	ctx            context.Context
	layers         *layers
	stdin          io.Reader
	stdout, stderr io.Writer
}

// exited is how the parser's --help stops the run: kong calls its Exit
// function, which panics with it, and run recovers.
type exited struct{ code int }

// run is herald's main, with its inputs and outputs passed in so tests can
// drive it.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) (err error) {
	return runWithStdin(ctx, args, env, os.Stdin, stdout, stderr)
}

// runWithStdin is run with a stdin of the caller's (herald pub - reads it).
func runWithStdin(ctx context.Context, args, env []string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	var c cli
	l := newLayers(env)
	parser, err := newParser(&c, l, stdout, stderr)
	if err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(exited)
			if !ok {
				panic(r)
			}
			if e.code != 0 {
				err = errors.New("see the usage above")
			}
		}
	}()
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		if err := knownCommand(parser, args[0]); err != nil {
			return err
		}
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		var perr *kong.ParseError
		if errors.As(err, &perr) && perr.Context != nil {
			_ = perr.Context.PrintUsage(true) // the command's usage line, to stdout as help goes
		}
		return err
	}
	if c.Version {
		_, err := fmt.Fprintln(stdout, "herald", heraldVersion())
		return err
	}
	return kctx.Run(&runEnv{ctx: ctx, layers: l, stdin: stdin, stdout: stdout, stderr: stderr})
}

// knownCommand says which command a mistyped one may have meant; serve,
// the default, takes no arguments, so a first word that names no command
// is a typo.
func knownCommand(parser *kong.Kong, name string) error {
	best, bestDistance := "", 3 // suggest only what is 2 edits away at most
	for _, c := range parser.Model.Children {
		if c.Name == name {
			return nil
		}
		if d := editDistance(c.Name, name); d < bestDistance {
			best, bestDistance = c.Name, d
		}
	}
	if best != "" {
		return fmt.Errorf("unknown command %q, did you mean %q? (herald help lists the commands)", name, best)
	}
	return fmt.Errorf("unknown command %q (herald help lists the commands)", name)
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// newParser builds herald's command-line parser over c.
func newParser(c *cli, l *layers, stdout, stderr io.Writer) (*kong.Kong, error) {
	return kong.New(c,
		kong.Name("herald"),
		kong.Description("herald is a real-time messaging server: WebSocket and SSE pub/sub with history, presence and lossless resume."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exited{code}) }),
		kong.ExplicitGroups(flagGroups),
		defaultVars(),
		kong.Resolvers(l),
		kong.WithBeforeResolve(func(kctx *kong.Context) error { return l.load(kctx) }),
		kong.ValueFormatter(withEnvName),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true, WrapUpperBound: 100}),
	)
}

// withEnvName adds the environment variable to a flag's help.
func withEnvName(v *kong.Value) string {
	if v.Flag == nil || !layered(v.Flag) {
		return v.Help
	}
	return v.Help + " ($" + envName(v.Name) + ")"
}

// heraldVersion is the version herald reports.
func heraldVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// versionCmd prints the version.
type versionCmd struct{}

// Run prints the version.
func (versionCmd) Run(r *runEnv) error {
	_, err := fmt.Fprintln(r.stdout, "herald", heraldVersion())
	return err
}

// helpCmd prints the commands, or one command's help.
type helpCmd struct {
	Command []string `arg:"" optional:"" help:"The command to explain."`
}

// Run prints the help of the command named, or of herald; of a bench
// scenario, the scenario's own flags.
func (h helpCmd) Run(r *runEnv) error {
	var c cli
	parser, err := newParser(&c, newLayers(nil), r.stdout, r.stderr)
	if err != nil {
		return err
	}
	if len(h.Command) > 0 {
		if err := knownCommand(parser, h.Command[0]); err != nil {
			return err
		}
	}
	if len(h.Command) > 1 && h.Command[0] == "bench" {
		err := loadtest.Run(r.ctx, []string{h.Command[1], "-h"}, r.stdout, r.stdout) // help goes to stdout
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	_, err = parser.Parse(append(slices.Clone(h.Command), "--help"))
	return err
}

// benchCmd runs the load tool; its scenarios parse their own flags.
type benchCmd struct {
	Args []string `arg:"" optional:"" passthrough:"" help:"A scenario (idle, fanout, sse, channels, churn, or app: a stand-in for the application behind the proxies) and its flags."`
}

// Run runs the load tool.
func (b benchCmd) Run(r *runEnv) error {
	return loadtest.Run(r.ctx, b.Args, r.stdout, r.stderr)
}
