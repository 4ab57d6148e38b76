package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/cluster"
)

// SpawnConfig configures Spawn.
type SpawnConfig struct {
	// Binary is the ratelimitd executable. Default: the running executable.
	Binary string
	// Nodes is the number of processes to start. Default: 1.
	Nodes int
	// Cluster passes the cluster flags (--gossip-addr, --peer-addr,
	// --raft-addr on free ports, --gossip-profile local, --join) so the
	// processes join one cluster; without it each runs --standalone.
	// Default: true when Nodes > 1; set it for one node that others will
	// join later (scale-out).
	Cluster bool
	// Policies, if set, are written to a policy file given to every node
	// (--policies); they add to or replace the built-in ones.
	Policies []bucket.Policy
	// Args are more arguments of `serve`, after the bench's own.
	Args []string
	// Env is added to the processes' environment. A cluster's nodes share
	// a cluster key made by Spawn (RATELIMIT_CLUSTER_KEY) unless Env or
	// Args give one.
	Env []string
	// Dir holds the policy file, each node's data directory and log.
	// Default: a new temporary directory, removed by Close.
	Dir string
	// ReadyTimeout bounds the wait for a node's /readyz. Default: 30 s.
	ReadyTimeout time.Duration
	// StopTimeout bounds the wait for a node to exit after SIGTERM, before
	// SIGKILL. Default: 10 s.
	StopTimeout time.Duration
	// GossipProfile is the --gossip-profile of a cluster's nodes. Default:
	// local (a crash noticed in about a second, for churn scenarios); lan
	// is the production timing, for measuring what idle nodes cost.
	GossipProfile string
	// Pin gives each of the Nodes its own CPUs, and the calling process
	// (the load generator) the rest, when the machine has at least one CPU
	// for each of them; otherwise nothing is pinned (Pinning says so).
	// Linux only.
	Pin bool
}

// Spawned is a set of `ratelimitd serve` processes on loopback ports. Every
// process is its own process group and dies with the bench (a parent-death
// signal); Close stops them all. Its methods are safe for concurrent use.
type Spawned struct {
	cfg     SpawnConfig
	ownDir  bool
	polFile string

	mu      sync.Mutex
	nodes   []*proc
	cpus    [][]int // by node index, when pinned
	pinning string
}

// proc is one node process and the addresses it keeps across restarts.
type proc struct {
	name                     string
	http, gossip, peer, raft string
	dir                      string
	cpus                     []int // its CPUs, if pinned
	cmd                      *exec.Cmd
	exited                   chan struct{}
}

// ErrSpawn is wrapped by the errors of starting or readying a node.
var ErrSpawn = errors.New("bench: spawn")

