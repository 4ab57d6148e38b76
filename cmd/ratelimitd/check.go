package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/vibewell/ratelimit/httpapi"
)

// checkConfig is the configuration of `ratelimitd check`.
type checkConfig struct {
	Addr    string
	CACert  string
	Hits    int64
	Timeout time.Duration
}

func checkSettings(c *checkConfig) []setting {
	return []setting{
		stringOpt(&c.Addr, "addr", "http://127.0.0.1:8080", "Base URL of a ratelimitd node; host:port means http://host:port.").noFile(),
		caCertSetting(&c.CACert),
		intOpt(&c.Hits, 0, math.MaxInt64, "hits", "1", "Hits to take; 0 peeks without consuming.").noFile(),
		durationOpt(&c.Timeout, time.Millisecond, "timeout", "5s", "How long to wait for the answer.").noFile(),
	}
}

func checkUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: ratelimitd check [flags] POLICY KEY")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Asks a node for a decision and prints it. Exit status: 0 allowed, 1 denied,")
	fmt.Fprintln(w, "2 error.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Settings:")
	var c checkConfig
	writeSettings(w, checkSettings(&c))
}

// runCheck sends one check to a node and prints the decision.
func runCheck(ctx context.Context, s sys, args []string) int {
	var c checkConfig
	res, err := resolve(checkSettings(&c), resolveInput{
		Args: args, Getenv: s.getenv, ReadFile: s.readFile, Usage: checkUsage, Help: s.stdout,
	})
	if err != nil {
		return fail(s, "check", err)
	}
	if len(res.Args) != 2 {
		return fail(s, "check", fmt.Errorf("want POLICY KEY, got %d arguments (see --help)", len(res.Args)))
	}
	policy, key := res.Args[0], res.Args[1]
	hc, err := nodeClient(c.Timeout, c.CACert, s.readFile)
	if err != nil {
		return fail(s, "check", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	client := httpapi.Client{BaseURL: nodeURL(c.Addr), HTTPClient: hc}
	d, err := client.Check(ctx, policy, key, c.Hits)
	if err != nil {
		fmt.Fprintf(s.stderr, "ratelimitd check: %v\n", err)
		return exitUsage
	}
	verdict := "allowed"
	if !d.Allowed {
		verdict = "denied"
	}
	fmt.Fprintf(s.stdout, "%s policy=%s key=%q limit=%d remaining=%d reset_after=%v retry_after=%v\n",
		verdict, policy, key, d.Limit, d.Remaining, d.ResetAfter, d.RetryAfter)
	if !d.Allowed {
		return exitDenied
	}
	return exitOK
}

// runVersion prints the module version, the VCS revision the binary was
// built from (when the build recorded it) and the Go version.
func runVersion(_ context.Context, s sys, args []string) int {
	if len(args) > 0 {
		if args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
			fmt.Fprintln(s.stdout, "Usage: ratelimitd version")
			return exitOK
		}
		return fail(s, "version", fmt.Errorf("takes no arguments, got %q", args[0]))
	}
	fmt.Fprint(s.stdout, versionText(debug.ReadBuildInfo()))
	return exitOK
}

// versionText formats build information; ok is false when the binary
// carries none.
func versionText(bi *debug.BuildInfo, ok bool) string {
	var b strings.Builder
	version, path := "unknown", "github.com/vibewell/ratelimit"
	settings := map[string]string{}
	if ok {
		if bi.Main.Path != "" {
			path = bi.Main.Path
		}
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, kv := range bi.Settings {
			settings[kv.Key] = kv.Value
		}
	}
	fmt.Fprintf(&b, "ratelimitd %s\nmodule %s\n", version, path)
	if rev := settings["vcs.revision"]; rev != "" {
		modified := ""
		if settings["vcs.modified"] == "true" {
			modified = " (modified)"
		}
		fmt.Fprintf(&b, "revision %s%s", rev, modified)
		if t := settings["vcs.time"]; t != "" {
			fmt.Fprintf(&b, " from %s", t)
		}
		b.WriteString("\n")
	} else {
		b.WriteString("revision unknown (built without VCS information)\n")
	}
	fmt.Fprintf(&b, "built with %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return b.String()
}
