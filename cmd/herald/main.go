// Command herald is the herald server and its command-line tools.
//
//	herald [serve] [flags]   run the server (the default)
//	herald pub CHANNEL DATA  publish (as a client with --token, else through the server API)
//	herald sub CHANNEL...    print messages as they come
//	herald token --user U    print a client token signed with --token-secret
//	herald config [flags]    print the effective configuration, secrets masked
//	herald version           print the version
//
// Every serve flag is also a config-file key (--config FILE, YAML) and an
// environment variable (HERALD_ + upper-case name, '-' as '_'). Flags win
// over the environment, which wins over the file, which wins over the
// embedded defaults.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/heraldhq/herald/internal/loadtest"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "herald:", err)
		}
		os.Exit(2)
	}
}

// run is herald's main, with its inputs and outputs passed in so tests can
// drive it.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, env, stdout, stderr)
	case "pub":
		return pub(ctx, args, env, os.Stdin, stdout, stderr) // tests call pub with a stdin of their own
	case "sub":
		return sub(ctx, args, env, stdout, stderr)
	case "config":
		return configCmd(ctx, args, env, stdout, stderr)
	case "token":
		return token(ctx, args, env, stdout, stderr)
	case "bench":
		return loadtest.Run(ctx, args, stdout, stderr)
	case "version":
		_, err := fmt.Fprintln(stdout, "herald", version)
		return err
	case "help":
		_, err := fmt.Fprint(stdout, usage)
		return err
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
}

const usage = `usage: herald [command] [flags]

commands:
  serve     run the server (the default); herald serve -h lists its flags
  pub       publish: herald pub [--url U] [--token T | --api-key K] [--event E] CHANNEL DATA|-
  sub       print messages as they come: herald sub [--url U] [--token T] [--json] [--since OFFSET] CHANNEL...
  config    print the effective configuration (herald config [serve flags]), secrets masked
  token     print a client token for development: herald token --token-secret S --user U [--sub P] [--pub P] [--ttl D]
  bench     load-test a running server: herald bench idle|fanout|sse -h
  version   print the version
`