// Spawn starts cfg.Nodes processes, each joining the first, and waits until
// every one is ready. On error it stops what it started.
func Spawn(ctx context.Context, cfg SpawnConfig) (*Spawned, error) {
	if cfg.Nodes <= 0 {
		cfg.Nodes = 1
	}
	if cfg.Nodes > 1 {
		cfg.Cluster = true
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.GossipProfile == "" {
		cfg.GossipProfile = "local"
	}
	if cfg.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("%w: find executable: %w", ErrSpawn, err)
		}
		cfg.Binary = exe
	}
	s := &Spawned{cfg: cfg}
	if cfg.Cluster && !setsClusterKey(cfg) {
		key, err := cluster.NewClusterKey(nil)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSpawn, err)
		}
		s.cfg.Env = append(s.cfg.Env[:len(s.cfg.Env):len(s.cfg.Env)], "RATELIMIT_CLUSTER_KEY="+cluster.EncodeClusterKey(key))
	}
	if cfg.Dir == "" {
		dir, err := os.MkdirTemp("", "ratelimitd-bench-")
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSpawn, err)
		}
		s.cfg.Dir, s.ownDir = dir, true
	}
	if cfg.Pin {
		if err := s.plan(); err != nil {
			s.Close()
			return nil, err
		}
	}
	if len(cfg.Policies) > 0 {
		b, err := json.Marshal(map[string]any{"policies": cfg.Policies})
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("%w: policies: %w", ErrSpawn, err)
		}
		s.polFile = filepath.Join(s.cfg.Dir, "policies.yaml") // JSON is YAML
		if err := os.WriteFile(s.polFile, b, 0o644); err != nil {
			s.Close()
			return nil, fmt.Errorf("%w: %w", ErrSpawn, err)
		}
	}
	for range cfg.Nodes {
		if _, err := s.Add(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	if cfg.Cluster && cfg.Nodes > 1 {
		if err := s.waitRing(ctx, cfg.Nodes); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// setsClusterKey reports whether cfg gives the nodes a cluster key (or
// runs them without one) itself.
func setsClusterKey(cfg SpawnConfig) bool {
	for _, e := range cfg.Env {
		if strings.HasPrefix(e, "RATELIMIT_CLUSTER_KEY=") || strings.HasPrefix(e, "RATELIMIT_INSECURE_CLUSTER=") || strings.HasPrefix(e, "RATELIMIT_PEER_TLS_CERT=") {
			return true
		}
	}
	for _, a := range cfg.Args {
		if a == "--cluster-key" || strings.HasPrefix(a, "--cluster-key=") || a == "--insecure-cluster" || strings.HasPrefix(a, "--insecure-cluster=") || strings.HasPrefix(a, "--peer-tls-cert") {
			return true
		}
	}
	return false
}

// waitRing waits until every node's ownership ring holds n members, so
// that all of them agree on the owner of every key before the load starts
// (a node is ready once joined, which can come before its peers' rings
// include it).
func (s *Spawned) waitRing(ctx context.Context, n int) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReadyTimeout)
	defer cancel()
	// No kept-alive connection outlives the wait: a node stopped later
	// should not find one open.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for _, base := range s.URLs() {
		for {
			var st struct {
				RingMembers int `json:"ring_members"`
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/cluster", nil)
			if resp, err := client.Do(req); err == nil {
				if resp.StatusCode == http.StatusNotFound {
					resp.Body.Close()
					break // a server without /v1/cluster: nothing to wait for
				}
				err = json.NewDecoder(resp.Body).Decode(&st)
				resp.Body.Close()
				if err == nil && st.RingMembers == n {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w: %s: ring of %d members, want %d: %w", ErrSpawn, base, st.RingMembers, n, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// Add starts one more node, joined to the others, waits until it is ready,
// and returns its index.
func (s *Spawned) Add(ctx context.Context) (int, error) {
	ports, err := freePorts(4)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrSpawn, err)
	}
	s.mu.Lock()
	i := len(s.nodes)
	p := &proc{
		name:   "bench-node-" + strconv.Itoa(i),
		http:   "127.0.0.1:" + strconv.Itoa(ports[0]),
		gossip: "127.0.0.1:" + strconv.Itoa(ports[1]),
		peer:   "127.0.0.1:" + strconv.Itoa(ports[2]),
		raft:   "127.0.0.1:" + strconv.Itoa(ports[3]),
		dir:    filepath.Join(s.cfg.Dir, "node-"+strconv.Itoa(i)),
	}
	if i < len(s.cpus) {
		p.cpus = s.cpus[i]
	}
	s.nodes = append(s.nodes, p)
	s.mu.Unlock()
	if err := s.start(ctx, i); err != nil {
		return i, err
	}
	return i, nil
}

// args is the command line of node i: it joins every other node.
func (s *Spawned) args(i int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.nodes[i]
	args := []string{"serve", "--http-addr", p.http, "--node-name", p.name, "--data-dir", p.dir}
	if s.polFile != "" {
		args = append(args, "--policies", s.polFile)
	}
	if !s.cfg.Cluster {
		args = append(args, "--standalone")
	} else {
		args = append(args, "--gossip-addr", p.gossip, "--peer-addr", p.peer, "--raft-addr", p.raft, "--gossip-profile", s.cfg.GossipProfile)
		var seeds []string
		for j, q := range s.nodes {
			if j != i {
				seeds = append(seeds, q.gossip)
			}
		}
		if len(seeds) > 0 {
			args = append(args, "--join", strings.Join(seeds, ","))
		}
	}
	return append(args, s.cfg.Args...)
}

// start starts node i's process and waits until it is ready.
func (s *Spawned) start(ctx context.Context, i int) error {
	args := s.args(i)
	s.mu.Lock()
	p := s.nodes[i]
	s.mu.Unlock()
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return fmt.Errorf("%w: %w", ErrSpawn, err)
	}
	logf, err := os.OpenFile(filepath.Join(s.cfg.Dir, p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSpawn, err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(s.cfg.Binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), s.cfg.Env...)
	// Its own process group, so a stop reaches anything it starts, and
	// killed if the bench dies without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startPinned(cmd, p.cpus); err != nil {
		return fmt.Errorf("%w: start %s: %w", ErrSpawn, s.cfg.Binary, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.mu.Lock()
	p.cmd, p.exited = cmd, exited
	s.mu.Unlock()
	if err := waitReady(ctx, "http://"+p.http, exited, s.cfg.ReadyTimeout); err != nil {
		log, _ := os.ReadFile(logf.Name())
		return fmt.Errorf("%w: node %s: %w; its log ends:\n%s", ErrSpawn, p.name, err, log[max(len(log)-2000, 0):])
	}
	return nil
}

// waitReady polls base/readyz until it answers 200, the process exits, or
// the timeout passes.
func waitReady(ctx context.Context, base string, exited <-chan struct{}, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	tk := time.NewTicker(20 * time.Millisecond)
	defer tk.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w", ctx.Err())
		case <-tk.C:
		}
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// URLs returns the base URL of every node, in order of index.
func (s *Spawned) URLs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.nodes))
	for i, p := range s.nodes {
		out[i] = "http://" + p.http
	}
	return out
}

// Name returns node i's name.
func (s *Spawned) Name(i int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes[i].name
}

// Len returns the number of nodes, running or not.
func (s *Spawned) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.nodes)
}

