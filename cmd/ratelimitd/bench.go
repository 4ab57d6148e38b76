package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/vibewell/ratelimit/bench"
	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/redisstore"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
)

// benchConfig is the command line of `ratelimitd bench`.
type benchConfig struct {
	Target      string
	Nodes       int
	URLs        string
	Spawn       int
	Binary      string
	Scenario    string
	MaxKeys     int
	Duration    time.Duration
	Warmup      time.Duration
	Requests    int64
	Concurrency int
	Rate        float64
	Keys        int
	Dist        string
	ZipfS       float64
	Policy      string
	PolicySpec  string
	Hits        int64
	Batch       int
	Seed        uint64
	KeyPrefix   string
	Timeout     time.Duration
	RedisURL    string
	RedisPass   string
	JSON        string
	HTML        string
	CPUProfile  string
	Progress    string
	HTTPClient  string
	CACert      string
	AdminToken  string
	Idle        time.Duration
	Pin         bool
	OwnerAware  bool
	Baseline    bool
	Rounds      int
	Fill        bool
}

func benchFlags(c *benchConfig, getenv func(string) string) *flag.FlagSet {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&c.Target, "target", "", "What to load: embedded (in-process nodes), http (--urls or --spawn), or redis (the Redis store). Default: http with --urls or --spawn, else embedded.")
	fs.IntVar(&c.Nodes, "nodes", 1, "Number of in-process nodes of the embedded target.")
	fs.StringVar(&c.URLs, "urls", "", "Comma-separated base URLs of running nodes for the http target, e.g. http://127.0.0.1:8080.")
	fs.IntVar(&c.Spawn, "spawn", 0, "Start this many nodes (ratelimitd serve processes) on free loopback ports, joined into a cluster, and stop them at the end.")
	fs.StringVar(&c.Binary, "binary", "", "The ratelimitd binary --spawn starts. Default: this executable.")
	fs.StringVar(&c.Scenario, "scenario", "none", "Churn during the run, with --spawn: none, rolling-restart, kill or scale-out. Or flood (any target): 100 keys of the policy used up first and probed every 500 ms while the run's keys (make them many) flood the nodes; every probe must be denied; reports memory and evictions.")
	fs.IntVar(&c.MaxKeys, "max-keys", 0, "Counters each node holds at most (embedded nodes' MaxKeys; spawned nodes' --max-keys). Default: the nodes' default.")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "Time bound of the run.")
	fs.DurationVar(&c.Warmup, "warmup", 0, "Run the same load this long first, on keys of its own, unmeasured: connections and the target's memory are set up before the measured run. 0: none.")
	fs.Int64Var(&c.Requests, "requests", 0, "Count bound of the run, in checks; 0: the duration alone bounds it.")
	fs.IntVar(&c.Concurrency, "concurrency", 64, "Concurrent callers (closed loop), or most calls in flight (open loop); also the connections per node.")
	fs.Float64Var(&c.Rate, "rate", 0, "Open loop: checks per second on a fixed schedule, latency measured from the scheduled time. 0: closed loop.")
	fs.IntVar(&c.Keys, "keys", bench.DefaultKeys, "Number of distinct keys.")
	fs.StringVar(&c.Dist, "dist", "uniform", "Key distribution: uniform, zipf (hot keys) or hot (one key).")
	fs.Float64Var(&c.ZipfS, "zipf-s", bench.DefaultZipfS, "Exponent of the zipf distribution, above 1.")
	fs.StringVar(&c.Policy, "policy", bench.DefaultPolicy, "Policy of every check.")
	fs.StringVar(&c.PolicySpec, "policy-spec", "", `The policy as JSON, e.g. {"name":"bench","limit":100,"window_ms":3600000}: added to the embedded or redis target's table and to spawned nodes; with --urls, tells the accounting what the nodes apply. Default: the target's own policy of that name.`)
	fs.Int64Var(&c.Hits, "hits", 1, "Hits of each check.")
	fs.IntVar(&c.Batch, "batch", 1, "Checks per call (POST /v1/check/batch for http, one pipeline for redis).")
	fs.Uint64Var(&c.Seed, "seed", 0, "Seed of the key choice. Default: from the clock (the result records it).")
	fs.StringVar(&c.KeyPrefix, "key-prefix", "", "Prefix of every key. Default: unique per run, so runs do not share counters.")
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "Longest wait for one answer.")
	fs.StringVar(&c.RedisURL, "redis-url", envOr(getenv, "REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis of the redis target (env REDIS_URL).")
	fs.StringVar(&c.RedisPass, "redis-password", getenv("REDIS_PASSWORD"), "Redis password, replacing the URL's (env REDIS_PASSWORD).")
	fs.StringVar(&c.JSON, "json", "", "Write the result as JSON to this file.")
	fs.StringVar(&c.HTML, "html", "", "Write a self-contained HTML report to this file.")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "Write a CPU profile of this process (the load generator, and embedded nodes) to this file.")
	fs.StringVar(&c.CACert, "ca-cert", "", "PEM CA certificates that https --urls' certificates may chain to, beside the system's.")
	fs.StringVar(&c.AdminToken, "admin-token", getenv("RATELIMIT_ADMIN_TOKEN"), "Admin token of the --urls nodes (their --admin-token), to read their policy table for the accuracy accounting (env RATELIMIT_ADMIN_TOKEN).")
	fs.StringVar(&c.HTTPClient, "http-client", "raw", "HTTP client of the http target: raw (the bench's own HTTP/1.1 connections, cheapest) or std (net/http).")
	fs.DurationVar(&c.Idle, "idle", -1, "Measure the nodes' CPU at rest this long before the load (from /proc), report it, and subtract it from their CPU per decision; with --spawn or the embedded target. 0: not measured. Default: 5s with --spawn, else 0.")
	fs.BoolVar(&c.Pin, "pin", false, "With --spawn: give each node its own CPUs, and the load generator the rest, when the machine has one CPU for each at least (Linux); otherwise the report says nothing was pinned.")
	fs.BoolVar(&c.OwnerAware, "owner-aware", false, "http target: send each check to its key's owner, from the ring of GET /v1/ring (as httpapi.OwnerAwareClient does), instead of round-robin through every node.")
	fs.BoolVar(&c.Baseline, "baseline", false, "With --spawn N (2 or more) and --rate: spawn one more node, standalone, and alternate --rounds rounds of the N nodes at --rate and that node at --rate/N (the same load per node), reporting both CPU per decision figures of each round and the median of their ratios; the rest of the report is the cluster's last round. A round whose cluster fell short of --rate gives the node the checks/s the cluster got, over N.")
	fs.IntVar(&c.Rounds, "rounds", 3, "Rounds of --baseline, each a run of the cluster then one of the single node.")
	fs.BoolVar(&c.Fill, "baseline-fill", true, "With --baseline: while the single node runs, load the cluster with the rest of --rate, (N-1)/N of it, unmetered, so that the machine is as busy as in the cluster's run (a Go process alone on idle CPUs spends more CPU per request on wake-ups). false: the single node runs alone.")
	fs.StringVar(&c.Progress, "progress", "auto", "Progress output: auto (a live line on a terminal, plain lines otherwise), plain, or none.")
	return fs
}

