package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/bucket/redisstore"
	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
)

func serveUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: ratelimitd serve [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Runs a rate-limiting node with the HTTP check API. No flag is needed: the")
	fmt.Fprintln(w, "default is a node on 127.0.0.1:8080 with the built-in policies, which starts")
	fmt.Fprintln(w, "a new cluster on 127.0.0.1:7946 (gossip), :7947 (peers) and :7948 (raft);")
	fmt.Fprintln(w, "other nodes join it with --join 127.0.0.1:7946 and the cluster key it makes")
	fmt.Fprintln(w, "and logs (--cluster-key; the log line is the whole command). --standalone runs")
	fmt.Fprintln(w, "one node without any cluster listener.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every setting is a flag, an environment variable and a config-file field;")
	fmt.Fprintln(w, "a flag wins over the environment, which wins over the file (--config), which")
	fmt.Fprintln(w, "wins over the default. Empty environment variables count as unset.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Settings:")
	var c serveConfig
	writeSettings(w, serveSettings(&c))
}

// runServe runs a node and its HTTP API until ctx is cancelled, then shuts
// down gracefully: it stops accepting connections, waits for in-flight
// requests up to --shutdown-timeout, and closes the node.
func runServe(ctx context.Context, s sys, args []string) int {
	cfg, err := loadServeConfig(resolveInput{
		Args: args, Getenv: s.getenv, ReadFile: s.readFile, Usage: serveUsage, Help: s.stdout,
	})
	if err != nil {
		return fail(s, "serve", err)
	}
	log := newLogger(s.stderr, cfg.LogFormat, cfg.LogLevel)
	if err := serve(ctx, cfg, log); err != nil {
		var ce *configError
		if errors.As(err, &ce) {
			return fail(s, "serve", err)
		}
		log.Error("serve failed", "err", err)
		return exitFailed
	}
	return exitOK
}