// PIDs returns the process id of every node that was started (stopped ones
// included), for tests and logs.
func (s *Spawned) PIDs() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, p := range s.nodes {
		if p.cmd != nil && p.cmd.Process != nil {
			out = append(out, p.cmd.Process.Pid)
		}
	}
	return out
}

// CPUSamples returns the CPU time of every running node, from /proc: a
// Spawned is the CPUMeter of its nodes.
func (s *Spawned) CPUSamples() ([]CPUSample, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []CPUSample
	for _, p := range s.nodes {
		if p.cmd == nil || p.cmd.Process == nil {
			continue
		}
		select {
		case <-p.exited:
			continue
		default:
		}
		d, err := ProcessCPU(p.cmd.Process.Pid)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", p.name, err)
		}
		out = append(out, CPUSample{Name: p.name, PID: p.cmd.Process.Pid, CPU: d})
	}
	return out, nil
}

// Pinning describes the CPUs each node was given (SpawnConfig.Pin), or
// why they were not pinned; "" without Pin.
func (s *Spawned) Pinning() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pinning
}

// Dir returns the directory of the nodes' logs and data.
func (s *Spawned) Dir() string { return s.cfg.Dir }

// Stop stops node i gracefully (SIGTERM), and kills it (SIGKILL) if it has
// not exited after SpawnConfig.StopTimeout.
func (s *Spawned) Stop(i int) error {
	return s.signal(i, syscall.SIGTERM, s.cfg.StopTimeout)
}

// Kill kills node i with SIGKILL and waits for it to exit.
func (s *Spawned) Kill(i int) error {
	return s.signal(i, syscall.SIGKILL, s.cfg.StopTimeout)
}

func (s *Spawned) signal(i int, sig syscall.Signal, timeout time.Duration) error {
	s.mu.Lock()
	p := s.nodes[i]
	cmd, exited := p.cmd, p.exited
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-exited:
		return nil
	default:
	}
	pid := cmd.Process.Pid
	_ = syscall.Kill(-pid, sig) // the whole group
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
		if sig != syscall.SIGKILL {
			return fmt.Errorf("bench: node %s did not exit within %v of %v; killed", p.name, timeout, sig)
		}
	}
	// Anything left in its group goes too.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	return nil
}

// Restart starts node i again on the same addresses (after Stop or Kill)
// and waits until it is ready.
func (s *Spawned) Restart(ctx context.Context, i int) error {
	if err := s.Stop(i); err != nil {
		return err
	}
	return s.start(ctx, i)
}

// Close stops every node (SIGTERM, then SIGKILL after StopTimeout), waits
// for them to exit, and removes the directory if Spawn made it.
func (s *Spawned) Close() error {
	var wg sync.WaitGroup
	errs := make([]error, s.Len())
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = s.Stop(i) }()
	}
	wg.Wait()
	if s.ownDir {
		errs = append(errs, os.RemoveAll(s.cfg.Dir))
	}
	return errors.Join(errs...)
}
