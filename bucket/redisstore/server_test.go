package redisstore

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// go-redis logs dial failures through a package-level logger; the
	// failure tests provoke many on purpose.
	redis.SetLogger(quietLogger{})
	goleak.VerifyTestMain(m)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// redisServer is a redis-server process that a test started and owns.
type redisServer struct {
	t    testing.TB
	port int
	args []string
	dir  string
	tls  bool
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// requireRedisServer fails the test when redis-server is not installed.
func requireRedisServer(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed: run `make test`, which installs Debian's redis-server and starts one for the suite")
	}
}

// startRedis starts a private redis-server on a free loopback port, with
// extra arguments, and stops it (by pid) when the test ends. With tls, the
// port is a TLS port and the plain port is off.
func startRedis(t testing.TB, tls bool, extra ...string) *redisServer {
	t.Helper()
	requireRedisServer(t)
	s := &redisServer{t: t, port: freePort(t), args: extra, dir: t.TempDir(), tls: tls}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs redis-server and waits until it listens.
func (s *redisServer) start() {
	s.t.Helper()
	args := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", s.dir,
		"--daemonize", "no", "--loglevel", "warning", "--logfile", ""}
	if s.tls {
		args = append(args, "--port", "0", "--tls-port", strconv.Itoa(s.port))
	} else {
		args = append(args, "--port", strconv.Itoa(s.port))
	}
	args = append(args, s.args...)
	log, err := os.OpenFile(s.dir+"/log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command("redis-server", args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(s.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr(), 100*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-s.done:
			out, _ := os.ReadFile(s.dir + "/log")
			s.t.Fatalf("redis-server exited at start: %s", out)
		case <-time.After(10 * time.Millisecond): // poll interval
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server not listening on %s after 10s", s.addr())
		}
	}
}

// signal sends sig to the server's process (by pid).
func (s *redisServer) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := syscall.Kill(s.cmd.Process.Pid, sig); err != nil {
		s.t.Fatalf("signal %v to redis-server: %v", sig, err)
	}
}

// kill ends the server with SIGKILL and waits for it to exit.
func (s *redisServer) kill() {
	s.t.Helper()
	s.signal(syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.t.Fatal("redis-server did not exit after SIGKILL")
	}
}

// stop ends the server if it still runs.
func (s *redisServer) stop() {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGCONT)
	_ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}

func (s *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// url is the server's redis:// (or rediss://) URL.
func (s *redisServer) url() string {
	if s.tls {
		return "rediss://" + s.addr() + "/0"
	}
	return "redis://" + s.addr() + "/0"
}

// testURL returns the URL of a Redis for tests that only read and write
// their own keys: RATELIMIT_TEST_REDIS_URL when set (make test starts one),
// else a private server started for this test.
func testURL(t testing.TB) string {
	t.Helper()
	if u := os.Getenv("RATELIMIT_TEST_REDIS_URL"); u != "" {
		return u
	}
	return startRedis(t, false).url()
}

var prefixSeq atomic.Int64

// uniquePrefix returns a key prefix no other test in this run uses, so tests
// that share a Redis never see each other's counters.
func uniquePrefix() string {
	return "rltest:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":" + strconv.FormatInt(prefixSeq.Add(1), 10) + ":"
}

// newTestStore returns a store on url with a unique prefix, caller time,
// closed when the test ends.
func newTestStore(t testing.TB, url string, mod ...func(*Options)) *Store {
	t.Helper()
	o := Options{URL: url, Prefix: uniquePrefix(), UseCallerTime: true, Timeout: 5 * time.Second}
	for _, f := range mod {
		f(&o)
	}
	s, err := New(context.Background(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
