package msgpackfit

import (
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestFits(t *testing.T) {
	ok, _ := msgpack.Marshal(map[string]any{"v": 1, "s": "abc", "b": []byte{1, 2}, "a": []int{1, 2, 3}})
	for name, tc := range map[string]struct {
		b    []byte
		want bool
	}{
		"a whole map":                       {ok, true},
		"empty":                             {nil, true},
		"cut short (the decoder's)":         {[]byte{0x82, 0xa1, 'v'}, true},
		"str32 announcing 2 GB":             {[]byte("\x82\xa1v\x01\xa1i\x91\x81\xa1p\xdb\x7f\xff\xff\xff"), false},
		"bin32 announcing 16 MB":            {[]byte{0xc6, 0x01, 0x00, 0x00, 0x00, 0x01}, false},
		"ext32 announcing 16 MB":            {[]byte{0xc9, 0x01, 0x00, 0x00, 0x00, 0x01, 0x02}, false},
		"array of more elements than bytes": {[]byte{0xdd, 0x7f, 0xff, 0xff, 0xff, 0x01}, true},
	} {
		if got := Fits(tc.b); got != tc.want {
			t.Errorf("%s: Fits = %v, want %v", name, got, tc.want)
		}
	}
}
