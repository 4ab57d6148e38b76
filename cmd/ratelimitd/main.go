// Command ratelimitd runs a rate-limiting node and talks to one.
//
//	ratelimitd serve                       # a node on 127.0.0.1:8080 with the built-in policies
//	ratelimitd check auth ip:203.0.113.7   # ask a node for a decision
//	ratelimitd version
//
// Every setting of serve is a flag, an environment variable and a config-file
// field; `ratelimitd serve --help` lists them.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, restore the default handling, so a second
		// one ends the process at once.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK     = 0 // success; for check: allowed
	exitDenied = 1 // check: denied
	exitFailed = 1 // serve: a failure after the configuration was read
	exitUsage  = 2 // bad arguments or configuration; for check: an error
)

// sys is what a subcommand may use of the outside world. Tests pass fakes.
type sys struct {
	getenv   func(string) string
	readFile func(string) ([]byte, error)
	stdout   io.Writer
	stderr   io.Writer
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, s sys, args []string) int
}

// commands is the subcommand table.
func commands() []command {
	return []command{
		{"serve", "run a node with the HTTP check API", runServe},
		{"check", "ask a node for a decision: check [--addr URL] [--hits N] POLICY KEY", runCheck},
		{"policy", "list, get, set and delete policies and overrides of a running cluster", runPolicy},
		{"top", "the most denied keys of a policy, cluster-wide, like top(1): top [--window 5m] POLICY", runTop},
		{"owner", "where a key's counter lives and its value: owner POLICY KEY", runOwner},
		{"keygen", "print a new cluster key, for --cluster-key (RATELIMIT_CLUSTER_KEY)", runKeygen},
		{"version", "print the version, VCS revision and Go version", runVersion},
		{"bench", "load a node, a cluster or Redis; report throughput, latency and accuracy", runBench},
	}
}

// run is the whole program: it runs the subcommand named by args[0] and
// returns the exit code. ctx is cancelled on SIGINT or SIGTERM.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	s := sys{getenv: getenv, readFile: os.ReadFile, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, s, args[1:])
		}
	}
	fmt.Fprintf(stderr, "ratelimitd: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: ratelimitd COMMAND [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run `ratelimitd COMMAND --help` for the flags of a command.")
}

// fail reports a start-up error and returns exitUsage; --help returns
// exitOK.
func fail(s sys, cmd string, err error) int {
	if errors.Is(err, errHelp) {
		return exitOK
	}
	fmt.Fprintf(s.stderr, "ratelimitd %s: %v\n", cmd, err)
	return exitUsage
}
