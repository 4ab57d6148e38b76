package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a fake `ratelimitd serve` (fakeServeEnv) and as
// a bench process that spawns fake servers (fakeBenchEnv), so the process
// handling is tested without building the real server.
const (
	fakeServeEnv = "RATELIMIT_BENCH_FAKE_SERVE"
	fakeBenchEnv = "RATELIMIT_BENCH_FAKE_BENCH"
)

func pid() int { return os.Getpid() }

// fakeServeMain serves the fake check API on --http-addr until SIGTERM.
func fakeServeMain() {
	addr := ""
	for i, a := range os.Args {
		if a == "--http-addr" && i+1 < len(os.Args) {
			addr = os.Args[i+1]
		}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: fakeAPI(newCountingTarget(1000, 0))}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	_ = srv.Serve(l)
}

// fakeBenchMain spawns fake servers, prints their pids, and runs load on
// them until interrupted (SIGINT), or panics if asked to.
func fakeBenchMain() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT)
	defer stop()
	s, err := Spawn(ctx, SpawnConfig{Nodes: 2, Env: []string{fakeServeEnv + "=1", fakeBenchEnv + "="}})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	defer s.Close()
	fmt.Println("pids", strings.Trim(fmt.Sprint(s.PIDs()), "[]"))
	target, err := NewHTTP(HTTPConfig{URLs: s.URLs(), Conns: 2})
	if err != nil {
		panic(err)
	}
	defer target.Close(ctx)
	if os.Getenv(fakeBenchEnv) == "panic" {
		panic("bench panics with nodes running")
	}
	_, _ = Run(ctx, Config{Target: target, Policy: "t", Concurrency: 2, Duration: time.Minute, Rate: 200})
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	// The state follows the parenthesised command name.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

func waitGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range pids {
		for alive(p) {
			if time.Now().After(deadline) {
				t.Fatalf("spawned process %d still runs", p)
			}
			time.Sleep(10 * time.Millisecond) // polling against a deadline
		}
	}
}

func spawnFake(t *testing.T, ctx context.Context, n int) *Spawned {
	t.Helper()
	s, err := Spawn(ctx, SpawnConfig{Nodes: n, Env: []string{fakeServeEnv + "=1"}, StopTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSpawnRunsAndStops(t *testing.T) {
	ctx := context.Background()
	s := spawnFake(t, ctx, 2)
	pids := s.PIDs()
	if len(pids) != 2 || len(s.URLs()) != 2 {
		t.Fatalf("pids %v urls %v", pids, s.URLs())
	}
	target, err := NewHTTP(HTTPConfig{URLs: s.URLs(), Conns: 4})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(ctx, Config{Target: target, Policy: "t", Requests: 400, Concurrency: 4, Keys: 4, Seed: 9})
	target.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.Checks != 400 {
		t.Errorf("%d checks, %d errors %v", res.Checks, res.Errors, res.ErrorKinds)
	}
	// Kill one, restart it on the same address, add a third.
	if err := s.Kill(0); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pids[:1])
	if err := s.Restart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(ctx); err != nil {
		t.Fatal(err)
	}
	all := s.PIDs()
	if len(all) != 3 || all[0] == pids[0] {
		t.Errorf("pids after restart and add: %v (before %v)", all, pids)
	}
	dir := s.Dir()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, append(all, pids...))
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("spawn dir %s left behind: %v", dir, err)
	}
}

func TestSpawnFailsCleanly(t *testing.T) {
	// A binary that exits at once is reported, with its log, not waited on.
	_, err := Spawn(context.Background(), SpawnConfig{Binary: "/bin/false", ReadyTimeout: 5 * time.Second})
	if !errors.Is(err, ErrSpawn) || !strings.Contains(err.Error(), "exited") {
		t.Errorf("err = %v, want a spawn error saying it exited", err)
	}
}

// TestInterruptedBenchLeavesNoChild runs a bench process that spawns two
// nodes, interrupts it with SIGINT, panics it, or kills it with SIGKILL, and
// checks that no node survives it.
func TestInterruptedBenchLeavesNoChild(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, how := range []string{"sigint", "panic", "sigkill"} {
		t.Run(how, func(t *testing.T) {
			mode := "1"
			if how == "panic" {
				mode = "panic"
			}
			cmd := exec.Command(exe)
			cmd.Env = append(os.Environ(), fakeBenchEnv+"="+mode)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = nil
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "pids ") {
				t.Fatalf("bench said %q, %v", line, err)
			}
			var pids []int
			for _, f := range strings.Fields(strings.TrimPrefix(line, "pids ")) {
				p, err := strconv.Atoi(f)
				if err != nil {
					t.Fatal(err)
				}
				pids = append(pids, p)
			}
			for _, p := range pids {
				if !alive(p) {
					t.Fatalf("node %d is not running before the interruption", p)
				}
			}
			switch how {
			case "sigint":
				_ = cmd.Process.Signal(syscall.SIGINT)
			case "sigkill":
				_ = cmd.Process.Kill()
			}
			_ = cmd.Wait()
			waitGone(t, pids)
		})
	}
}
