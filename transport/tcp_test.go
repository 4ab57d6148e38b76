package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTCPRoundTrip(t *testing.T) {
	srv := newTCP(t, TCPConfig{MaxBatch: 16}, nil)
	cli := newClient(t, TCPConfig{MaxBatch: 16})
	ctx := context.Background()

	items := []CheckItem{
		{Policy: "auth", Key: "ip:1.2.3.4", Hits: 1},
		{Policy: "auth", Key: "", Hits: 0},
		{Policy: "default", Key: strings.Repeat("k", 300), Hits: 11},
		{Policy: "unknown", Key: "x", Hits: 1},
		{Policy: "p", Key: "neg", Hits: -5},
	}
	for _, it := range items {
		got, err := cli.Check(ctx, srv.Addr(), it)
		if err != nil {
			t.Fatalf("Check(%+v): %v", it, err)
		}
		if want := expected(it); got != want {
			t.Errorf("Check(%+v) = %+v, want %+v", it, got, want)
		}
	}

	// CheckMany larger than MaxBatch goes out in several frames.
	many := make([]CheckItem, 50)
	for i := range many {
		many[i] = CheckItem{Policy: "p", Key: fmt.Sprint("k", i), Hits: int64(i % 13)}
	}
	out := make([]CheckResult, len(many))
	before := cli.Stats()
	if err := cli.CheckMany(ctx, srv.Addr(), many, out); err != nil {
		t.Fatal(err)
	}
	for i := range many {
		if want := expected(many[i]); out[i] != want {
			t.Fatalf("CheckMany[%d] = %+v, want %+v", i, out[i], want)
		}
	}
	if d := cli.Stats().CheckFrames - before.CheckFrames; d != 4 {
		t.Errorf("CheckMany of 50 with MaxBatch 16 sent %d frames, want 4", d)
	}
	if err := cli.CheckMany(ctx, srv.Addr(), many, out[:1]); !errors.Is(err, ErrBadRequest) {
		t.Errorf("CheckMany with short out: %v, want ErrBadRequest", err)
	}

	body := []byte("\x92\xa1a\x01")
	got, err := cli.Call(ctx, srv.Addr(), "echo", body)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("Call echo = %q, %v", got, err)
	}
	_, err = cli.Call(ctx, srv.Addr(), "nope", nil)
	var re *RemoteError
	if !errors.Is(err, ErrRemote) || !errors.As(err, &re) || !strings.Contains(re.Message, `no method "nope"`) {
		t.Fatalf("Call nope: %v, want ErrRemote with the handler's message", err)
	}
}

func TestTCPConcurrentChecksAreExact(t *testing.T) {
	srv := newTCP(t, TCPConfig{}, nil)
	cli := newClient(t, TCPConfig{MaxBatch: 8})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				it := CheckItem{Policy: "p", Key: fmt.Sprintf("g%d-%d", g, i), Hits: int64((g + i) % 15)}
				res, err := cli.Check(context.Background(), srv.Addr(), it)
				if err != nil {
					errs <- err
					return
				}
				if res != expected(it) {
					errs <- fmt.Errorf("%+v: got %+v", it, res)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := cli.Stats()
	if st.ChecksSent != 64*50 {
		t.Errorf("ChecksSent = %d, want %d", st.ChecksSent, 64*50)
	}
}

func TestTCPLoneCheckGoesOutAtOnce(t *testing.T) {
	g := newGate("slow")
	srv := newTCP(t, TCPConfig{}, &echoHandler{gate: g.hold})
	cli := newClient(t, TCPConfig{MaxInFlight: 1})
	done := make(chan error, 1)
	go func() {
		_, err := cli.Check(context.Background(), srv.Addr(), CheckItem{Policy: "p", Key: "slow"})
		done <- err
	}()
	// The check reaches the handler while its caller is still waiting:
	// nothing held it back for company.
	eventually(t, 5*time.Second, func() bool { return g.count() == 1 }, "the lone check to reach the handler")
	if st := cli.Stats(); st.CheckFrames != 1 || st.ChecksSent != 1 {
		t.Errorf("stats = %+v, want one frame of one check", st)
	}
	close(g.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// With MaxInFlight 1, checks made while a batch is in flight gather and
// leave together in one frame when it returns.
func TestTCPBatchesGatherWhileInFlight(t *testing.T) {
	g := newGate("first")
	srv := newTCP(t, TCPConfig{}, &echoHandler{gate: g.hold})
	cli := newClient(t, TCPConfig{MaxInFlight: 1, MaxBatch: 256})
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := cli.Check(ctx, srv.Addr(), CheckItem{Policy: "p", Key: "first"}); err != nil {
			t.Error(err)
		}
	}()
	eventually(t, 5*time.Second, func() bool { return g.count() == 1 }, "the first batch to be in flight")
	const n = 40
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			it := CheckItem{Policy: "p", Key: fmt.Sprint("k", i), Hits: 3}
			if res, err := cli.Check(ctx, srv.Addr(), it); err != nil || res != expected(it) {
				t.Errorf("check %d: %+v, %v", i, res, err)
			}
		}()
	}
	p, _ := cli.peer(srv.Addr())
	eventually(t, 5*time.Second, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.queue) == n
	}, "the checks to queue behind the batch in flight")
	close(g.release)
	wg.Wait()
	if st := cli.Stats(); st.CheckFrames != 2 || st.ChecksSent != n+1 {
		t.Errorf("stats = %+v, want 2 frames carrying %d checks", st, n+1)
	}
}