// fetchPolicy reads the named policy from a node, for the accuracy
// accounting. A node that wants its admin token says so, not that the
// policy is missing.
func fetchPolicy(ctx context.Context, c *httpapi.Client, name string) (*bucket.Policy, error) {
	ps, err := c.Policies(ctx)
	var se *httpapi.StatusError
	if errors.As(err, &se) && (se.StatusCode == http.StatusUnauthorized || se.StatusCode == http.StatusForbidden) {
		return nil, fmt.Errorf("%s answers %d to GET /v1/policies: it wants its admin token (--admin-token or RATELIMIT_ADMIN_TOKEN)", c.BaseURL, se.StatusCode)
	}
	if err != nil {
		return nil, err
	}
	for i := range ps {
		if ps[i].Name == name {
			return &ps[i], nil
		}
	}
	return nil, fmt.Errorf("%s has no policy %q", c.BaseURL, name)
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

func benchUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "Usage: ratelimitd bench [flags]")
	fmt.Fprintln(w, "       ratelimitd bench compare A.json B.json")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Loads a target with checks and reports throughput, latency, errors and accuracy")
	fmt.Fprintln(w, "(over- and under-admission against each key's exact allowance).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Flags:")
	writeFlags(w, fs)
}

// shellJoin joins args into a command line a POSIX shell reads back as
// args: an argument with anything but letters, digits and @%+=:,./_- is
// single-quoted (a quote inside is closed, escaped and reopened), so
// that a report's command, --policy-spec JSON included, can be pasted
// back.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		safe := a != ""
		for _, r := range a {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r)) {
				safe = false
				break
			}
		}
		if safe {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}

