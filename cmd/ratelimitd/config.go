package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/redisstore"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
)

// serveConfig is the resolved configuration of `ratelimitd serve`.
type serveConfig struct {
	HTTPAddr        string
	TLSCert         string
	TLSKey          string
	NodeName        string
	DataDir         string
	ConfigFile      string
	PoliciesFile    string
	LogLevel        slog.Level
	LogFormat       string
	Shadow          bool
	LogDenials      bool
	MaxBodyBytes    int64
	MaxBatch        int64
	MaxKeyLen       int64
	TopDeniedSlots  int64
	MaxHits         int64
	MaxKeys         int64
	LeaseMinLimit   int64
	HTTPReadTimeout time.Duration
	ShutdownTimeout time.Duration

	// The cluster.
	Join            []string
	Standalone      bool
	GossipAddr      string
	GossipAdv       string
	GossipProfile   string
	GossipKey       []byte
	ClusterKey      []byte
	InsecureCluster bool
	PeerAddr        string
	PeerAdv         string
	RaftAddr        string
	RaftAdv         string
	Voters          int64
	ForwardTimeout  time.Duration
	FailoverTimeout time.Duration
	ReplicaInterval time.Duration
	PeerTLSCert     string
	PeerTLSKey      string
	PeerTLSCA       string
	AdminToken      string
	ClientToken     string

	// The store.
	Store         string
	RedisURL      string
	RedisPassword string
	RedisTLS      bool
	RedisTimeout  int64 // milliseconds

	// Policies is the policy table: the built-in policies as the settings
	// left them, then the policy file's, which add or replace by name.
	Policies []bucket.Policy

	// builtin holds the built-in policies while settings modify them.
	builtin []bucket.Policy
	// policyFlags maps (built-in policy, field) to the flag that sets it.
	policyFlags map[[2]string]string
	// replaced lists built-in policies that the policy file replaced.
	replaced []string
	// ignored lists the settings of replaced built-in policies that were
	// set (e.g. "RATE_LIMIT_AUTH_MAX"): the file's policy wins over them.
	ignored []string
}

