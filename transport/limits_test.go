package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// Each limit of an incoming connection trips, closes (or holds back) what
// exceeds it, and is counted in Stats.

// closedWithin reports whether the server closes nc within d.
func closedWithin(nc net.Conn, d time.Duration) bool {
	_ = nc.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, nc)
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

func TestLimitMaxConns(t *testing.T) {
	srv := newTCP(t, TCPConfig{MaxConns: 2}, nil)
	var conns []net.Conn
	for range 3 {
		nc, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		conns = append(conns, nc)
	}
	if !closedWithin(conns[2], 5*time.Second) {
		t.Error("the connection beyond MaxConns stayed open")
	}
	if closedWithin(conns[0], 100*time.Millisecond) {
		t.Error("a connection within MaxConns was closed")
	}
	eventually(t, 5*time.Second, func() bool { return srv.Stats().ConnsRefused == 1 }, "ConnsRefused == 1")
}

func TestLimitReadTimeout(t *testing.T) {
	srv := newTCP(t, TCPConfig{ReadTimeout: 200 * time.Millisecond}, nil)
	nc, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// A frame announcing 1 MiB, of which 3 bytes come.
	hdr := binary.BigEndian.AppendUint32(nil, 1<<20)
	nc.Write(append(hdr, Version, frameCall, 0, 0, 0, 1, 0x92, 0xa1, 'x'))
	if !closedWithin(nc, 5*time.Second) {
		t.Fatal("a frame that never completes kept its connection open")
	}
	eventually(t, 5*time.Second, func() bool { return srv.Stats().ReadTimeouts == 1 }, "ReadTimeouts == 1")
}

func TestLimitIdleTimeout(t *testing.T) {
	srv := newTCP(t, TCPConfig{IdleTimeout: 200 * time.Millisecond}, nil)
	nc, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if !closedWithin(nc, 5*time.Second) {
		t.Fatal("an idle connection stayed open")
	}
	eventually(t, 5*time.Second, func() bool { return srv.Stats().IdleClosed == 1 }, "IdleClosed == 1")
	// A client that is not idle keeps its connection.
	cli := newClient(t, TCPConfig{})
	for range 5 {
		if _, err := cli.Call(context.Background(), srv.Addr(), "echo", []byte("x")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := srv.Stats(); st.IdleClosed != 1 {
		t.Errorf("IdleClosed = %d after calls within IdleTimeout, want 1", st.IdleClosed)
	}
}

// blockingCalls holds every call until release is closed.
type blockingCalls struct {
	echoHandler
	release chan struct{}
	running sync.WaitGroup
}

func (h *blockingCalls) HandleCall(ctx context.Context, method string, body []byte) ([]byte, error) {
	h.running.Done()
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	return body, nil
}

func TestLimitCallsPerConn(t *testing.T) {
	h := &blockingCalls{release: make(chan struct{})}
	h.running.Add(2)
	srv := newTCP(t, TCPConfig{MaxCallsPerConn: 2}, h)
	cli := newClient(t, TCPConfig{CallTimeout: 10 * time.Second})
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			_, err := cli.Call(context.Background(), srv.Addr(), "x", nil)
			errs <- err
		})
	}
	h.running.Wait() // two calls run; the third waits for one
	eventually(t, 5*time.Second, func() bool { return srv.Stats().CallsThrottled == 1 }, "CallsThrottled == 1")
	h.running.Add(1)
	close(h.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a throttled call failed: %v", err)
		}
	}
}