// writeFlags writes a flag set's flags in the style of the other
// commands' --help (writeSettings): two dashes, the doc on its own line,
// then the default.
func writeFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		kind, doc := flag.UnquoteUsage(f)
		if kind != "" {
			kind = " " + kind
		}
		fmt.Fprintf(w, "  --%s%s\n      %s\n", f.Name, kind, doc)
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "0s" && f.DefValue != "false" {
			fmt.Fprintf(w, "      default %s\n", f.DefValue)
		}
	})
}

// runBench is `ratelimitd bench`.
func runBench(ctx context.Context, s sys, args []string) int {
	if len(args) > 0 && args[0] == "compare" {
		return runBenchCompare(s, args[1:])
	}
	var c benchConfig
	fs := benchFlags(&c, s.getenv)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			benchUsage(s.stdout, fs)
			return exitOK
		}
		fmt.Fprintf(s.stderr, "ratelimitd bench: %v\n", flagError(err))
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(s.stderr, "ratelimitd bench: unexpected argument %q (see --help)\n", fs.Arg(0))
		return exitUsage
	}
	if c.CPUProfile != "" {
		f, err := os.Create(c.CPUProfile)
		if err != nil {
			return fail(s, "bench", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fail(s, "bench", err)
		}
		defer pprof.StopCPUProfile()
	}
	res, err := benchRun(ctx, s, &c, shellJoin(append([]string{"ratelimitd", "bench"}, args...)))
	if err != nil {
		fmt.Fprintf(s.stderr, "ratelimitd bench: %v\n", err)
		if res == nil {
			return exitUsage
		}
	}
	if werr := res.WriteSummary(s.stdout); werr != nil {
		return fail(s, "bench", werr)
	}
	if c.JSON != "" {
		if werr := writeFileWith(c.JSON, res.WriteJSON); werr != nil {
			return fail(s, "bench", werr)
		}
	}
	if c.HTML != "" {
		if werr := writeFileWith(c.HTML, res.WriteHTML); werr != nil {
			return fail(s, "bench", werr)
		}
	}
	if err != nil {
		return exitDenied
	}
	return exitOK
}