// serveSettings is the configuration table of `ratelimitd serve`. To add a
// setting, add one line here and the field it sets.
func serveSettings(c *serveConfig) []setting {
	c.builtin = cluster.DefaultPolicies()
	c.policyFlags = map[[2]string]string{}
	table := []setting{
		stringOpt(&c.HTTPAddr, "http-addr", "127.0.0.1:8080",
			"Address the HTTP API listens on, host:port. Port 0 picks a free port (the `listening` log line gives it)."),
		stringOpt(&c.TLSCert, "tls-cert", "",
			"PEM certificate (chain) of the HTTP API; with --tls-key, the API is served over HTTPS only.").defaultDoc("none: plain HTTP"),
		stringOpt(&c.TLSKey, "tls-key", "",
			"PEM private key of --tls-cert.").defaultDoc("none"),
		stringOpt(&c.NodeName, "node-name", "",
			"Name of this node, unique in a cluster and the same across its restarts (raft knows a node by it).").defaultDoc("the hostname and the gossip port, e.g. web-1-7946; with gossip port 0 or --standalone, the hostname, the pid and a counter"),
		stringOpt(&c.DataDir, "data-dir", "",
			"Directory of the raft log and snapshots, so that policy changes survive a restart of the whole cluster; created at start-up. Without it they are kept in memory (a restarted node gets them back from its peers).").defaultDoc("none: in memory"),
		stringOpt(&c.ConfigFile, "config", "",
			"YAML config file of field: value lines (fields as listed here); unknown fields are an error.").noFile().defaultDoc("none"),
		stringOpt(&c.PoliciesFile, "policies", "",
			"YAML policy file (policies: [...]); its policies add to or replace the built-in ones by name. In a config file, a relative path is taken from the config file's directory.").defaultDoc("none"),
		levelOpt(&c.LogLevel, "log-level", "info", "Log level: debug, info, warn or error."),
		choiceOpt(&c.LogFormat, "log-format", "text", "Log format on stderr.", "text", "json"),
		boolOpt(&c.Shadow, "shadow",
			"Shadow mode for every policy: checks are decided and counted, but always allowed.").
			alsoEnv(envVar{Name: "SECURITY_ENABLE_RATE_LIMITING", Map: invertBool, Doc: "false means shadow"}),
		boolOpt(&c.LogDenials, "log-denials",
			"Log every denied check (structured, capped at 10 lines a second; the rest are counted).").
			alsoEnv(envVar{Name: "SECURITY_LOG_RATE_LIMIT_EVENTS"}),
		intOpt(&c.MaxBodyBytes, 64, 1<<30, "max-body-bytes", strconv.Itoa(httpapi.DefaultMaxBodyBytes),
			"Largest request body the HTTP API reads, in bytes."),
		intOpt(&c.MaxBatch, 1, 1_000_000, "max-batch", strconv.Itoa(httpapi.DefaultMaxBatch),
			"Most checks in one POST /v1/check/batch."),
		intOpt(&c.TopDeniedSlots, 0, 4096, "top-denied-slots", "64", "Keys per policy and minute kept of the denials, for ratelimitd top and the dashboard: about 1.7 KiB each for every policy that denied; 0 turns the counting off."),
		intOpt(&c.MaxKeyLen, 1, 1<<20, "max-key-len", strconv.Itoa(cluster.DefaultMaxKeyLen),
			"Longest key, in bytes."),
		intOpt(&c.MaxHits, 1, math.MaxInt64, "max-hits", strconv.Itoa(cluster.DefaultMaxHits),
			"Most hits one check may take."),
		intOpt(&c.MaxKeys, 64, 1<<31, "max-keys", strconv.Itoa(bucket.DefaultMaxKeys),
			"Most counters a node holds in memory (and as many copies for its peers); a full store evicts those whose loss forgives the fewest hits, never a denying one while another remains. Each costs about 112 bytes, and a key longer than 23 bytes (with its policy name) its length on top."),
		intOpt(&c.LeaseMinLimit, 0, math.MaxInt64, "lease-min-limit", strconv.Itoa(cluster.DefaultLeaseMinLimit),
			"Smallest limit of a key (sliding or fixed window) whose allowance a node may lease from the key's owner when it checks the key often, to decide its checks without forwarding them; never more than the limit is admitted (see docs/architecture.md). 0 turns leases off."),
		durationOpt(&c.HTTPReadTimeout, time.Millisecond, "http-read-timeout", "10s",
			"How long a client may take to send one request, headers and body; a slower connection is closed (counted in ratelimit_http_read_timeouts_total)."),
		durationOpt(&c.ShutdownTimeout, time.Millisecond, "shutdown-timeout", "10s",
			"How long SIGINT/SIGTERM waits for the node's hand-off and in-flight HTTP requests before closing them."),

		listOpt(&c.Join, "join",
			"Gossip addresses of nodes to join, host:port,...; DNS names resolve (a Kubernetes headless service works). The node is ready once it has joined one. The first address names the node that starts the cluster: that node, finding itself first (its hostname or gossip address) and no raft state in --data-dir, starts a new cluster; later it rejoins the others.").defaultDoc("none: start a new cluster"),
		boolOpt(&c.Standalone, "standalone",
			"Run one node with no cluster: no gossip, peer or raft listener."),
		stringOpt(&c.GossipAddr, "gossip-addr", "127.0.0.1:7946",
			"Address of cluster membership (gossip, UDP and TCP), host:port. Port 0 picks a free port; the `listening` log line gives it."),
		stringOpt(&c.GossipAdv, "gossip-advertise", "",
			"Address peers reach --gossip-addr at, when it differs (NAT, 0.0.0.0).").defaultDoc("--gossip-addr, or a private address of the host for 0.0.0.0"),
		choiceOpt(&c.GossipProfile, "gossip-profile", "lan",
			"Failure-detection timings: lan detects a crashed node in about 5 s; local, for nodes on one machine, in about 1 s.", "lan", "local"),
		std("string", "cluster-key", "",
			"The cluster's secret, the same on every node (`ratelimitd keygen` makes one): keys derived from it encrypt and authenticate gossip and the mutual TLS of peers and raft, so a node without it can neither join nor talk to the cluster. A node that starts a cluster without one generates it (kept in --data-dir) and logs the command line that joins it; a node with --join needs it.", parseClusterKey(&c.ClusterKey)).defaultDoc("the one kept in --data-dir, else a new one when starting a cluster"),
		boolOpt(&c.InsecureCluster, "insecure-cluster",
			"Run the cluster without authentication or encryption, for measurements on one machine: every cluster address must be loopback. Logged as a warning."),
		std("string", "gossip-key", "",
			"Key that encrypts and authenticates gossip (AES-GCM) instead of the one derived from --cluster-key: 16, 24 or 32 bytes in base64, the same on every node. With --peer-tls-*, it secures a cluster without --cluster-key.", parseGossipKey(&c.GossipKey)).defaultDoc("derived from --cluster-key"),
		stringOpt(&c.PeerAddr, "peer-addr", "",
			"Address where the node serves checks forwarded by peers, host:port.").defaultDoc("the host of --gossip-addr, its port + 1 (127.0.0.1:7947)"),
		stringOpt(&c.PeerAdv, "peer-advertise", "",
			"Address peers dial to reach --peer-addr, when it differs.").defaultDoc("--peer-addr"),
		stringOpt(&c.RaftAddr, "raft-addr", "",
			"Address of raft, which replicates the policy table, host:port.").defaultDoc("the host of --gossip-addr, its port + 2 (127.0.0.1:7948)"),
		stringOpt(&c.RaftAdv, "raft-advertise", "",
			"Address peers dial to reach --raft-addr, when it differs.").defaultDoc("--raft-addr"),
		intOpt(&c.Voters, 1, 9, "voters", "3",
			"Number of raft voters; the other nodes receive the policy table without voting."),
		durationOpt(&c.ForwardTimeout, time.Millisecond, "forward-timeout", "250ms",
			"How long a check forwarded to its key's owner is expected to take; a slower one is logged and still waits for the owner."),
		durationOpt(&c.FailoverTimeout, time.Millisecond, "failover-timeout", "10s",
			"How long a forwarded check waits for an owner that is still a member; past it (or at once when the owner refuses the connection or leaves the ring) the key's successor decides."),
		durationOpt(&c.ReplicaInterval, 0, "replica-interval", "100ms",
			"0 turns off the counter copies; any other value leaves them on: a node copies each counter that changed to the node that would take over its key if it crashed, continuously (one round trip behind)."),
		stringOpt(&c.PeerTLSCert, "peer-tls-cert", "",
			"PEM certificate of this node for mutual TLS between peers (checks forwarded and raft); needs --peer-tls-key and --peer-tls-ca.").defaultDoc("none: peers in the clear"),
		stringOpt(&c.PeerTLSKey, "peer-tls-key", "",
			"PEM private key of --peer-tls-cert.").defaultDoc("none"),
		stringOpt(&c.PeerTLSCA, "peer-tls-ca", "",
			"PEM CA certificates that peers' certificates must chain to.").defaultDoc("none"),
		stringOpt(&c.AdminToken, "admin-token", "",
			"Bearer token of the admin API: policy writes need it, and once it is set policy reads and /v1/cluster too. Without one, policy writes answer 403 and reads are public.").defaultDoc("none: admin API off"),
		stringOpt(&c.ClientToken, "client-token", "",
			"Bearer token that POST /v1/reset and /v1/refund (and their batch forms) need; the admin token works too. Checks need no token. Without either token, resets and refunds answer 403.").defaultDoc("none: reset and refund off unless --admin-token"),

		choiceOpt(&c.Store, "store", "memory",
			"Where counters live: memory (in the nodes, the Redis-free cluster) or redis (a shared Redis, see REDIS_URL).", "memory", "redis"),
		envOnly(stringOpt(&c.RedisURL, "redis-url", redisstore.DefaultURL,
			"Redis of --store redis: redis://[user:password@]host[:port][/db], or rediss:// for TLS."), "REDIS_URL"),
		envOnly(stringOpt(&c.RedisPassword, "redis-password", "",
			"Password of --store redis; replaces one in the URL.").defaultDoc("the URL's, else none"), "REDIS_PASSWORD"),
		envOnly(boolOpt(&c.RedisTLS, "redis-tls",
			"TLS to Redis with a redis:// URL (rediss:// implies it)."), "REDIS_TLS"),
		envOnly(intOpt(&c.RedisTimeout, 1, 3_600_000, "redis-timeout", "5000",
			"Milliseconds a check may wait for Redis, and the start-up check; past it the policy's failure mode decides."), "REDIS_TIMEOUT"),
	}
	// The built-in policies, set by the variables of the existing Node.js
	// deployment (RATE_LIMIT_<POLICY>_MAX and _WINDOW_MS).
	table = append(table,
		policyOpt(c, "default", "DEFAULT", "max"),
		policyOpt(c, "default", "DEFAULT", "window_ms"),
		policyOpt(c, "auth", "AUTH", "max"),
		policyOpt(c, "auth", "AUTH", "window_ms"),
		policyOpt(c, "sensitive", "SENSITIVE", "max"),
		policyOpt(c, "sensitive", "SENSITIVE", "window_ms"),
		policyOpt(c, "admin", "ADMIN", "max"),
		policyOpt(c, "admin", "ADMIN", "window_ms"),
		policyOpt(c, "api_limit", "API", "max"),
		policyOpt(c, "api_limit", "API", "window_ms"),
		policyOpt(c, "api_limit", "API", "burst"),
	)
	return table
}

