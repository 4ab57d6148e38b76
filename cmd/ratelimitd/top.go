package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vibewell/ratelimit/httpapi"
)

// operatorConfig is the configuration of `ratelimitd top` and `ratelimitd
// owner`: the connection settings of the policy commands, and top's own.
type operatorConfig struct {
	policyConfig
	Window   time.Duration
	N        int64
	Interval time.Duration
}

func topSettings(c *operatorConfig) []setting {
	return append(policyConnSettings(&c.policyConfig),
		durationOpt(&c.Window, time.Minute, "window", "5m", "How far back to count denials: 1m to 15m, in whole minutes.").noFile(),
		intOpt(&c.N, 1, httpapi.MaxTopKeys, "n", "10", "How many keys to show.").noFile(),
		durationOpt(&c.Interval, 0, "interval", "0s", "Refresh the screen this often, as top(1) does, until interrupted; 0 prints once.").noFile(),
		boolOpt(&c.JSON, "json", "Print the node's JSON answer."),
	)
}

func ownerSettings(c *operatorConfig) []setting {
	return append(policyConnSettings(&c.policyConfig), boolOpt(&c.JSON, "json", "Print the node's JSON answer."))
}

// runTop prints the most denied keys of a policy, cluster-wide.
func runTop(ctx context.Context, s sys, args []string) int {
	var c operatorConfig
	client, res, code := operatorClient(s, "top", args, &c, topSettings, 1,
		"top [flags] POLICY",
		"Prints the keys most denied under POLICY over the last --window, counted on every\nmember of the cluster. Each count is at least the true count and at most ±ERR above it.")
	if client == nil {
		return code
	}
	policy := res.Args[0]
	for {
		cctx, cancel := context.WithTimeout(ctx, c.Timeout)
		top, err := client.TopDenied(cctx, policy, c.Window, int(c.N))
		cancel()
		if err != nil {
			if c.Interval > 0 && ctx.Err() != nil {
				return exitOK
			}
			return operatorFail(s, "top", err)
		}
		switch {
		case c.JSON:
			if err := printJSON(s.stdout, top); err != nil {
				return operatorFail(s, "top", err)
			}
		case c.Interval > 0:
			fmt.Fprint(s.stdout, "\x1b[H\x1b[2J") // home and clear, as top(1) redraws
			printTop(s.stdout, client.BaseURL, top, time.Now())
		default:
			printTop(s.stdout, client.BaseURL, top, time.Now())
		}
		if c.Interval <= 0 {
			return exitOK
		}
		select {
		case <-ctx.Done():
			return exitOK
		case <-time.After(c.Interval):
		}
	}
}