func writeFileWith(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// benchRun sets up the target (and spawned nodes), runs, and tears down.
// Everything it starts is stopped before it returns, also when ctx is
// cancelled or a panic unwinds through it.
func benchRun(ctx context.Context, s sys, c *benchConfig, command string) (*bench.Result, error) {
	var dist bench.Dist
	if err := dist.UnmarshalText([]byte(c.Dist)); err != nil {
		return nil, err
	}
	var spec *bucket.Policy
	if c.PolicySpec != "" {
		spec = new(bucket.Policy)
		if err := json.Unmarshal([]byte(c.PolicySpec), spec); err != nil {
			return nil, fmt.Errorf("--policy-spec: %w", err)
		}
		if err := spec.Validate(); err != nil {
			return nil, fmt.Errorf("--policy-spec: %w", err)
		}
		if c.Policy == bench.DefaultPolicy {
			c.Policy = spec.Name
		}
	}
	if c.Target == "" {
		c.Target = "embedded"
		if c.URLs != "" || c.Spawn > 0 {
			c.Target = "http"
		}
	}
	if c.HTTPClient != "raw" && c.HTTPClient != "std" {
		return nil, fmt.Errorf("unknown --http-client %q: raw or std", c.HTTPClient)
	}
	var flood *benchFlood
	if c.Scenario == bench.ScenarioFlood {
		flood = &benchFlood{}
	}
	if c.Scenario != bench.ScenarioNone && flood == nil && c.Spawn == 0 {
		return nil, fmt.Errorf("--scenario %s needs --spawn", c.Scenario)
	}
	if err := checkBaseline(c); err != nil {
		return nil, err
	}
	params := bench.Params{Target: c.Target, Spawn: c.Spawn, Scenario: c.Scenario, Command: command}
	var (
		target   bench.Target
		scenario bench.Scenario
		meter    bench.CPUMeter
		pinning  string
		base     *baselineNode
	)
	withSpec := func(ps []bucket.Policy) []bucket.Policy {
		if spec == nil {
			return ps
		}
		out := []bucket.Policy{*spec}
		for _, p := range ps {
			if p.Name != spec.Name {
				out = append(out, p)
			}
		}
		return out
	}
	switch c.Target {
	case "embedded":
		params.Nodes = c.Nodes
		cfg := cluster.Config{Policies: withSpec(cluster.DefaultPolicies()), MaxHits: max(c.Hits, cluster.DefaultMaxHits), MaxKeys: c.MaxKeys}
		ecfg := bench.EmbeddedConfig{Nodes: c.Nodes, Node: cfg}
		if flood != nil {
			ecfg.Configure = flood.embedded
		}
		e, err := bench.NewEmbedded(ctx, ecfg)
		if err != nil {
			return nil, err
		}
		target = e
		meter = bench.SelfCPU{}
		if p, ok := e.Nodes()[0].Policy(c.Policy); ok && spec == nil {
			spec = &p
		}
	case "redis":
		store, err := redisstore.New(ctx, redisstore.Options{URL: c.RedisURL, Password: c.RedisPass, Timeout: c.Timeout, PoolSize: max(c.Concurrency*2, 64)})
		if err != nil {
			return nil, err
		}
		policies := withSpec(cluster.DefaultPolicies())
		st, err := bench.NewStoreTarget(bench.StoreConfig{Store: store, Policies: policies, Close: func(context.Context) error { return store.Close() }})
		if err != nil {
			store.Close()
			return nil, err
		}
		target = st
		if spec == nil {
			for i := range policies {
				if policies[i].Name == c.Policy {
					spec = &policies[i]
				}
			}
		}
	case "http":
		urls := splitList(c.URLs)
		if c.Spawn > 0 {
			if len(urls) > 0 {
				return nil, errors.New("--urls and --spawn exclude each other")
			}
			var policies []bucket.Policy
			if spec != nil {
				policies = []bucket.Policy{*spec}
			}
			// Churn wants a crash noticed in about a second; otherwise the
			// nodes run the production gossip timing, so that what they
			// cost at rest is what a deployment pays.
			profile := "local"
			if c.Scenario == bench.ScenarioNone {
				profile = "lan"
			}
			nodes, err := bench.Spawn(ctx, bench.SpawnConfig{
				Binary: c.Binary, Nodes: c.Spawn, Policies: policies, Pin: c.Pin, GossipProfile: profile,
				Cluster: c.Spawn > 1 || c.Scenario == bench.ScenarioScaleOut,
				// A generator sharing the machine's cores can hold a
				// forwarded check past the 250 ms default, and the failure
				// mode would then count as over- or under-admission.
				Args: spawnArgs(c.MaxKeys),
			})
			if err != nil {
				return nil, err
			}
			defer nodes.Close()
			meter, pinning = nodes, nodes.Pinning()
			urls = nodes.URLs()
			h, err := bench.NewHTTP(bench.HTTPConfig{URLs: urls, Conns: c.Concurrency, Timeout: c.Timeout, StdClient: c.HTTPClient == "std", OwnerAware: c.OwnerAware})
			if err != nil {
				return nil, err
			}
			target = h
			if c.Baseline {
				if base, err = spawnBaselineNode(ctx, c, policies); err != nil {
					return nil, err
				}
				defer base.close()
			}
			if c.Scenario != bench.ScenarioNone && flood == nil {
				ch, err := bench.NewChurn(bench.ChurnConfig{Kind: c.Scenario, Nodes: nodes, Target: h})
				if err != nil {
					return nil, err
				}
				scenario = ch
			}
		} else {
			if len(urls) == 0 {
				return nil, errors.New("the http target needs --urls or --spawn")
			}
			tc, err := nodeTLS(c.CACert, s.readFile)
			if err != nil {
				return nil, err
			}
			h, err := bench.NewHTTP(bench.HTTPConfig{URLs: urls, Conns: c.Concurrency, Timeout: c.Timeout, StdClient: c.HTTPClient == "std", TLS: tc, OwnerAware: c.OwnerAware})
			if err != nil {
				return nil, err
			}
			target = h
		}
		params.URLs = urls
		params.Nodes = len(urls)
		if spec == nil {
			hc, err := nodeClient(c.Timeout, c.CACert, s.readFile)
			if err != nil {
				return nil, err
			}
			spec, err = fetchPolicy(ctx, &httpapi.Client{BaseURL: urls[0], Token: c.AdminToken, HTTPClient: hc}, c.Policy)
			if err != nil {
				fmt.Fprintf(s.stderr, "ratelimitd bench: accuracy not accounted: %v\n", err)
			}
		}
	default:
		return nil, fmt.Errorf("unknown --target %q: embedded, http or redis", c.Target)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = target.Close(cctx)
	}()
	if c.Pin && c.Spawn == 0 {
		return nil, errors.New("--pin needs --spawn")
	}
	if c.Idle < 0 {
		c.Idle = 0
		if c.Spawn > 0 {
			c.Idle = 5 * time.Second
		}
	}
	var idle *bench.IdleCPU
	if meter != nil && c.Idle > 0 {
		var err error
		// The nodes settle first: joins, raft's configuration, the first
		// collection.
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return nil, err
		}
		m := meter
		if base != nil {
			m = cpuMeters{meter, base.nodes}
		}
		if idle, err = bench.MeasureIdle(ctx, m, c.Idle); err != nil {
			return nil, fmt.Errorf("idle CPU: %w", err)
		}
	}
	if flood != nil {
		if err := flood.scrape(c, params.URLs, s.readFile); err != nil {
			return nil, err
		}
		sc, err := flood.start(ctx, target, spec)
		if err != nil {
			return nil, err
		}
		scenario = sc
	}
	cfg := bench.Config{
		CPU: meter, Idle: idle, Pinning: pinning,
		Target: target, Policy: c.Policy, PolicySpec: spec, Hits: c.Hits, Keys: c.Keys, Dist: dist, ZipfS: c.ZipfS,
		KeyPrefix: c.KeyPrefix, Batch: c.Batch, Concurrency: c.Concurrency, Rate: c.Rate,
		Duration: c.Duration, Warmup: c.Warmup, Requests: c.Requests, Seed: c.Seed, Scenario: scenario, Params: params,
	}
	if spec != nil && spec.Name != c.Policy {
		cfg.PolicySpec = nil
	}
	p := newProgressPrinter(s.stdout, c.Progress)
	if base != nil {
		return runBaseline(ctx, c, cfg, base, p)
	}
	res, err := runOnce(ctx, cfg, p)
	flood.report(ctx, res)
	return res, err
}