// policyOpt is the setting of one field (max, window_ms or burst) of the
// built-in policy name: flag --auth-max, env RATE_LIMIT_AUTH_MAX, file
// field auth_max.
func policyOpt(c *serveConfig, name, envName, field string) setting {
	var p *bucket.Policy
	for i := range c.builtin {
		if c.builtin[i].Name == name {
			p = &c.builtin[i]
		}
	}
	if p == nil {
		panic("ratelimitd: no built-in policy " + name) // a programming error in the table
	}
	prefix := strings.ToLower(envName)
	s := setting{
		Flag:  prefix + "-" + strings.ReplaceAll(field, "_", "-"),
		Kind:  "int",
		Env:   []envVar{{Name: "RATE_LIMIT_" + envName + "_" + strings.ToUpper(field)}},
		Field: prefix + "_" + field,
	}
	c.policyFlags[[2]string{name, field}] = s.Flag
	var n int64
	switch field {
	case "max":
		s.Default = strconv.FormatInt(p.Limit, 10)
		s.Doc = fmt.Sprintf("Limit of the built-in %q policy (%s): requests per window.", name, p.Algorithm)
		if p.Algorithm == bucket.GCRA {
			s.Doc = fmt.Sprintf("Rate of the built-in %q policy (%s): requests per window (5 per 1000 ms is nginx's rate=5r/s).", name, p.Algorithm)
		}
		parse := parseInt(&n, 1, math.MaxUint32)
		s.Set = func(v string) error {
			err := parse(v)
			p.Limit = n
			return err
		}
	case "window_ms":
		s.Default = strconv.FormatInt(p.Window.Milliseconds(), 10)
		s.Doc = fmt.Sprintf("Window of the built-in %q policy, in milliseconds.", name)
		parse := parseInt(&n, 1, bucket.MaxWindow.Milliseconds())
		s.Set = func(v string) error {
			err := parse(v)
			p.Window = time.Duration(n) * time.Millisecond
			return err
		}
	case "burst":
		s.Default = strconv.FormatInt(p.Burst, 10)
		s.Doc = fmt.Sprintf("Burst of the built-in %q policy: requests beyond the rate it admits at once (nginx burst=, with nodelay).", name)
		parse := parseInt(&n, 0, math.MaxUint32)
		s.Set = func(v string) error {
			err := parse(v)
			p.Burst = n
			return err
		}
	}
	return s
}