// configError is a start-up failure, which a setting caused or can fix (a
// Redis URL or password that does not work, unreadable TLS files, a listen
// address that is busy or not this host's): serve exits with exitUsage and
// the message alone, which names the setting.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// redisLog routes go-redis's own lines to slog, as warnings: it logs only
// what went wrong.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.Log(ctx, slog.LevelWarn, strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// newLogger returns the process's logger: slog to w, as text or JSON.
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(ctx context.Context, cfg serveConfig, log *slog.Logger) error {
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return &configError{fmt.Errorf("--data-dir: %w", err)}
		}
	}
	for _, name := range cfg.replaced {
		log.Info("policy file replaces a built-in policy", "policy", name, "file", cfg.PoliciesFile)
	}
	for _, src := range cfg.ignored {
		log.Warn("setting ignored: the policy file replaces its policy", "setting", src, "file", cfg.PoliciesFile)
	}
	if !cfg.Standalone && cfg.DataDir == "" {
		log.Warn("no --data-dir: the policy table is kept in memory; policy changes survive a node's restart (its peers hold them) but not a restart of the whole cluster")
	}
	if cfg.AdminToken == "" {
		log.Info("admin API off: policy writes answer 403; set --admin-token (RATELIMIT_ADMIN_TOKEN) to change policies at run time")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	peerTLS, err := loadPeerTLS(cfg, log)
	if err != nil {
		return &configError{err}
	}
	apiTLS, err := loadAPITLS(cfg, log)
	if err != nil {
		return &configError{err}
	}
	// undo holds what start-up has made so far (the store, the listener,
	// the node); abort undoes it, newest first, and returns err.
	var undo []func()
	abort := func(err error) error {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return err
	}
	var store bucket.Store // nil: the node's memory store
	closeStore := func() {}
	if cfg.Store == "redis" {
		// go-redis logs some failures itself, through one logger per
		// process: into this node's log, in its format.
		redis.SetLogger(redisLog{log.With("component", "redis")})
		rs, err := redisstore.New(ctx, redisstore.Options{
			URL:      cfg.RedisURL,
			Password: cfg.RedisPassword,
			TLS:      cfg.RedisTLS,
			Timeout:  time.Duration(cfg.RedisTimeout) * time.Millisecond,
			Logger:   log.With("component", "redis"),
			Metrics:  reg,
		})
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			return &configError{fmt.Errorf("--store redis: %w", err)}
		}
		store = rs
		closeStore = func() {
			if err := rs.Close(); err != nil {
				log.Warn("closing the redis store", "err", err)
			}
		}
		undo = append(undo, closeStore)
		log.Info("counters kept in redis", "url", redactURL(cfg.RedisURL))
	}

	// The HTTP listener first, so that the node can advertise its address.
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return abort(&configError{fmt.Errorf("--http-addr: listen on %s: %w", cfg.HTTPAddr, err)})
	}
	undo = append(undo, func() { ln.Close() })

	ccfg := cluster.Config{
		NodeName: cfg.NodeName,
		Policies: cfg.Policies,
		Shadow:   cfg.Shadow,
		Store:    store,
		// Every node of a Redis-backed cluster uses the same server.
		SharedStore: store != nil,
		Logger:      log,
		Metrics:     reg,
		LogDenials:  cfg.LogDenials,
		MaxKeyLen:   int(cfg.MaxKeyLen),
		MaxHits:     cfg.MaxHits,
		MaxKeys:     int(cfg.MaxKeys),
		HTTPAddr:    ln.Addr().String(),
	}
	ccfg.TopDeniedSlots = topDeniedSlots(cfg.TopDeniedSlots)
	ccfg.LeaseMinLimit = leaseMinLimit(cfg.LeaseMinLimit)
	if !cfg.Standalone {
		ccfg.GossipAddr = cfg.GossipAddr
		ccfg.GossipAdvertise = cfg.GossipAdv
		ccfg.PeerAddr = cfg.PeerAddr
		ccfg.PeerAdvertise = cfg.PeerAdv
		ccfg.RaftAddr = cfg.RaftAddr
		ccfg.RaftAdvertise = cfg.RaftAdv
		// On every interface, gossip advertises the address that peer and
		// raft advertise (a private IPv4 address of the host), rather than
		// memberlist's own pick, which may be of the other family on a
		// dual-stack host: the three name the same host.
		if ccfg.GossipAdvertise == "" {
			adv, err := advertiseAddr(cfg.GossipAddr, "", "gossip")
			if err != nil {
				return abort(&configError{err})
			}
			ccfg.GossipAdvertise = adv
		}
		for _, a := range []struct {
			adv        *string
			bind, flag string
		}{{&ccfg.PeerAdvertise, cfg.PeerAddr, "peer"}, {&ccfg.RaftAdvertise, cfg.RaftAddr, "raft"}} {
			if *a.adv != "" {
				continue
			}
			adv, err := advertiseAddr(a.bind, ccfg.GossipAdvertise, a.flag)
			if err != nil {
				return abort(&configError{err})
			}
			*a.adv = adv
		}
		ccfg.Seeds, ccfg.Bootstrap = seeds(cfg, log)
		ccfg.ClusterKey = cfg.ClusterKey
		ccfg.Insecure = cfg.InsecureCluster
		ccfg.SecretKey = cfg.GossipKey
		ccfg.PeerTLS = peerTLS
		ccfg.ForwardTimeout = cfg.ForwardTimeout
		ccfg.FailoverTimeout = cfg.FailoverTimeout
		ccfg.ReplicaInterval = cfg.ReplicaInterval
		if cfg.ReplicaInterval == 0 {
			ccfg.ReplicaInterval = -1 // off; zero is the library's default
		}
		ccfg.DataDir = cfg.DataDir
		ccfg.Voters = int(cfg.Voters)
		if cfg.GossipProfile == "local" {
			ccfg.Gossip = cluster.LocalGossip()
		}
		if ccfg.NodeName == "" {
			ccfg.NodeName = defaultNodeName(cfg.GossipAddr)
		}
	}
	node, err := cluster.Start(ctx, ccfg)
	if err != nil {
		return abort(startError(ctx, cfg, err))
	}
	if !cfg.Standalone {
		logClusterKey(log, node, cfg)
	}
	closeNode := func(cctx context.Context) {
		if err := node.Close(cctx); err != nil {
			log.Warn("closing the node", "err", err)
		}
	}
	undo = append(undo, func() { closeNode(context.WithoutCancel(ctx)) })

	reg.MustRegister(newStatusCollector(node))
	handler, err := httpapi.NewHandler(httpapi.Options{
		Checker:      node,
		Gatherer:     reg,
		Metrics:      reg,
		Logger:       log,
		MaxBodyBytes: cfg.MaxBodyBytes,
		MaxBatch:     int(cfg.MaxBatch),
		MaxKeyLen:    int(cfg.MaxKeyLen),
		MaxHits:      cfg.MaxHits,
		AdminToken:   cfg.AdminToken,
		ClientToken:  cfg.ClientToken,
		Admin:        node,
		Status:       func() any { return node.Status() },
		Operator:     nodeOperator{node},
	})
	if err != nil {
		return abort(&configError{err})
	}
	counted, err := countReadTimeouts(ln, reg)
	if err != nil {
		return abort(err)
	}
	ln = counted
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.HTTPReadTimeout,
		ReadTimeout:       cfg.HTTPReadTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		TLSConfig:         apiTLS,
	}
	served := make(chan error, 1)
	go func() {
		if apiTLS != nil {
			served <- srv.ServeTLS(ln, "", "") // the certificate is in TLSConfig
		} else {
			served <- srv.Serve(ln)
		}
	}()
	attrs := []any{"addr", ln.Addr().String(), "tls", apiTLS != nil, "node", node.Name(), "policies", len(cfg.Policies), "shadow", cfg.Shadow, "store", cfg.Store}
	if !cfg.Standalone {
		a := node.Addrs()
		attrs = append(attrs, "gossip", a.Gossip, "peer", a.Peer, "raft", a.Raft)
	}
	log.Info("listening", attrs...)

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	case serveErr = <-served:
	}

	// One deadline for the whole shutdown. Leave first: /readyz turns 503
	// at once, the counters go to their next owners, and checks that still
	// arrive are forwarded there; then HTTP drains, then the node closes.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := node.Leave(sctx); err != nil {
		log.Warn("leaving the cluster", "err", err)
	}
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("in-flight requests cut at the shutdown timeout", "err", err)
		_ = srv.Close()
	}
	if serveErr == nil {
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			serveErr = err
		}
	} else if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	closeNode(sctx)
	closeStore()
	if serveErr != nil {
		return fmt.Errorf("http server: %w", serveErr)
	}
	log.Info("stopped")
	return nil
}

