package transport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/vibewell/ratelimit/internal/msgpackenc"
)

// Seeds live in testdata/fuzz/<FuzzName>; TRANSPORT_WRITE_SEEDS=1 go test
// -run TestWriteFuzzSeeds ./transport rewrites the generated ones.

const fuzzMaxFrame = 1 << 16

// FuzzDecodeFrame reads a byte stream as the server and the client do:
// frames until an error, each body decoded as every frame type. It must
// never panic, never read past a frame, never hold a buffer larger than
// twice the bytes that arrived (plus the read buffer), whatever the
// lengths announced, and whatever decodes must re-encode to the same
// values.
func FuzzDecodeFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		const bufSize = 4096
		br := bufio.NewReaderSize(bytes.NewReader(data), bufSize)
		var scratch []byte
		in := make(interner)
		for range 64 {
			h, body, err := readFrame(br, &scratch, fuzzMaxFrame, nil)
			if cap(scratch) > 2*len(data)+bufSize {
				t.Fatalf("buffer of %d bytes for a stream of %d", cap(scratch), len(data))
			}
			if err != nil {
				return
			}
			if h.bodyLen != len(body) || h.bodyLen+headerLen > fuzzMaxFrame {
				t.Fatalf("header %+v with a body of %d bytes", h, len(body))
			}
			checkBatchRoundTrip(t, body, in)
			resultBatchRoundTrip(t, body)
			_, _, _ = decodePair(body)
			_, _, _ = decodeErrorBody(body)
		}
	})
}

// FuzzDecodeCheckBatch decodes check batches.
func FuzzDecodeCheckBatch(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		checkBatchRoundTrip(t, data, nil)
	})
}

// FuzzDecodeResultBatch decodes check answers.
func FuzzDecodeResultBatch(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		resultBatchRoundTrip(t, data)
	})
}

func checkBatchRoundTrip(t *testing.T, data []byte, in interner) {
	items, err := decodeCheckBatch(data, nil, in)
	if err != nil {
		if !errors.Is(err, ErrBadFrame) || len(items) != 0 {
			t.Fatalf("decode error %v with %d items", err, len(items))
		}
		return
	}
	again, err := decodeCheckBatch(appendCheckBatch(nil, items), nil, nil)
	if err != nil || !reflect.DeepEqual(again, items) && len(items) > 0 {
		t.Fatalf("re-encoded items differ: %v", err)
	}
}

func resultBatchRoundTrip(t *testing.T, data []byte) {
	results, err := decodeResultBatch(data, nil)
	if err != nil {
		if !errors.Is(err, ErrBadFrame) || len(results) != 0 {
			t.Fatalf("decode error %v with %d results", err, len(results))
		}
		return
	}
	again, err := decodeResultBatch(appendResultBatch(nil, results), nil)
	if err != nil || !reflect.DeepEqual(again, results) && len(results) > 0 {
		t.Fatalf("re-encoded results differ: %v", err)
	}
}

// TestWriteFuzzSeeds writes the generated seed corpus (valid frames of
// every type, and near misses) when TRANSPORT_WRITE_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("TRANSPORT_WRITE_SEEDS") != "1" {
		t.Skip("set TRANSPORT_WRITE_SEEDS=1 to rewrite testdata/fuzz seeds")
	}
	items := []CheckItem{{Policy: "auth", Key: "ip:1.2.3.4", Hits: 1}, {Policy: "default", Key: "user:42", Hits: -300}}
	results := []CheckResult{{Status: StatusOK, Allowed: true, Limit: 10, Remaining: 9, ResetAfter: 9e11}, {Status: StatusNotOwner}}
	frame := func(typ byte, id uint32, body []byte) []byte {
		b := appendHeader(nil, typ, id)
		b = append(b, body...)
		finishFrame(b, 0, fuzzMaxFrame)
		return b
	}
	checks := appendCheckBatch(nil, items)
	answers := appendResultBatch(nil, results)
	call := msgpackenc.AppendBytes(msgpackenc.AppendString([]byte{0x92}, "handoff"), []byte{0x91, 0x01})
	callResp := msgpackenc.AppendBytes(msgpackenc.AppendString([]byte{0x92}, "no such method"), nil)
	errBody := appendErrorBody(nil, codeVersion, "unsupported protocol version")
	stream := append(frame(frameCheck, 1, checks), frame(frameCheckResp, 1, answers)...)
	stream = append(stream, frame(frameCall, 2, call)...)
	seeds := map[string]map[string][]byte{
		"FuzzDecodeFrame": {
			"check":        frame(frameCheck, 1, checks),
			"answer":       frame(frameCheckResp, 1, answers),
			"call":         frame(frameCall, 2, call),
			"call_answer":  frame(frameCallResp, 2, callResp),
			"error":        frame(frameError, 3, errBody),
			"stream":       stream,
			"oversized":    {0x7f, 0xff, 0xff, 0xff, 1, 1, 0, 0, 0, 1},
			"short_length": {0, 0, 0, 1, 1, 1, 0, 0, 0, 1},
			"truncated":    frame(frameCheck, 1, checks)[:20],
			"large_body":   frame(frameCheck, 9, appendCheckBatch(nil, []CheckItem{{Key: string(make([]byte, 5000))}})),
			// A frame announced at the maximum whose body never comes (the
			// flood of connections announcing 4 MiB frames).
			"announced_max":  {0, 0, 0xff, 0xf0, 1, 3, 0, 0, 0, 1, 0x92, 0xa1, 'x'},
			"announced_half": append(frame(frameCheck, 1, checks), 0, 0, 0x80, 0, 1, 1, 0, 0, 0, 2, 0x91),
			"call_then_junk": append(frame(frameCall, 2, call), 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0),
		},
		"FuzzDecodeCheckBatch": {
			"two":       checks,
			"empty":     {0x90},
			"bomb":      {0xdd, 0xff, 0xff, 0xff, 0xff},
			"extra":     {0x91, 0x94, 0xa1, 'p', 0xa1, 'k', 0x01, 0x81, 0xa1, 'x', 0x92, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xd4, 1, 2},
			"truncated": checks[:len(checks)-3],
		},
		"FuzzDecodeResultBatch": {
			"two":   answers,
			"empty": {0x90},
			"bad":   {0x91, 0x96, 0xcd, 0x01, 0x00, 0xc2, 0, 0, 0, 0},
		},
	}
	for fuzz, files := range seeds {
		dir := filepath.Join("testdata", "fuzz", fuzz)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range files {
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
			if err := os.WriteFile(filepath.Join(dir, "seed_"+name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
