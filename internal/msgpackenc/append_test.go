package msgpackenc

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// TestSameBytesAsMsgpack holds each appender to the bytes the msgpack
// library writes for the same value, at the edges of every form.
func TestSameBytesAsMsgpack(t *testing.T) {
	check := func(name string, got []byte, v any) {
		t.Helper()
		want, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: % x, msgpack writes % x", name, got, want)
		}
	}
	for _, v := range []int64{0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, math.MaxUint32, math.MaxUint32 + 1, math.MaxInt64,
		-1, -32, -33, math.MinInt8, math.MinInt8 - 1, math.MinInt16, math.MinInt16 - 1, math.MinInt32, math.MinInt32 - 1, math.MinInt64} {
		var want bytes.Buffer
		if err := msgpack.NewEncoder(&want).EncodeInt(v); err != nil {
			t.Fatal(err)
		}
		if got := AppendInt(nil, v); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("AppendInt(%d): % x, msgpack's EncodeInt writes % x", v, got, want.Bytes())
		}
	}
	for _, v := range []uint64{0, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64} {
		var want bytes.Buffer
		if err := msgpack.NewEncoder(&want).EncodeUint(v); err != nil {
			t.Fatal(err)
		}
		if got := AppendUint(nil, v); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("AppendUint(%d): % x, msgpack's EncodeUint writes % x", v, got, want.Bytes())
		}
	}
	for _, n := range []int{0, 31, 32, 255, 256, 0xffff, 0x10000} {
		s := strings.Repeat("x", n)
		check("AppendString", AppendString(nil, s), s)
		check("AppendBytes", AppendBytes(nil, []byte(s)), []byte(s))
	}
	check("AppendBytes(nil)", AppendBytes(nil, nil), []byte(nil))
	for _, n := range []int{0, 15, 16, 0xffff, 0x10000} {
		a := make([]bool, n)
		got := AppendArrayLen(nil, n)
		for _, v := range a {
			got = AppendBool(got, v)
		}
		check("AppendArrayLen", got, a)
	}
	check("AppendBool", AppendBool(nil, true), true)
}