// printTop writes a top(1)-like screen: a summary, then one line per key.
func printTop(w io.Writer, addr string, top httpapi.TopDeniedResponse, now time.Time) {
	fmt.Fprintf(w, "ratelimitd top - %s  %s  policy %s, last %s\n", now.UTC().Format("15:04:05"), addr, top.Policy, time.Duration(top.WindowSeconds)*time.Second)
	fmt.Fprintf(w, "Denied: %d total, %d keys shown; nodes: %d answered (%s)", top.Denied, len(top.Keys), len(top.Nodes), strings.Join(top.Nodes, ", "))
	if len(top.Missing) > 0 {
		missing := make([]string, 0, len(top.Missing))
		for name := range top.Missing {
			missing = append(missing, name)
		}
		sort.Strings(missing)
		fmt.Fprintf(w, ", %d missing (%s)", len(missing), strings.Join(missing, ", "))
	}
	fmt.Fprint(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "RANK\tDENIED\t±ERR\t%DENIED\t KEY\t")
	for i, k := range top.Keys {
		share := 0.0
		if top.Denied > 0 {
			share = 100 * float64(k.Count) / float64(top.Denied)
		}
		key := k.Key
		if k.Truncated {
			key += "…"
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.1f\t %s\t\n", i+1, k.Count, k.Error, min(share, 100), key)
	}
	tw.Flush()
	if len(top.Keys) == 0 {
		fmt.Fprintln(w, "(no denials in this window)")
	}
}

// runOwner prints where a key's counter lives and its value.
func runOwner(ctx context.Context, s sys, args []string) int {
	var c operatorConfig
	client, res, code := operatorClient(s, "owner", args, &c, ownerSettings, 2,
		"owner [flags] POLICY KEY",
		"Names the member that owns KEY under POLICY (it decides its checks), its successor\n(it keeps a copy and takes over if the owner fails), and the counter as the owner\nholds it, read without consuming anything.")
	if client == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	o, err := client.Owner(ctx, res.Args[0], res.Args[1])
	if err != nil {
		return operatorFail(s, "owner", err)
	}
	if c.JSON {
		if err := printJSON(s.stdout, o); err != nil {
			return operatorFail(s, "owner", err)
		}
		return exitOK
	}
	tw := tabwriter.NewWriter(s.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "policy\t%s\n", o.Policy)
	fmt.Fprintf(tw, "key\t%q\n", o.Key)
	owner := o.Owner
	if o.OwnerHTTPAddr != "" {
		owner += " (" + o.OwnerHTTPAddr + ")"
	}
	fmt.Fprintf(tw, "owner\t%s\n", owner)
	succ := o.Successor
	if succ == "" {
		succ = "none (a single node)"
	}
	fmt.Fprintf(tw, "successor\t%s\n", succ)
	if o.Counter != nil {
		d := o.Counter
		fmt.Fprintf(tw, "counter\t%d of %d left, full again in %v\n", d.Remaining, d.Limit, time.Duration(d.ResetAfterMS)*time.Millisecond)
	} else {
		fmt.Fprintf(tw, "counter\tunreadable: %s\n", o.CounterError)
	}
	tw.Flush()
	return exitOK
}

// operatorClient resolves the settings and arguments of an operator
// command and returns its client; a nil client comes with the exit code.
func operatorClient(s sys, name string, args []string, c *operatorConfig, table func(*operatorConfig) []setting, nargs int, synopsis, doc string) (*httpapi.Client, resolved, int) {
	res, err := resolve(table(c), resolveInput{
		Args: args, Getenv: s.getenv, ReadFile: s.readFile, Help: s.stdout,
		Usage: func(w io.Writer) {
			fmt.Fprintf(w, "Usage: ratelimitd %s\n\n%s\n\n", synopsis, doc)
			fmt.Fprintln(w, "Exit status: 0 done, 1 refused by the node (unknown policy, bad token), 2 any other error.")
			fmt.Fprintln(w)
			fmt.Fprintln(w, "Settings:")
			var c operatorConfig
			writeSettings(w, table(&c))
		},
	})
	if err != nil {
		return nil, res, fail(s, name, err)
	}
	if len(res.Args) != nargs {
		return nil, res, fail(s, name, fmt.Errorf("got %d arguments; usage: ratelimitd %s", len(res.Args), synopsis))
	}
	hc, err := nodeClient(c.Timeout, c.CACert, s.readFile)
	if err != nil {
		return nil, res, fail(s, name, err)
	}
	return &httpapi.Client{BaseURL: nodeURL(c.Addr), Token: c.Token, HTTPClient: hc}, res, exitOK
}

// operatorFail reports a failed request: exit 1 when the node refused it.
func operatorFail(s sys, name string, err error) int {
	fmt.Fprintf(s.stderr, "ratelimitd %s: %v\n", name, err)
	var se *httpapi.StatusError
	if errors.As(err, &se) && se.StatusCode >= 400 && se.StatusCode < 500 {
		if se.StatusCode == http.StatusUnauthorized {
			fmt.Fprintln(s.stderr, "  the node wants its admin token: --token or RATELIMIT_ADMIN_TOKEN")
		}
		return exitRefused
	}
	return exitUsage
}
