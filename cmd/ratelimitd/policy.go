package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/httpapi"
)

// exitRefused is the exit code of a policy command that the node refused
// (a 4xx answer: bad token, invalid policy, unknown policy).
const exitRefused = 1

// policyConfig is the configuration of `ratelimitd policy ...`.
type policyConfig struct {
	Addr    string
	CACert  string
	Token   string
	Timeout time.Duration
	JSON    bool

	// policy set
	File        string
	Name        string
	Algorithm   string
	Limit       int64
	WindowMS    int64
	Burst       int64
	FailureMode string
	Shadow      bool

	// policy delete
	Force bool
}

// policyConnSettings are the settings of every policy command: where the
// node is and the admin token.
func policyConnSettings(c *policyConfig) []setting {
	token := stringOpt(&c.Token, "token", "", "Admin token of the node (--admin-token of serve), sent as a bearer token.").noFile()
	token.Env = []envVar{{Name: "RATELIMIT_ADMIN_TOKEN"}}
	return []setting{
		stringOpt(&c.Addr, "addr", "http://127.0.0.1:8080", "Base URL of a ratelimitd node; host:port means http://host:port.").noFile(),
		caCertSetting(&c.CACert),
		token.defaultDoc("none"),
		durationOpt(&c.Timeout, time.Millisecond, "timeout", "15s",
			"How long to wait for the answer; a node gives a write up to 10s to commit.").noFile(),
	}
}

// policyFieldFlags are the flags of `policy set` that set a field of the
// policy; they have no environment variable, so that none sets a policy
// field by accident.
var policyFieldFlags = []string{"name", "algorithm", "limit", "window-ms", "burst", "failure-mode", "shadow"}

func policySetSettings(c *policyConfig) []setting {
	field := func(s setting) setting {
		s.Env = nil
		if s.DefaultDoc == "" {
			s.DefaultDoc = "the policy's, unchanged; for a new policy, the zero value"
		}
		return s.noFile()
	}
	return append(policyConnSettings(c),
		field(stringOpt(&c.File, "file", "", "A policy file (YAML or JSON) with one policy in its JSON form: name, algorithm, limit, window_ms, burst, failure_mode, shadow, overrides. Excludes the field flags.").defaultDoc("none")),
		field(stringOpt(&c.Name, "name", "", "Name of the policy (required without --file).").defaultDoc("none")),
		field(choiceOpt(&c.Algorithm, "algorithm", "", "Algorithm (new policies: sliding_window).", "sliding_window", "gcra", "token_bucket", "fixed_window")),
		field(intOpt(&c.Limit, 1, math.MaxInt64, "limit", "", "Hits per window (the rate of gcra and token_bucket).")),
		field(intOpt(&c.WindowMS, 1, bucket.MaxWindow.Milliseconds(), "window-ms", "", "Window, in milliseconds.")),
		field(intOpt(&c.Burst, 0, math.MaxInt64, "burst", "", "Extra capacity of gcra and token_bucket.")),
		field(choiceOpt(&c.FailureMode, "failure-mode", "", "What a check does when the counter's owner cannot be reached (new policies: local).", "local", "open", "closed")),
		field(boolOpt(&c.Shadow, "shadow", "Decide and count, but always allow (--shadow=false to end a dry run).")),
	)
}

func policyDeleteSettings(c *policyConfig) []setting {
	return append(policyConnSettings(c),
		boolOpt(&c.Force, "force", "Delete a built-in policy that other components depend on (api_limit for nginx; default, auth, sensitive, admin).").noFile(),
	)
}

func policyListSettings(c *policyConfig) []setting {
	return append(policyConnSettings(c),
		boolOpt(&c.JSON, "json", "Print the table as JSON instead of columns.").noFile(),
	)
}

func policyUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: ratelimitd policy COMMAND [flags] [ARGS]

Reads and changes the policy table of a running cluster through the admin
API of one of its nodes; a change made on any node reaches every node.

Commands:
  list                              the policy table, as columns (--json: JSON)
  get NAME                          one policy, as JSON
  set --file FILE                   add or replace a policy from a file
  set --name NAME [--limit N ...]   add a policy, or change the fields given
  delete [--force] NAME             remove a policy (--force: a built-in one)
  override set POLICY KEY LIMIT     set the limit of one key under a policy
  override delete POLICY KEY        remove the override of one key

Exit status: 0 done, 1 refused by the node (bad token, invalid or unknown
policy), 2 any other error.