// runOnce is one bench.Run, its progress written by p (nil: none).
func runOnce(ctx context.Context, cfg bench.Config, p *progressPrinter) (*bench.Result, error) {
	if p != nil {
		cfg.Progress = p.print
	}
	res, err := bench.Run(ctx, cfg)
	if p != nil {
		p.done()
	}
	return res, err
}

// checkBaseline refuses --baseline where its comparison would not hold:
// it needs a spawned cluster, an open loop to divide the load by, and no
// churn or pinning (the extra node's CPUs are not planned).
func checkBaseline(c *benchConfig) error {
	if !c.Baseline {
		return nil
	}
	switch {
	case c.Spawn < 2:
		return errors.New("--baseline needs --spawn 2 or more")
	case c.Rate <= 0:
		return errors.New("--baseline needs --rate, the cluster's load (the single node gets --rate/N)")
	case c.Scenario != bench.ScenarioNone:
		return errors.New("--baseline excludes --scenario")
	case c.Pin:
		return errors.New("--baseline excludes --pin")
	case c.Rounds < 1:
		return fmt.Errorf("--rounds %d: 1 or more", c.Rounds)
	}
	return nil
}

// baselineNode is the standalone node of --baseline and its target.
type baselineNode struct {
	nodes  *bench.Spawned
	target *bench.HTTP
}