// loadServeConfig resolves the serve configuration from the command line,
// the environment and files, loads the policy file, and validates the
// policy table. Every error names the flag, variable, or file field at
// fault.
func loadServeConfig(in resolveInput) (serveConfig, error) {
	var c serveConfig
	table := serveSettings(&c)
	in.ConfigFlag = "config"
	res, err := resolve(table, in)
	if err != nil {
		return c, err
	}
	if len(res.Args) > 0 {
		return c, fmt.Errorf("serve takes no arguments, got %q", res.Args[0])
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return c, errors.New("--tls-cert and --tls-key go together: set both or neither")
	}
	if err := c.checkCluster(res); err != nil {
		return c, err
	}

	// Each built-in policy, validated, with the error naming the setting
	// that made it invalid.
	for i := range c.builtin {
		p := &c.builtin[i]
		if err := p.Validate(); err != nil {
			var fe *bucket.FieldError
			if errors.As(err, &fe) {
				if src := c.builtinSource(res, p.Name, fe.Field); src != "" {
					return c, fmt.Errorf("%s: %w", src, err)
				}
			}
			return c, err
		}
	}
	c.Policies = c.builtin
	if c.PoliciesFile != "" {
		file, err := loadPolicyFile(c.PoliciesFile, in.ReadFile)
		if err != nil {
			return c, err
		}
		c.Policies, c.replaced = mergePolicies(c.builtin, file)
		for _, name := range c.replaced {
			for _, f := range []string{"max", "window_ms", "burst"} {
				if src, ok := res.Source[c.policyFlags[[2]string{name, f}]]; ok {
					c.ignored = append(c.ignored, src)
				}
			}
		}
	}
	c.builtin = nil
	return c, nil
}