// startError words a failure of cluster.Start: a start-up failure, so an
// exit-2 configError with the settings it concerns, unless the process
// is being stopped.
func startError(ctx context.Context, cfg serveConfig, err error) error {
	switch {
	case errors.Is(err, cluster.ErrNoClusterKey):
		return &configError{errors.New("--join: a node that joins a cluster needs its key: set --cluster-key (RATELIMIT_CLUSTER_KEY) to the key the first node logged, or one made by `ratelimitd keygen` and given to every node")}
	case errors.Is(err, cluster.ErrBadClusterKey) || errors.Is(err, cluster.ErrInsecureAddr):
		return &configError{err}
	case ctx.Err() != nil:
		return err
	case !cfg.Standalone:
		return &configError{fmt.Errorf("%w (cluster addresses: --gossip-addr %s, --peer-addr %s, --raft-addr %s; --standalone runs without them)",
			err, cfg.GossipAddr, cfg.PeerAddr, cfg.RaftAddr)}
	}
	return &configError{err}
}

// seeds returns the gossip seeds to give the node (the --join addresses
// but its own) and whether it is the one that starts the cluster
// (cluster.Config.Bootstrap): the first --join address names that node,
// by its gossip address or its hostname (bare or qualified) at the gossip
// port. The library bootstraps it only while it has no raft state, so a
// restart rejoins the others.
func seeds(cfg serveConfig, log *slog.Logger) (others []string, bootstrap bool) {
	if len(cfg.Join) == 0 {
		return nil, false
	}
	host, _ := os.Hostname()
	for _, s := range cfg.Join {
		if !isSelf(s, cfg.GossipAddr, cfg.GossipAdv, host) {
			others = append(others, s)
		}
	}
	bootstrap = isSelf(cfg.Join[0], cfg.GossipAddr, cfg.GossipAdv, host)
	if bootstrap && cfg.DataDir == "" {
		log.Warn("first of the --join addresses without --data-dir: starting a new cluster, as this node will after every restart, apart from the other nodes; give it --data-dir", "seed", cfg.Join[0])
	}
	return others, bootstrap
}

// isSelf reports whether the seed addr names this node: its gossip or
// advertised address, or its hostname (bare or with a domain) at the
// gossip port.
func isSelf(addr, gossip, advertise, hostname string) bool {
	if addr == gossip || (advertise != "" && addr == advertise) {
		return true
	}
	h, p, err := net.SplitHostPort(addr)
	if err != nil || hostname == "" {
		return false
	}
	_, gp, _ := net.SplitHostPort(gossip)
	return p == gp && (h == hostname || strings.HasPrefix(h, hostname+"."))
}

// advertiseAddr returns the address peers dial when the --peer-addr or
// --raft-addr (which says) listens on every interface (0.0.0.0 or ::),
// which peers cannot dial: the host of --gossip-advertise, else a private
// address of this host, at the same port. It returns "" (the listener's
// own address is advertised) when the host is a specific one.
func advertiseAddr(bind, gossipAdv, which string) (string, error) {
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return "", fmt.Errorf("--%s-addr %q: %w", which, bind, err)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return "", nil
	}
	if port == "0" {
		return "", fmt.Errorf("--%s-addr %s: a node listening on every interface needs a fixed %s port, or --%s-advertise", which, bind, which, which)
	}
	if gossipAdv != "" {
		if h, _, err := net.SplitHostPort(gossipAdv); err == nil {
			return net.JoinHostPort(h, port), nil
		}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("--%s-addr %s: listing this host's addresses: %w", which, bind, err)
	}
	var public net.IP
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.IsLoopback() || n.IP.To4() == nil || !n.IP.IsGlobalUnicast() {
			continue
		}
		if n.IP.IsPrivate() {
			return net.JoinHostPort(n.IP.String(), port), nil
		}
		if public == nil {
			public = n.IP
		}
	}
	if public != nil {
		return net.JoinHostPort(public.String(), port), nil
	}
	return "", fmt.Errorf("--%s-addr %s: no address of this host to advertise; set --%s-advertise", which, bind, which)
}