func spawnBaselineNode(ctx context.Context, c *benchConfig, policies []bucket.Policy) (*baselineNode, error) {
	nodes, err := bench.Spawn(ctx, bench.SpawnConfig{Binary: c.Binary, Nodes: 1, Policies: policies, Args: spawnArgs(c.MaxKeys)})
	if err != nil {
		return nil, fmt.Errorf("baseline node: %w", err)
	}
	// A standalone node publishes no ring, and owns every key anyway: it
	// is loaded directly, owner-aware or not.
	h, err := bench.NewHTTP(bench.HTTPConfig{URLs: nodes.URLs(), Conns: c.Concurrency, Timeout: c.Timeout, StdClient: c.HTTPClient == "std"})
	if err != nil {
		nodes.Close()
		return nil, err
	}
	return &baselineNode{nodes: nodes, target: h}, nil
}

func (b *baselineNode) close() {
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = b.target.Close(cctx)
	_ = b.nodes.Close()
}

// cpuMeters meters several sets of nodes as one.
type cpuMeters []bench.CPUMeter

// CPUSamples returns every meter's samples.
func (ms cpuMeters) CPUSamples() ([]bench.CPUSample, error) {
	var out []bench.CPUSample
	for _, m := range ms {
		s, err := m.CPUSamples()
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	return out, nil
}

// runBaseline alternates rounds of the cluster (cfg) at --rate and the
// baseline node at --rate/N, and returns the cluster's last round with
// the comparison. Each run has keys of its own.
func runBaseline(ctx context.Context, c *benchConfig, cfg bench.Config, base *baselineNode, p *progressPrinter) (*bench.Result, error) {
	n := float64(c.Spawn)
	bl := &bench.Baseline{Nodes: c.Spawn, Rate: c.Rate, Fill: c.Fill}
	ncfg := cfg
	ncfg.Target, ncfg.CPU, ncfg.Pinning = base.target, base.nodes, ""
	if c.Requests > 0 {
		ncfg.Requests = max(int64(float64(c.Requests)/n), 1)
	}
	ncfg.Params.URLs, ncfg.Params.Nodes, ncfg.Params.Spawn = base.nodes.URLs(), 1, 1
	var last *bench.Result
	for i := range c.Rounds {
		if c.KeyPrefix != "" {
			cfg.KeyPrefix = fmt.Sprintf("%sr%d-cluster:", c.KeyPrefix, i+1)
			ncfg.KeyPrefix = fmt.Sprintf("%sr%d-node:", c.KeyPrefix, i+1)
		}
		cr, err := runOnce(ctx, cfg, p)
		if cr != nil {
			last = cr
		}
		if err != nil || cr.Interrupted {
			return withBaseline(last, bl), err
		}
		// The same load per node as the cluster's nodes had: --rate/N, or
		// less when the cluster fell short of --rate (a saturated machine).
		ncfg.Rate = c.Rate / n
		if got := float64(cr.Checks) / cr.Elapsed.D().Seconds(); cr.Elapsed > 0 && got < c.Rate {
			ncfg.Rate = got / n
		}
		var stopFill func()
		if c.Fill {
			stopFill = fill(ctx, cfg, ncfg.Rate*(n-1), ncfg.Warmup+ncfg.Duration+10*time.Second, i)
		}
		nr, err := runOnce(ctx, ncfg, p)
		if stopFill != nil {
			stopFill()
		}
		if err != nil || nr.Interrupted {
			return withBaseline(last, bl), err
		}
		r := bench.NewBaselineRound(cr, nr)
		bl.Add(r)
		if p != nil {
			fmt.Fprintf(p.w, "round %d/%d: %d nodes %.1fµs per decision, 1 node %.1fµs, ratio %.2f\n", i+1, c.Rounds, c.Spawn, r.ClusterUS, r.NodeUS, r.Ratio)
		}
	}
	return withBaseline(last, bl), nil
}

// fill loads the cluster at rate, unmetered, on keys of its own, from
// a moment before the single node's run until the returned func is
// called (it waits for the load to stop) or bound has passed.
func fill(ctx context.Context, cfg bench.Config, rate float64, bound time.Duration, round int) func() {
	ctx, cancel := context.WithCancel(ctx)
	cfg.CPU, cfg.Idle, cfg.Progress, cfg.Scenario, cfg.Requests, cfg.Warmup = nil, nil, nil, nil, 0, 0
	cfg.Rate, cfg.Duration = rate, bound // ended by cancel, or else by the bound
	cfg.KeyPrefix = fmt.Sprintf("%sfill%d:", cfg.KeyPrefix, round+1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = bench.Run(ctx, cfg)
	}()
	_ = sleepCtx(ctx, 500*time.Millisecond) // the fill's connections up
	return func() {
		cancel()
		<-done
	}
}

func withBaseline(r *bench.Result, bl *bench.Baseline) *bench.Result {
	if r != nil && len(bl.Rounds) > 0 {
		r.Baseline = bl
	}
	return r
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// progressPrinter writes the run's progress: one line rewritten in place
// on a terminal, plain lines otherwise.
type progressPrinter struct {
	w    io.Writer
	live bool
	last int
}

func newProgressPrinter(w io.Writer, mode string) *progressPrinter {
	switch mode {
	case "none":
		return nil
	case "plain":
		return &progressPrinter{w: w}
	}
	live := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			live = true
		}
	}
	return &progressPrinter{w: w, live: live}
}

