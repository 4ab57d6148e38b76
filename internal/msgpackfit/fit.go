// Package msgpackfit checks a msgpack body before it is decoded: that
// every length it announces fits in the bytes it has. The cluster's peer
// messages and the HTTP API's msgpack bodies both need it, since the
// msgpack library allocates what a header announces before reading it.
package msgpackfit

// Fits reports whether every length in the msgpack value at the start of
// b fits in the bytes that follow it: the msgpack library
// allocates, in steps of 1 MiB, whatever a string, binary or extension
// header announces before reading it, so 8 bytes announcing 800 MB cost
// tens of megabytes. A body cut short, or with more elements than bytes
// left, passes, for the decoder to report.
func Fits(b []byte) bool {
	pending := 1 // values still to read
	i := 0
	length := func(k int) (int, bool) { // a big-endian length of k bytes at b[i]
		if i+k > len(b) {
			return 0, false
		}
		n := 0
		for _, c := range b[i : i+k] {
			n = n<<8 | int(c)
		}
		i += k
		return n, true
	}
	for pending > 0 && i < len(b) {
		c := b[i]
		i++
		pending--
		skip, count := 0, 0
		var ok bool
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc1 || c == 0xc2 || c == 0xc3:
		case c <= 0x8f:
			count = 2 * int(c&0x0f)
		case c <= 0x9f:
			count = int(c & 0x0f)
		case c <= 0xbf:
			skip = int(c & 0x1f)
		case c == 0xc4 || c == 0xd9:
			skip, ok = length(1)
		case c == 0xc5 || c == 0xda:
			skip, ok = length(2)
		case c == 0xc6 || c == 0xdb:
			skip, ok = length(4)
		case c == 0xc7, c == 0xc8, c == 0xc9: // ext: length, then a type byte
			if skip, ok = length(1 << (c - 0xc7)); ok {
				skip++
			}
		case c == 0xca || c == 0xce || c == 0xd2:
			skip = 4
		case c == 0xcb || c == 0xcf || c == 0xd3:
			skip = 8
		case c == 0xcc || c == 0xd0:
			skip = 1
		case c == 0xcd || c == 0xd1:
			skip = 2
		case c >= 0xd4 && c <= 0xd8: // fixext: a type byte and 1 to 16 bytes
			skip = 1 + 1<<(c-0xd4)
		case c == 0xdc:
			count, ok = length(2)
		case c == 0xdd:
			count, ok = length(4)
		case c == 0xde:
			if count, ok = length(2); ok {
				count *= 2
			}
		case c == 0xdf:
			if count, ok = length(4); ok {
				count *= 2
			}
		}
		if !ok && (c >= 0xc4 && c <= 0xc9 || c >= 0xd9 && c <= 0xdb || c >= 0xdc) {
			return true // the header itself is cut short
		}
		if skip > len(b)-i {
			return false
		}
		if count > len(b)-i {
			return true // too many elements: the decoders refuse that themselves
		}
		i += skip
		pending += count
	}
	return true
}