Run `+"`ratelimitd policy COMMAND --help`"+` for the flags of a command.
`)
}

// policyCmds are the policy commands, by name.
func policyCmds() map[string]policyCmd {
	return map[string]policyCmd{
		"list": {
			synopsis: "list [flags]", nargs: 0, table: policyListSettings, do: policyList,
			doc: "Prints the policy table of the node: a line per policy, or JSON with --json.",
		},
		"get": {
			synopsis: "get [flags] NAME", nargs: 1, table: policyConnSettings, do: policyGet,
			doc: "Prints one policy in its JSON form.",
		},
		"set": {
			synopsis: "set [flags] (--file FILE | --name NAME [--limit N] [--window-ms MS] ...)", nargs: 0,
			table: policySetSettings, do: policySet,
			doc: `Adds or replaces a policy, and prints it as the node now holds it.

With --file, the file's policy replaces the whole policy of its name,
overrides included. With the field flags, an existing policy keeps the
fields not given (its overrides too); a new one needs --limit and
--window-ms.`,
		},
		"delete": {
			synopsis: "delete [flags] NAME", nargs: 1, table: policyDeleteSettings, do: policyDelete,
			doc: `Removes a policy; checks of it then fail as checks of an unknown policy.

A built-in policy that other components depend on (api_limit, which the
nginx snippet checks; default, auth, sensitive, admin) is refused with the
dependency named, unless --force is given.`,
		},
		"override set": {
			synopsis: "override set [flags] POLICY KEY LIMIT", nargs: 3, table: policyConnSettings, do: overrideSet,
			doc: "Sets the limit of one key under a policy, in place of the policy's limit, and\nprints the policy.",
		},
		"override delete": {
			synopsis: "override delete [flags] POLICY KEY", nargs: 2, table: policyConnSettings, do: overrideDelete,
			doc: "Removes the override of one key, which then has the policy's limit again.",
		},
	}
}

// policyCmd is one policy command.
type policyCmd struct {
	synopsis string
	doc      string
	nargs    int // the number of positional arguments it takes
	table    func(*policyConfig) []setting
	do       func(ctx context.Context, r *policyRun) error
}

// policyRun is what a policy command works with.
type policyRun struct {
	s      sys
	c      *policyConfig
	res    resolved
	client *httpapi.Client
}

// runPolicy runs `ratelimitd policy COMMAND`.
func runPolicy(ctx context.Context, s sys, args []string) int {
	if len(args) == 0 {
		policyUsage(s.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		policyUsage(s.stdout)
		return exitOK
	case "override":
		if len(args) < 2 || (args[1] != "set" && args[1] != "delete") {
			return fail(s, "policy override", errors.New("want override set POLICY KEY LIMIT, or override delete POLICY KEY"))
		}
		name, args = "override "+args[1], args[1:]
	}
	pc, ok := policyCmds()[name]
	if !ok {
		fmt.Fprintf(s.stderr, "ratelimitd policy: unknown command %q\n\n", name)
		policyUsage(s.stderr)
		return exitUsage
	}
	return pc.run(ctx, s, "policy "+name, args[1:])
}

func (pc policyCmd) run(ctx context.Context, s sys, name string, args []string) int {
	var c policyConfig
	res, err := resolve(pc.table(&c), resolveInput{
		Args: args, Getenv: s.getenv, ReadFile: s.readFile, Help: s.stdout,
		Usage: func(w io.Writer) {
			fmt.Fprintf(w, "Usage: ratelimitd policy %s\n\n%s\n\n", pc.synopsis, pc.doc)
			fmt.Fprintln(w, "Exit status: 0 done, 1 refused by the node, 2 any other error.")
			fmt.Fprintln(w)
			fmt.Fprintln(w, "Settings:")
			var c policyConfig
			writeSettings(w, pc.table(&c))
		},
	})
	if err != nil {
		return fail(s, name, err)
	}
	n := len(res.Args)
	if n != pc.nargs {
		return fail(s, name, fmt.Errorf("got %d arguments; usage: ratelimitd policy %s", n, pc.synopsis))
	}
	hc, err := nodeClient(c.Timeout, c.CACert, s.readFile)
	if err != nil {
		return fail(s, name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	client := &httpapi.Client{BaseURL: nodeURL(c.Addr), Token: c.Token, HTTPClient: hc}
	err = pc.do(ctx, &policyRun{s: s, c: &c, res: res, client: client})
	if err == nil {
		return exitOK
	}
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

func policyList(ctx context.Context, r *policyRun) error {
	ps, err := r.client.Policies(ctx)
	if err != nil {
		return err
	}
	if r.c.JSON {
		return printJSON(r.s.stdout, httpapi.PoliciesResponse{Policies: ps})
	}
	tw := tabwriter.NewWriter(r.s.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tALGORITHM\tLIMIT\tWINDOW\tBURST\tFAILURE_MODE\tSHADOW\tOVERRIDES")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%v\t%d\t%s\t%v\t%d\n",
			p.Name, p.Algorithm, p.Limit, p.Window, p.Burst, p.FailureMode, p.Shadow, len(p.Overrides))
	}
	return tw.Flush()
}

func policyGet(ctx context.Context, r *policyRun) error {
	p, err := r.client.GetPolicy(ctx, r.res.Args[0])
	if err != nil {
		return err
	}
	return printJSON(r.s.stdout, p)
}

func policySet(ctx context.Context, r *policyRun) error {
	var fields []string
	for _, f := range policyFieldFlags {
		if _, ok := r.res.Source[f]; ok {
			fields = append(fields, "--"+f)
		}
	}
	var p bucket.Policy
	switch {
	case r.c.File != "" && len(fields) > 0:
		return fmt.Errorf("--file excludes %s: put the fields in the file", strings.Join(fields, ", "))
	case r.c.File != "":
		var err error
		if p, err = readPolicyFile(r.c.File, r.s.readFile); err != nil {
			return err
		}
		if p.Name == "" {
			return fmt.Errorf("policy file %s: the policy has no name", r.c.File)
		}
	case r.c.Name == "":
		return errors.New("want --file FILE or --name NAME (see --help)")
	default:
		old, err := r.client.GetPolicy(ctx, r.c.Name)
		var se *httpapi.StatusError
		switch {
		case err == nil:
			p = old
		case errors.As(err, &se) && se.StatusCode == http.StatusNotFound:
			p = bucket.Policy{Name: r.c.Name}
		default:
			return err
		}
		if err := r.c.overlay(&p, r.res.Source); err != nil {
			return err
		}
	}
	stored, err := r.client.SetPolicy(ctx, p)
	if err != nil {
		return err
	}
	return printJSON(r.s.stdout, stored)
}

// overlay sets the fields of p whose flags were given.
func (c *policyConfig) overlay(p *bucket.Policy, given map[string]string) error {
	set := func(flag string) bool { _, ok := given[flag]; return ok }
	if set("algorithm") {
		if err := p.Algorithm.UnmarshalText([]byte(c.Algorithm)); err != nil {
			return fmt.Errorf("--algorithm: %w", err)
		}
	}
	if set("failure-mode") {
		if err := p.FailureMode.UnmarshalText([]byte(c.FailureMode)); err != nil {
			return fmt.Errorf("--failure-mode: %w", err)
		}
	}
	if set("limit") {
		p.Limit = c.Limit
	}
	if set("window-ms") {
		p.Window = time.Duration(c.WindowMS) * time.Millisecond
	}
	if set("burst") {
		p.Burst = c.Burst
	}
	if set("shadow") {
		p.Shadow = c.Shadow
	}
	return nil
}

// readPolicyFile reads one policy in its JSON form from a YAML or JSON
// file. Unknown fields are errors.
func readPolicyFile(path string, readFile func(string) ([]byte, error)) (bucket.Policy, error) {
	b, err := readFile(path)
	if err != nil {
		return bucket.Policy{}, fmt.Errorf("--file: %w", err)
	}
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return bucket.Policy{}, fmt.Errorf("policy file %s: %w", path, err)
	}
	var p bucket.Policy
	if err := json.Unmarshal(j, &p); err != nil {
		return bucket.Policy{}, fmt.Errorf("policy file %s: want one policy (name, algorithm, limit, window_ms, ...): %w", path, err)
	}
	return p, nil
}

func policyDelete(ctx context.Context, r *policyRun) error {
	name := r.res.Args[0]
	del := r.client.DeletePolicy
	if r.c.Force {
		del = r.client.ForceDeletePolicy
	}
	if err := del(ctx, name); err != nil {
		var se *httpapi.StatusError
		if errors.As(err, &se) && se.StatusCode == http.StatusConflict {
			return fmt.Errorf("%w (--force deletes it anyway)", err)
		}
		return err
	}
	fmt.Fprintf(r.s.stdout, "deleted policy %s\n", name)
	return nil
}

func overrideSet(ctx context.Context, r *policyRun) error {
	policy, key, text := r.res.Args[0], r.res.Args[1], r.res.Args[2]
	limit, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return fmt.Errorf("LIMIT %q is not an integer", text)
	}
	p, err := r.client.SetOverride(ctx, policy, key, limit)
	if err != nil {
		return err
	}
	return printJSON(r.s.stdout, p)
}

func overrideDelete(ctx context.Context, r *policyRun) error {
	policy, key := r.res.Args[0], r.res.Args[1]
	if err := r.client.DeleteOverride(ctx, policy, key); err != nil {
		return err
	}
	fmt.Fprintf(r.s.stdout, "deleted the override of key %q under policy %s\n", key, policy)
	return nil
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