// defaultNodeName is the hostname and the gossip port (web-1-7946): unique
// per process on one host, and the same across restarts, which raft needs
// to recognise the node. With port 0 the cluster's default (hostname, pid
// and a counter) is used.
func defaultNodeName(gossipAddr string) string {
	_, port, err := net.SplitHostPort(gossipAddr)
	if err != nil || port == "0" {
		return ""
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	return host + "-" + port
}

// loadAPITLS loads the HTTP API's certificate, or returns nil when none is
// set. Loading it before anything listens turns a bad file into a clear
// start-up error rather than a server that fails on its first connection;
// a renewed certificate is then picked up from the same files.
func loadAPITLS(cfg serveConfig, log *slog.Logger) (*tls.Config, error) {
	if cfg.TLSCert == "" {
		return nil, nil
	}
	r, err := newCertReloader(cfg.TLSCert, cfg.TLSKey, log.With("component", "http"))
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	return r.serve(&tls.Config{MinVersion: tls.VersionTLS12}), nil
}

// loadPeerTLS builds the mutual TLS configuration of the peer transport,
// or returns nil when no TLS file is set.
func loadPeerTLS(cfg serveConfig, log *slog.Logger) (*tls.Config, error) {
	if cfg.Standalone || cfg.PeerTLSCert == "" {
		return nil, nil
	}
	r, err := newCertReloader(cfg.PeerTLSCert, cfg.PeerTLSKey, log.With("component", "peer"))
	if err != nil {
		return nil, fmt.Errorf("--peer-tls-cert/--peer-tls-key: %w", err)
	}
	pem, err := os.ReadFile(cfg.PeerTLSCA)
	if err != nil {
		return nil, fmt.Errorf("--peer-tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--peer-tls-ca: %s holds no PEM certificate", cfg.PeerTLSCA)
	}
	return r.serve(&tls.Config{
		RootCAs:    pool,
		ClientCAs:  pool,
		ClientAuth: tls.RequireAndVerifyClientCert,
		MinVersion: tls.VersionTLS12,
	}), nil
}

// redactURL returns a Redis URL without its password, for logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}

// logClusterKey tells, once, the key of a cluster this node just created
// and the command line that joins another node to it; a key configured or
// read from --data-dir is never logged.
func logClusterKey(log *slog.Logger, node *cluster.Node, cfg serveConfig) {
	key, generated := node.ClusterKey()
	if !generated {
		return
	}
	gossip := node.Addrs().Gossip
	kept := "kept in " + filepath.Join(cfg.DataDir, "cluster.key") + "; restarts reuse it"
	if cfg.DataDir == "" {
		kept = "in memory only: without --data-dir a restart makes a new key, and the other nodes must be given it"
	}
	log.Warn("new cluster key generated: only nodes started with it can join this cluster; keep it secret", "kept", kept)
	log.Info("another node joins this cluster with: " + joinCommand(gossip, cfg.HTTPAddr, cluster.EncodeClusterKey(key)))
}

// joinCommand is the command line of a node that joins the cluster whose
// gossip address is gossip. On loopback the joiner is on the same host,
// so it takes the next free-looking ports: HTTP port + 1, gossip port +
// 10 (peer and raft follow it).
func joinCommand(gossip, httpAddr, key string) string {
	cmd := "ratelimitd serve --join " + gossip + " --cluster-key " + key
	host, port, err := splitPort(gossip)
	if err != nil || !loopbackAddr(gossip) {
		return cmd + " --gossip-addr <this host's address>:7946 --http-addr <this host's address>:8080"
	}
	hhost, hport, err := splitPort(httpAddr)
	if err != nil || port == 0 || hport == 0 {
		return cmd + " --gossip-addr " + net.JoinHostPort(host, "0") + " --http-addr " + net.JoinHostPort(host, "0")
	}
	return cmd + " --gossip-addr " + net.JoinHostPort(host, strconv.Itoa(port+10)) + " --http-addr " + net.JoinHostPort(hhost, strconv.Itoa(hport+1))
}