func (p *progressPrinter) print(pr bench.Progress) {
	line := fmt.Sprintf("%6.1fs  %10.0f checks/s  %10d checks  %8d allowed  %8d denied  %6d errors",
		pr.Elapsed.Seconds(), pr.Rate, pr.Checks, pr.Allowed, pr.Denied, pr.Errors)
	if p.live {
		pad := max(p.last-len(line), 0)
		fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
		p.last = len(line)
		return
	}
	fmt.Fprintln(p.w, line)
}

func (p *progressPrinter) done() {
	if p.live && p.last > 0 {
		fmt.Fprintln(p.w)
	}
}

// runBenchCompare is `ratelimitd bench compare A.json B.json`.
func runBenchCompare(s sys, args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(s.stderr, "Usage: ratelimitd bench compare A.json B.json")
		return exitUsage
	}
	var rs [2]*bench.Result
	for i, path := range args {
		f, err := os.Open(path)
		if err != nil {
			return fail(s, "bench compare", err)
		}
		rs[i], err = bench.ReadResult(f)
		f.Close()
		if err != nil {
			return fail(s, "bench compare", fmt.Errorf("%s: %w", path, err))
		}
	}
	if err := bench.Compare(s.stdout, rs[0], rs[1]); err != nil {
		return fail(s, "bench compare", err)
	}
	return exitOK
}

// spawnArgs are the arguments of spawned nodes' serve.
func spawnArgs(maxKeys int) []string {
	// A generator sharing the machine's cores can hold a forwarded check
	// past the 250 ms default, and the failure mode would then count as
	// over- or under-admission.
	args := []string{"--log-level", "warn", "--forward-timeout", "2s"}
	if maxKeys > 0 {
		args = append(args, "--max-keys", strconv.Itoa(maxKeys))
	}
	return args
}
