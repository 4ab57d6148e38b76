package main

// Helpers for tests that run ratelimitd: the binary built once per test
// binary, processes started with arguments and an environment of their own,
// the `listening` line waited for, and every process stopped by pid at the
// end of its test. In-process runs of run() use the same log watcher.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/internal/leakcheck"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	if code == 0 {
		if err := leakcheck.Wait(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// build is the ratelimitd binary, built at most once per test binary.
var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// binary returns the path of a ratelimitd binary built from this package.
func binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "ratelimitd-test-")
		if build.err != nil {
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			build.err = fmt.Errorf("the go command is needed to build ratelimitd: %w", err)
			return
		}
		build.path = filepath.Join(build.dir, "ratelimitd")
		args := []string{"build", "-o", build.path}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command(goTool, append(args, ".")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

// logWatcher collects a process's log lines (stderr) and finds the address
// of its `listening` line. It is safe for concurrent use.
type logWatcher struct {
	mu        sync.Mutex
	all       bytes.Buffer
	partial   []byte
	addr      string
	listening chan struct{} // closed at the listening line
}

func newLogWatcher() *logWatcher { return &logWatcher{listening: make(chan struct{})} }

func (w *logWatcher) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(b)
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		if w.addr == "" {
			if addr, ok := listeningAddr(line); ok {
				w.addr = addr
				close(w.listening)
			}
		}
	}
	return len(b), nil
}

// String returns everything written so far.
func (w *logWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

// Addr returns the address of the listening line, or "".
func (w *logWatcher) Addr() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.addr
}

var textListening = regexp.MustCompile(`\bmsg=listening\b.*\baddr=(\S+)`)

// listeningAddr reads the addr of a `listening` log line, text or JSON.
func listeningAddr(line string) (string, bool) {
	if m := textListening.FindStringSubmatch(line); m != nil {
		return strings.Trim(m[1], `"`), true
	}
	var j struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
	}
	if json.Unmarshal([]byte(line), &j) == nil && j.Msg == "listening" && j.Addr != "" {
		return j.Addr, true
	}
	return "", false
}

// proc is a running ratelimitd process.
type proc struct {
	t    testing.TB
	cmd  *exec.Cmd
	log  *logWatcher
	out  bytes.Buffer // stdout; read only after exit
	done chan struct{}
	err  error // of Wait; set before done is closed
	// Addr is the host:port of the HTTP API; URL is "http://" + Addr.
	Addr, URL string
}

// procOptions says how to start a process.
type procOptions struct {
	// Args are the arguments after the binary's name, e.g. "serve".
	Args []string
	// Env is the process's whole environment besides PATH: the test's own
	// environment is not inherited, so a variable set where the tests run
	// cannot change what they see.
	Env map[string]string
	// Binary is the executable. Default: binary(t).
	Binary string
	// Wrap, when set, is a command that runs the binary, e.g. "ip netns
	// exec NS" (it must exec it, so that the pid is ratelimitd's).
	Wrap []string
}

// start starts a ratelimitd process and stops it by pid at the end of the
// test if it is still running.
func start(t testing.TB, opts procOptions) *proc {
	t.Helper()
	p := &proc{t: t, log: newLogWatcher(), done: make(chan struct{})}
	bin := opts.Binary
	if bin == "" {
		bin = binary(t)
	}
	args := serveCommand(opts.Args, opts.Env)
	p.cmd = exec.Command(bin, args...)
	if len(opts.Wrap) > 0 {
		p.cmd = exec.Command(opts.Wrap[0], append(append(opts.Wrap[1:len(opts.Wrap):len(opts.Wrap)], bin), args...)...)
	}
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range opts.Env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stderr = p.log
	p.cmd.Stdout = &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start ratelimitd: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Kill() // by pid: only the process this test started
		<-p.done
	})
	return p
}

// listenSettings are serve's settings that bind ports (peer and raft
// follow the gossip port), with their variables. Their defaults are fixed
// ports (8080, 7946-7948) that `make run` or a deployed node may hold, so a
// test never leaves them at their defaults.
var listenSettings = [][2]string{{"--http-addr", "RATELIMIT_HTTP_ADDR"}, {"--gossip-addr", "RATELIMIT_GOSSIP_ADDR"}}

// freePorts returns serve's args with every listen address that neither
// args nor env sets put on a free loopback port.
func freePorts(args []string, env map[string]string) []string {
	var out []string
	for _, s := range listenSettings {
		if !hasFlag(args, s[0]) && env[s[1]] == "" {
			out = append(out, s[0], "127.0.0.1:0")
		}
	}
	return append(out, args...)
}

// serveCommand returns args with free ports added when args run serve.
func serveCommand(args []string, env map[string]string) []string {
	if len(args) > 0 && args[0] == "serve" {
		return append([]string{"serve"}, freePorts(args[1:], env)...)
	}
	return args
}

func hasFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == flag || strings.HasPrefix(a, flag+"=") {
			return true
		}
	}
	return false
}

// startServe starts `ratelimitd serve` with args and env, on free ports
// unless they set them, and waits up to 30 s for its listening line.
func startServe(t testing.TB, args []string, env map[string]string) *proc {
	t.Helper()
	p := start(t, procOptions{Args: append([]string{"serve"}, args...), Env: env})
	p.waitListening(30 * time.Second)
	return p
}

// waitListening waits for the listening line and sets Addr and URL. It
// fails the test if the process exits first or the deadline passes.
func (p *proc) waitListening(timeout time.Duration) {
	p.t.Helper()
	select {
	case <-p.log.listening:
		p.Addr = p.log.Addr()
		p.URL = "http://" + p.Addr
	case <-p.done:
		p.t.Fatalf("ratelimitd exited before listening (%v); its log:\n%s", p.err, p.log)
	case <-time.After(timeout):
		p.t.Fatalf("ratelimitd did not log `listening` within %v; its log:\n%s", timeout, p.log)
	}
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code; it fails the test at the deadline.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("ratelimitd still running %v later; its log:\n%s", timeout, p.log)
	}
	var exit *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &exit):
		return exit.ExitCode()
	}
	p.t.Fatalf("wait: %v", p.err)
	return -1
}

// stop ends a serving process with SIGTERM and requires exit code 0 within
// 10 s.
func (p *proc) stop() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		p.t.Fatalf("exit code %d after SIGTERM, want 0; log:\n%s", code, p.log)
	}
}

// runToEnd runs ratelimitd with args and env to its end (at most timeout)
// and returns its exit code, stdout and stderr.
func runToEnd(t testing.TB, timeout time.Duration, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := start(t, procOptions{Args: args, Env: env})
	code = p.wait(timeout)
	return code, p.out.String(), p.log.String()
}