// builtinSource names where the value of a built-in policy's field came
// from, e.g. "RATE_LIMIT_API_MAX"; "" if no setting set it. A limit can be
// invalid through its window or burst too (a rate above one per
// microsecond), so each candidate is tried in turn.
func (c *serveConfig) builtinSource(res resolved, policy, field string) string {
	var fields []string
	switch field {
	case "limit":
		fields = []string{"max", "window_ms", "burst"}
	case "window_ms":
		fields = []string{"window_ms", "max"}
	case "burst":
		fields = []string{"burst", "max"}
	}
	for _, f := range fields {
		if src, ok := res.Source[c.policyFlags[[2]string{policy, f}]]; ok {
			return src
		}
	}
	return ""
}

// policyFile is the form of a policy file.
type policyFile struct {
	Policies []json.RawMessage `json:"policies"`
}

// loadPolicyFile reads and validates a YAML policy file:
//
//	policies:
//	  - name: login
//	    algorithm: sliding_window
//	    limit: 5
//	    window_ms: 60000
//
// Unknown fields, duplicate names and invalid policies are errors that name
// the file, the entry and the field.
func loadPolicyFile(path string, readFile func(string) ([]byte, error)) ([]bucket.Policy, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy file: %w", err)
	}
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		return nil, fmt.Errorf("policy file %s: %w", path, err)
	}
	var f policyFile
	if t := bytes.TrimSpace(j); len(t) > 0 && !bytes.Equal(t, []byte("null")) {
		d := json.NewDecoder(bytes.NewReader(j))
		d.DisallowUnknownFields()
		if err := d.Decode(&f); err != nil {
			return nil, fmt.Errorf("policy file %s: want a mapping with a policies list: %w", path, err)
		}
	}
	seen := map[string]int{}
	ps := make([]bucket.Policy, 0, len(f.Policies))
	for i, raw := range f.Policies {
		var p bucket.Policy
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("policy file %s: %s: %w", path, policyAt(raw, i, err), err)
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("policy file %s: policies[%d]: %w", path, i, err)
		}
		if j, dup := seen[p.Name]; dup {
			return nil, fmt.Errorf("policy file %s: policies[%d]: name %q is already used by policies[%d]", path, i, p.Name, j)
		}
		seen[p.Name] = i
		ps = append(ps, p)
	}
	return ps, nil
}

// mergePolicies returns base with each policy of add replacing the one of
// the same name, or appended; and the names of the base policies replaced.
func mergePolicies(base, add []bucket.Policy) (merged []bucket.Policy, replaced []string) {
	merged = append([]bucket.Policy(nil), base...)
	index := map[string]int{}
	for i, p := range merged {
		index[p.Name] = i
	}
	for _, p := range add {
		if i, ok := index[p.Name]; ok {
			merged[i] = p
			replaced = append(replaced, p.Name)
			continue
		}
		index[p.Name] = len(merged)
		merged = append(merged, p)
	}
	return merged, replaced
}

