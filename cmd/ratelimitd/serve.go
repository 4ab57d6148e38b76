package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vibewell/ratelimit/cluster"
	"github.com/vibewell/ratelimit/httpapi"
)

func serveUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: ratelimitd serve [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Runs a rate-limiting node with the HTTP check API. No flag is needed: the")
	fmt.Fprintln(w, "default is a node on 127.0.0.1:8080 with the built-in policies.")
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
		log.Error("serve failed", "err", err)
		return exitFailed
	}
	return exitOK
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
			return fmt.Errorf("data dir: %w", err)
		}
	}
	for _, name := range cfg.replaced {
		log.Info("policy file replaces a built-in policy", "policy", name, "file", cfg.PoliciesFile)
	}
	for _, src := range cfg.ignored {
		log.Warn("setting ignored: the policy file replaces its policy", "setting", src, "file", cfg.PoliciesFile)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	node, err := cluster.Start(ctx, cluster.Config{
		NodeName:   cfg.NodeName,
		Policies:   cfg.Policies,
		Shadow:     cfg.Shadow,
		Logger:     log,
		Metrics:    reg,
		LogDenials: cfg.LogDenials,
		MaxKeyLen:  int(cfg.MaxKeyLen),
		MaxHits:    cfg.MaxHits,
	})
	if err != nil {
		return err
	}
	closeNode := func(cctx context.Context) {
		if err := node.Close(cctx); err != nil {
			log.Warn("closing the node", "err", err)
		}
	}

	handler, err := httpapi.NewHandler(httpapi.Options{
		Checker:      node,
		Gatherer:     reg,
		Metrics:      reg,
		Logger:       log,
		MaxBodyBytes: cfg.MaxBodyBytes,
		MaxBatch:     int(cfg.MaxBatch),
		MaxKeyLen:    int(cfg.MaxKeyLen),
		MaxHits:      cfg.MaxHits,
	})
	if err != nil {
		closeNode(context.WithoutCancel(ctx))
		return err
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		closeNode(context.WithoutCancel(ctx))
		return fmt.Errorf("listen on %s (--http-addr): %w", cfg.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "node", node.Name(), "policies", len(cfg.Policies), "shadow", cfg.Shadow)

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	case serveErr = <-served:
	}

	// One deadline for draining HTTP and closing the node.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
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
	if serveErr != nil {
		return fmt.Errorf("http server: %w", serveErr)
	}
	log.Info("stopped")
	return nil
}
