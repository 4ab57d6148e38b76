package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// rawFrame builds a frame with any header values.
func rawFrame(version, typ byte, id uint32, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(6+len(body)))
	b = append(b, version, typ)
	b = binary.BigEndian.AppendUint32(b, id)
	return append(b, body...)
}

// A raw client that writes junk gets its connection closed (after an error
// frame when the junk is well framed); the server keeps serving others.
func TestTCPRejectsGarbageFrames(t *testing.T) {
	logs := &countingHandler{}
	srv := newTCP(t, TCPConfig{MaxFrame: 1 << 16, Logger: slog.New(logs)}, nil)
	good := newClient(t, TCPConfig{})
	ctx := context.Background()
	if _, err := good.Check(ctx, srv.Addr(), CheckItem{Key: "before"}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		data     []byte
		wantCode int64 // error frame expected before the close; 0: none
		broken   bool  // a connection cut mid-frame, not a bad frame
	}{
		{"oversized length", []byte{0xff, 0xff, 0xff, 0xf0, 1, 1, 0, 0, 0, 1}, 0, false},
		{"http request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0, false},
		{"length shorter than a header", []byte{0, 0, 0, 2, 1, 1, 0, 0, 0, 0}, 0, false},
		{"bad check body", rawFrame(Version, frameCheck, 7, []byte{0x91, 0xc1, 0xc1, 0xc1}), codeBadFrame, false},
		{"array length bomb", rawFrame(Version, frameCheck, 7, []byte{0xdd, 0xff, 0xff, 0xff, 0xff}), codeBadFrame, false},
		{"bad call body", rawFrame(Version, frameCall, 7, []byte{0x01}), codeBadFrame, false},
		{"unknown type", rawFrame(Version, 77, 7, []byte{0xc0}), codeBadType, false},
		{"other version", rawFrame(Version+1, frameCheck, 7, []byte{0x90}), codeVersion, false},
		{"truncated", rawFrame(Version, frameCheck, 7, []byte{0x90})[:8], 0, true},
	}
	bad := uint64(0)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Write(tc.data); err != nil {
				t.Fatal(err)
			}
			if tc.name == "truncated" {
				nc.(*net.TCPConn).CloseWrite()
			}
			_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(nc)
			if tc.wantCode != 0 {
				var scratch []byte
				h, body, err := readFrame(br, &scratch, 1<<16, nil)
				if err != nil {
					t.Fatalf("want an error frame: %v", err)
				}
				code, _, err := decodeErrorBody(body)
				if h.typ != frameError || h.id != 7 || err != nil || code != tc.wantCode {
					t.Fatalf("got frame %+v code %d (%v), want error code %d for id 7", h, code, err, tc.wantCode)
				}
			}
			if _, err := io.ReadAll(br); err != nil { // returns at EOF: the server closed
				t.Fatalf("want the connection closed: %v", err)
			}
			if !tc.broken {
				bad++
			}
			eventually(t, 5*time.Second, func() bool { return srv.Stats().BadFrames == bad }, "the bad frame to be counted")
			if _, err := good.Check(ctx, srv.Addr(), CheckItem{Key: "after"}); err != nil {
				t.Fatalf("server stopped serving: %v", err)
			}
		})
	}
	if logs.count() == 0 {
		t.Error("no rejection was logged")
	}
}

// Rejections are logged at most once a second, however many come.
func TestTCPLogsAtCappedRate(t *testing.T) {
	logs := &countingHandler{}
	srv := newTCP(t, TCPConfig{Logger: slog.New(logs)}, nil)
	start := time.Now()
	for range 50 {
		nc, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		nc.Write([]byte("junk junk junk"))
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, nc) // until the server closes it
		nc.Close()
	}
	eventually(t, 5*time.Second, func() bool { return srv.Stats().BadFrames == 50 }, "50 rejections")
	elapsed := time.Since(start)
	if n, most := logs.count(), int(elapsed/time.Second)+1; n < 1 || n > most {
		t.Errorf("%d log lines for 50 rejections in %v, want 1..%d", n, elapsed, most)
	}
}

// A peer that answers junk breaks only its own connection.
func TestTCPClientRejectsGarbageAnswers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	answers := [][]byte{
		[]byte("HTTP/1.1 400 Bad Request\r\n\r\n"),
		rawFrame(Version, frameCheckResp, 1, []byte{0x95, 0xc1}),
		rawFrame(Version, frameCheckResp, 1, twoResults()),            // two results for one check
		rawFrame(Version+1, frameCheckResp, 1, []byte{0x90}),          // other version
		rawFrame(Version, frameCallResp, 1, []byte{0x92, 0xc0, 0xc0}), // a call answer to a check
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		for _, a := range answers {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(nc)
			var scratch []byte
			if _, _, err := readFrame(br, &scratch, 1<<20, nil); err == nil {
				nc.Write(a)
			}
			io.Copy(io.Discard, br) // until the client closes
			nc.Close()
		}
	}()
	cli := newClient(t, TCPConfig{BackoffMin: time.Millisecond})
	ctx := context.Background()
	for i := range answers {
		_, err := cli.Check(ctx, ln.Addr().String(), CheckItem{Key: "k"})
		if err == nil {
			t.Fatalf("answer %d accepted", i)
		}
		if i == 3 && !errors.Is(err, ErrVersion) {
			t.Errorf("answer of another version: %v, want ErrVersion", err)
		}
		if got := cli.Stats().BadFrames; got != uint64(i+1) {
			t.Fatalf("after answer %d: BadFrames = %d", i, got)
		}
	}
	ln.Close()
	<-served
	if st := cli.Stats(); st.BadFrames != uint64(len(answers)) {
		t.Errorf("BadFrames = %d, want %d", st.BadFrames, len(answers))
	}
}

func twoResults() []byte {
	return appendResultBatch(nil, []CheckResult{{}, {}})
}

// A peer of another version answers with an error frame: ErrVersion.
func TestTCPVersionErrorFrame(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		br := bufio.NewReader(nc)
		var scratch []byte
		if h, _, err := readFrame(br, &scratch, 1<<20, nil); err == nil {
			nc.Write(rawFrame(Version, frameError, h.id, appendErrorBody(nil, codeVersion, "unsupported protocol version")))
		}
		io.Copy(io.Discard, br)
	}()
	cli := newClient(t, TCPConfig{})
	_, err = cli.Check(context.Background(), ln.Addr().String(), CheckItem{Key: "k"})
	if !errors.Is(err, ErrVersion) {
		t.Fatalf("check to a peer of another version: %v, want ErrVersion", err)
	}
	cli.Close()
	<-served
}