// checkCluster checks the cluster settings against each other and fills
// the peer and raft addresses derived from the gossip address.
func (c *serveConfig) checkCluster(res resolved) error {
	if c.Standalone {
		if len(c.Join) > 0 {
			return fmt.Errorf("%s: a standalone node joins no cluster; drop --standalone or --join", res.Source["join"])
		}
		c.GossipAddr = ""
	}
	if c.GossipAddr == "" {
		c.Standalone = true
		return nil
	}
	host, port, err := splitPort(c.GossipAddr)
	if err != nil {
		return fmt.Errorf("%s: %w", sourceOr(res, "gossip-addr"), err)
	}
	derive := func(addr *string, flag string, off int) error {
		if *addr == "" {
			p := 0
			if port != 0 {
				p = port + off
			}
			if p > 65535 {
				return fmt.Errorf("--%s: the gossip port + %d is past 65535; set --%s", flag, off, flag)
			}
			*addr = net.JoinHostPort(host, strconv.Itoa(p))
			return nil
		}
		if _, _, err := splitPort(*addr); err != nil {
			return fmt.Errorf("%s: %w", sourceOr(res, flag), err)
		}
		return nil
	}
	if err := derive(&c.PeerAddr, "peer-addr", 1); err != nil {
		return err
	}
	if err := derive(&c.RaftAddr, "raft-addr", 2); err != nil {
		return err
	}
	tls := []string{c.PeerTLSCert, c.PeerTLSKey, c.PeerTLSCA}
	if n := len(slices.DeleteFunc(tls, func(s string) bool { return s == "" })); n != 0 && n != 3 {
		return errors.New("--peer-tls-cert, --peer-tls-key and --peer-tls-ca go together: set all three or none")
	}
	return c.checkInsecure(res)
}

// checkInsecure refuses --insecure-cluster with credentials or with an
// address other peers could reach.
func (c *serveConfig) checkInsecure(res resolved) error {
	if !c.InsecureCluster {
		return nil
	}
	src := sourceOr(res, "insecure-cluster")
	if len(c.ClusterKey) > 0 || len(c.GossipKey) > 0 || c.PeerTLSCert != "" {
		return fmt.Errorf("%s: an insecure cluster takes no --cluster-key, --gossip-key or --peer-tls-*; drop one", src)
	}
	for _, a := range []struct{ flag, addr string }{
		{"gossip-addr", c.GossipAddr}, {"gossip-advertise", c.GossipAdv}, {"peer-addr", c.PeerAddr},
		{"peer-advertise", c.PeerAdv}, {"raft-addr", c.RaftAddr}, {"raft-advertise", c.RaftAdv},
	} {
		if a.addr != "" && !loopbackAddr(a.addr) {
			return fmt.Errorf("%s: %s %s is not a loopback address; an insecure cluster stays on 127.0.0.1", src, sourceOr(res, a.flag), a.addr)
		}
	}
	for _, j := range c.Join {
		if !loopbackAddr(j) {
			return fmt.Errorf("%s: %s %s is not a loopback address; an insecure cluster stays on 127.0.0.1", src, sourceOr(res, "join"), j)
		}
	}
	return nil
}

// loopbackAddr reports whether host:port names a loopback address.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// policyAt names the policy file's entry i, which did not decode, by its
// index, its name and the field at fault when they can be told.
func policyAt(raw json.RawMessage, i int, err error) string {
	at := fmt.Sprintf("policies[%d]", i)
	var named struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(raw, &named) == nil && named.Name != "" {
		at += fmt.Sprintf(" (%s)", named.Name)
	}
	switch msg := err.Error(); {
	case strings.Contains(msg, "unknown algorithm"):
		at += ".algorithm"
	case strings.Contains(msg, "unknown failure mode"):
		at += ".failure_mode"
	}
	return at
}

// sourceOr names where flag's value came from, or the flag itself.
func sourceOr(res resolved, flag string) string {
	if s, ok := res.Source[flag]; ok {
		return s
	}
	return "--" + flag
}

// splitPort splits host:port and parses the port.
func splitPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port", addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	return host, int(p), nil
}