// A full batch leaves without waiting for the one in flight.
func TestTCPFullBatchLeavesAtOnce(t *testing.T) {
	g := newGate("first")
	srv := newTCP(t, TCPConfig{}, &echoHandler{gate: g.hold})
	cli := newClient(t, TCPConfig{MaxInFlight: 1, MaxBatch: 4})
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := cli.Check(ctx, srv.Addr(), CheckItem{Policy: "p", Key: "first"}); err != nil {
			t.Error(err)
		}
	}()
	eventually(t, 5*time.Second, func() bool { return g.count() == 1 }, "the first batch to be in flight")
	var done sync.WaitGroup
	for i := range 4 {
		done.Add(1)
		go func() {
			defer done.Done()
			if _, err := cli.Check(ctx, srv.Addr(), CheckItem{Policy: "p", Key: fmt.Sprint("k", i)}); err != nil {
				t.Error(err)
			}
		}()
	}
	done.Wait() // answered while "first" is still held
	close(g.release)
	wg.Wait()
	if st := cli.Stats(); st.CheckFrames != 2 {
		t.Errorf("stats = %+v, want 2 frames", st)
	}
}

// Batch sizes grow with the number of concurrent callers.
func TestTCPBatchSizeGrowsWithConcurrency(t *testing.T) {
	srv := newTCP(t, TCPConfig{}, nil)
	mean := func(callers int) float64 {
		cli := newClient(t, TCPConfig{MaxInFlight: 1})
		var wg sync.WaitGroup
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 3000 / callers {
					if _, err := cli.Check(context.Background(), srv.Addr(), CheckItem{Policy: "p", Key: fmt.Sprint(i)}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		st := cli.Stats()
		return float64(st.ChecksSent) / float64(st.CheckFrames)
	}
	m1, m64 := mean(1), mean(64)
	t.Logf("mean batch: 1 caller %.2f, 64 callers %.2f", m1, m64)
	if m1 != 1 {
		t.Errorf("one caller: mean batch %.2f, want 1", m1)
	}
	if m64 < 2 {
		t.Errorf("64 callers: mean batch %.2f, want >= 2", m64)
	}
}

// A slow batch does not hold up others in flight on the same connection.
func TestTCPPipelining(t *testing.T) {
	g := newGate("slow")
	srv := newTCP(t, TCPConfig{}, &echoHandler{gate: g.hold})
	cli := newClient(t, TCPConfig{ConnsPerPeer: 1, MaxInFlight: 2})
	ctx := context.Background()
	slow := make(chan error, 1)
	go func() {
		_, err := cli.Check(ctx, srv.Addr(), CheckItem{Policy: "p", Key: "slow"})
		slow <- err
	}()
	eventually(t, 5*time.Second, func() bool { return g.count() == 1 }, "the slow batch to be in flight")
	for i := range 20 {
		it := CheckItem{Policy: "p", Key: fmt.Sprint("fast", i), Hits: 2}
		if res, err := cli.Check(ctx, srv.Addr(), it); err != nil || res != expected(it) {
			t.Fatalf("check behind a slow batch: %+v, %v", res, err)
		}
	}
	out := make([]CheckResult, 3)
	if err := cli.CheckMany(ctx, srv.Addr(), []CheckItem{{Key: "a"}, {Key: "b"}, {Key: "c"}}, out); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Call(ctx, srv.Addr(), "echo", []byte{1}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-slow:
		t.Fatalf("slow check returned early: %v", err)
	default:
	}
	close(g.release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
}

func TestTCPTimeouts(t *testing.T) {
	g := newGate("block")
	defer close(g.release)
	srv := newTCP(t, TCPConfig{}, &echoHandler{gate: g.hold})
	cli := newClient(t, TCPConfig{CallTimeout: 100 * time.Millisecond})
	it := CheckItem{Policy: "p", Key: "block"}

	for _, d := range []time.Duration{20 * time.Millisecond, 60 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		start := time.Now()
		_, err := cli.Check(ctx, srv.Addr(), it)
		took := time.Since(start)
		cancel()
		if !isTimeout(err) {
			t.Fatalf("Check with a %v deadline: %v, want ErrTimeout and DeadlineExceeded", d, err)
		}
		if took > d+500*time.Millisecond {
			t.Errorf("Check with a %v deadline returned after %v", d, took)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	_, err := cli.Call(ctx, srv.Addr(), "block", nil)
	cancel()
	if !isTimeout(err) {
		t.Fatalf("blocking Call: %v, want ErrTimeout", err)
	}
	out := make([]CheckResult, 1)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Millisecond)
	err = cli.CheckMany(ctx, srv.Addr(), []CheckItem{it}, out)
	cancel()
	if !isTimeout(err) {
		t.Fatalf("blocking CheckMany: %v, want ErrTimeout", err)
	}

	// Without a ctx deadline, CallTimeout applies.
	start := time.Now()
	_, err = cli.Check(context.Background(), srv.Addr(), it)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Check without deadline: %v, want ErrTimeout", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("default timeout took %v", took)
	}
	if cli.Stats().Timeouts == 0 {
		t.Error("Stats.Timeouts = 0")
	}

	// A cancelled ctx is not a timeout.
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := cli.Check(ctx, srv.Addr(), it); !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Fatalf("cancelled Check: %v", err)
	}
}

func TestTCPReconnect(t *testing.T) {
	srv, err := NewTCP(TCPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(&echoHandler{}) }()

	cli := newClient(t, TCPConfig{BackoffMin: time.Millisecond, BackoffMax: 10 * time.Millisecond})
	ctx := context.Background()
	it := CheckItem{Policy: "p", Key: "k", Hits: 1}
	if _, err := cli.Check(ctx, addr, it); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// The server is down: checks fail as unreachable (at once, in back-off).
	eventually(t, 5*time.Second, func() bool {
		_, err := cli.Check(ctx, addr, it)
		if err != nil && !errors.Is(err, ErrUnreachable) {
			t.Fatalf("check to a stopped server: %v, want ErrUnreachable", err)
		}
		return err != nil
	}, "checks to fail while the server is down")

	// Restart on the same address: the client reconnects.
	srv2 := newTCP(t, TCPConfig{Addr: addr}, nil)
	if srv2.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", srv2.Addr(), addr)
	}
	eventually(t, 5*time.Second, func() bool {
		res, err := cli.Check(ctx, addr, it)
		return err == nil && res == expected(it)
	}, "checks to succeed after the restart")
	if _, err := cli.Call(ctx, addr, "echo", nil); err != nil {
		t.Fatal(err)
	}
	if st := cli.Stats(); st.Dials < 2 {
		t.Errorf("Dials = %d, want a redial", st.Dials)
	}
}

func TestTCPUnreachableFailsFast(t *testing.T) {
	cli := newClient(t, TCPConfig{BackoffMin: time.Hour, BackoffMax: time.Hour})
	// A port nobody listens on: take one and free it.
	tmp, err := NewTCP(TCPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	addr := tmp.Addr()
	tmp.Close()
	ctx := context.Background()
	if _, err := cli.Check(ctx, addr, CheckItem{Key: "k"}); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("first check: %v, want ErrUnreachable", err)
	}
	start := time.Now()
	for range 100 {
		if _, err := cli.Check(ctx, addr, CheckItem{Key: "k"}); !errors.Is(err, ErrUnreachable) {
			t.Fatalf("check in back-off: %v, want ErrUnreachable", err)
		}
	}
	if _, err := cli.Call(ctx, addr, "echo", nil); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("call in back-off: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("100 checks in back-off took %v", took)
	}
	if st := cli.Stats(); st.Dials != 1 {
		t.Errorf("Dials = %d during back-off, want 1", st.Dials)
	}
}

func TestTCPBackoff(t *testing.T) {
	tr := &TCP{cfg: TCPConfig{BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond}}
	want := []time.Duration{10, 20, 40, 80, 100, 100}
	for i, w := range want {
		if got := tr.backoff(i + 1); got != w*time.Millisecond {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	tr.cfg.Rand = func() float64 { return 0.5 }
	if got := tr.backoff(2); got != 15*time.Millisecond {
		t.Errorf("jittered backoff(2) = %v, want 15ms", got)
	}
}

func TestTCPFrameTooLargeToSend(t *testing.T) {
	srv := newTCP(t, TCPConfig{}, nil)
	cli := newClient(t, TCPConfig{MaxFrame: 1024})
	ctx := context.Background()
	if _, err := cli.Check(ctx, srv.Addr(), CheckItem{Key: strings.Repeat("x", 2000)}); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("huge check: %v", err)
	}
	if _, err := cli.Call(ctx, srv.Addr(), "echo", make([]byte, 2000)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("huge call: %v", err)
	}
	// A batch bigger than a frame is split by size.
	items := make([]CheckItem, 20)
	for i := range items {
		items[i] = CheckItem{Policy: "p", Key: fmt.Sprint(i, strings.Repeat("y", 200))}
	}
	out := make([]CheckResult, len(items))
	if err := cli.CheckMany(ctx, srv.Addr(), items, out); err != nil {
		t.Fatal(err)
	}
	for i := range items {
		if out[i] != expected(items[i]) {
			t.Fatalf("out[%d] = %+v", i, out[i])
		}
	}
	if st := cli.Stats(); st.CheckFrames < 5 {
		t.Errorf("20 items of ~220 bytes in frames of 1 KiB: %d frames", st.CheckFrames)
	}
	// The server's own limit: a client with a larger one gets the
	// connection closed and an error, and the server goes on serving.
	small := newTCP(t, TCPConfig{MaxFrame: 512}, nil)
	big := newClient(t, TCPConfig{})
	if _, err := big.Check(ctx, small.Addr(), CheckItem{Key: strings.Repeat("z", 1000)}); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("oversized frame to a server: %v, want ErrUnreachable", err)
	}
	if st := small.Stats(); st.BadFrames != 1 {
		t.Errorf("server BadFrames = %d, want 1", st.BadFrames)
	}
	eventually(t, 5*time.Second, func() bool {
		_, err := big.Check(ctx, small.Addr(), CheckItem{Key: "ok"})
		return err == nil
	}, "the server to serve again")
}

func TestTCPClose(t *testing.T) {
	g := newGate("block")
	defer close(g.release)
	srv := newTCP(t, TCPConfig{}, &echoHandler{gate: g.hold})
	cli, err := NewTCP(TCPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- cli.Serve(&echoHandler{}) }()
	ctx := context.Background()
	errs := make(chan error, 2)
	go func() {
		_, err := cli.Check(ctx, srv.Addr(), CheckItem{Key: "block"})
		errs <- err
	}()
	go func() {
		_, err := cli.Call(ctx, srv.Addr(), "block", nil)
		errs <- err
	}()
	eventually(t, 5*time.Second, func() bool { return g.count() == 1 }, "the check to be in flight")
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Errorf("request in flight at Close: %v, want ErrClosed", err)
		}
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
	if _, err := cli.Check(ctx, srv.Addr(), CheckItem{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Check after Close: %v", err)
	}
	if err := cli.Serve(&echoHandler{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Serve after Close: %v", err)
	}
	if err := cli.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A peer that has been idle without a connection is forgotten, and a later
// request to its address starts afresh.
func TestTCPForgetsIdlePeers(t *testing.T) {
	srv, err := NewTCP(TCPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(&echoHandler{}) }()
	cli := newClient(t, TCPConfig{CallTimeout: 16 * time.Millisecond, BackoffMin: time.Millisecond, peerIdle: 10 * time.Millisecond})
	ctx := context.Background()
	if _, err := cli.Check(ctx, addr, CheckItem{Key: "k"}); err != nil {
		t.Fatal(err)
	}
	peers := func() int {
		cli.mu.Lock()
		defer cli.mu.Unlock()
		return len(cli.peers)
	}
	srv.Close()
	<-served
	eventually(t, 5*time.Second, func() bool { return peers() == 0 }, "the peer to be forgotten")
	srv2 := newTCP(t, TCPConfig{Addr: addr}, nil)
	eventually(t, 5*time.Second, func() bool {
		_, err := cli.Check(ctx, srv2.Addr(), CheckItem{Key: "k"})
		return err == nil
	}, "a check to the restarted address")
	if peers() != 1 {
		t.Fatalf("%d peers, want 1", peers())
	}
}

// With ConnsPerPeer 2 the client keeps two connections and restores both
// after the peer restarts.
func TestTCPConnsPerPeer(t *testing.T) {
	srv, err := NewTCP(TCPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(&echoHandler{}) }()
	cli := newClient(t, TCPConfig{ConnsPerPeer: 2, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	ctx := context.Background()
	live := func() int {
		p, err := cli.peer(addr)
		if err != nil {
			t.Fatal(err)
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.live
	}
	check := func() bool {
		it := CheckItem{Key: "k", Hits: 1}
		res, err := cli.Check(ctx, addr, it)
		return err == nil && res == expected(it)
	}
	eventually(t, 5*time.Second, func() bool { return check() && live() == 2 }, "two live connections")
	if st := cli.Stats(); st.Dials != 2 {
		t.Errorf("Dials = %d, want 2", st.Dials)
	}
	srv.Close()
	<-served
	eventually(t, 5*time.Second, func() bool { check(); return live() == 0 }, "both connections to drop")
	newTCP(t, TCPConfig{Addr: addr}, nil)
	eventually(t, 5*time.Second, func() bool { return check() && live() == 2 }, "both connections back")
}

// Closing a server with requests in flight does not leave them hanging
// until their deadline: they are answered (the handler saw its ctx
// cancelled and returned) or fail as unreachable, at once.
func TestTCPServerCloseWithRequestsInFlight(t *testing.T) {
	g := newGate("block")
	defer close(g.release)
	srv, err := NewTCP(TCPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(&echoHandler{gate: g.hold}) }()
	cli := newClient(t, TCPConfig{})
	errs := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := cli.Check(ctx, srv.Addr(), CheckItem{Key: "block"})
		errs <- err
	}()
	eventually(t, 5*time.Second, func() bool { return g.count() == 1 }, "the check to be in flight")
	start := time.Now()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil && !errors.Is(err, ErrUnreachable) {
		t.Fatalf("check in flight when the server closed: %v, want an answer or ErrUnreachable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v", took)
	}
}

// A connection that breaks fails its requests in flight at once as
// unreachable, not at their deadline.
func TestTCPBrokenConnectionFailsRequestsInFlight(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		var scratch []byte
		readFrame(bufio.NewReader(nc), &scratch, 1<<20, nil) // take the request, then die
		nc.Close()
	}()
	cli := newClient(t, TCPConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	if _, err := cli.Check(ctx, ln.Addr().String(), CheckItem{Key: "k"}); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("check on a broken connection: %v, want ErrUnreachable", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v", took)
	}
}

// A remote check allocates nothing on the client, and one string (the keys
// of the batch) on the server.
func TestTCPCheckAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	srv := newTCP(t, TCPConfig{}, nil)
	cli := newClient(t, TCPConfig{})
	ctx := context.Background()
	it := CheckItem{Policy: "auth", Key: "ip:1.2.3.4", Hits: 1}
	if _, err := cli.Check(ctx, srv.Addr(), it); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(500, func() {
		if _, err := cli.Check(ctx, srv.Addr(), it); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1.5 {
		t.Errorf("%.2f allocations per remote check (client and server), want at most 1", allocs)
	}
}
