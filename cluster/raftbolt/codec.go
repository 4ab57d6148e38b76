package raftbolt

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// The value of one log entry, format version 1:
//
//	version   1 byte  (formatVersion)
//	type      1 byte  (raft.LogType)
//	flags     1 byte  (flagTime, flagData, flagExt)
//	index     uvarint (equal to the key; checked on read)
//	term      uvarint
//	[seconds  varint, nanos uvarint]  if flagTime: AppendedAt
//	[len      uvarint, bytes]         if flagData: Data
//	[len      uvarint, bytes]         if flagExt:  Extensions
//
// The flags keep a nil slice apart from an empty one, and the zero time apart
// from any instant, so an entry reads back exactly as it was stored.
const (
	formatVersion = 1

	flagTime = 1 << 0
	flagData = 1 << 1
	flagExt  = 1 << 2
)

// encodedLen returns an upper bound of the encoded size of l.
func encodedLen(l *raft.Log) int {
	return 3 + 2*binary.MaxVarintLen64 + // header, index, term
		2*binary.MaxVarintLen64 + // AppendedAt
		binary.MaxVarintLen64 + len(l.Data) +
		binary.MaxVarintLen64 + len(l.Extensions)
}

// appendLog appends the encoding of l to buf.
func appendLog(buf []byte, l *raft.Log) []byte {
	var flags byte
	if !l.AppendedAt.IsZero() {
		flags |= flagTime
	}
	if l.Data != nil {
		flags |= flagData
	}
	if l.Extensions != nil {
		flags |= flagExt
	}
	buf = append(buf, formatVersion, byte(l.Type), flags)
	buf = binary.AppendUvarint(buf, l.Index)
	buf = binary.AppendUvarint(buf, l.Term)
	if flags&flagTime != 0 {
		buf = binary.AppendVarint(buf, l.AppendedAt.Unix())
		buf = binary.AppendUvarint(buf, uint64(l.AppendedAt.Nanosecond()))
	}
	if flags&flagData != 0 {
		buf = binary.AppendUvarint(buf, uint64(len(l.Data)))
		buf = append(buf, l.Data...)
	}
	if flags&flagExt != 0 {
		buf = binary.AppendUvarint(buf, uint64(len(l.Extensions)))
		buf = append(buf, l.Extensions...)
	}
	return buf
}

// decodeLog decodes v, the value stored under index, into l. Data and
// Extensions are copied out of v (which bbolt owns) into one new allocation.
func decodeLog(index uint64, v []byte, l *raft.Log) error {
	d := decoder{buf: v}
	version, typ, flags := d.byte(), d.byte(), d.byte()
	if d.err == nil && version != formatVersion {
		return fmt.Errorf("%w: log %d: format version %d, want %d", ErrCorrupt, index, version, formatVersion)
	}
	if flags&^(flagTime|flagData|flagExt) != 0 {
		return fmt.Errorf("%w: log %d: unknown flags %#x", ErrCorrupt, index, flags)
	}
	stored, term := d.uvarint(), d.uvarint()
	var appended time.Time
	if flags&flagTime != 0 {
		sec, nsec := d.varint(), d.uvarint()
		if d.err == nil && nsec >= uint64(time.Second) {
			return fmt.Errorf("%w: log %d: nanoseconds %d out of range", ErrCorrupt, index, nsec)
		}
		appended = time.Unix(sec, int64(nsec)).UTC()
	}
	var data, ext []byte
	if flags&flagData != 0 {
		data = d.bytes()
	}
	if flags&flagExt != 0 {
		ext = d.bytes()
	}
	switch {
	case d.err != nil:
		return fmt.Errorf("%w: log %d: %v", ErrCorrupt, index, d.err)
	case len(d.buf) != 0:
		return fmt.Errorf("%w: log %d: %d trailing bytes", ErrCorrupt, index, len(d.buf))
	case stored != index:
		return fmt.Errorf("%w: log %d: entry holds index %d", ErrCorrupt, index, stored)
	}
	// One allocation for both slices; the caps stop an append to one from
	// overwriting the other.
	own := make([]byte, len(data)+len(ext))
	copy(own, data)
	copy(own[len(data):], ext)
	*l = raft.Log{
		Index:      index,
		Term:       term,
		Type:       raft.LogType(typ),
		AppendedAt: appended,
	}
	if data != nil {
		l.Data = own[:len(data):len(data)]
	}
	if ext != nil {
		l.Extensions = own[len(data):]
	}
	return nil
}

// decoder reads fields from buf; the first failure sticks in err and turns
// every later read into a zero value.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.buf) == 0 {
		d.err = fmt.Errorf("truncated")
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.err = fmt.Errorf("bad uvarint")
		return 0
	}
	d.buf = d.buf[n:]
	return x
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Varint(d.buf)
	if n <= 0 {
		d.err = fmt.Errorf("bad varint")
		return 0
	}
	d.buf = d.buf[n:]
	return x
}

// bytes returns a length-prefixed slice of buf (not a copy).
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) {
		d.err = fmt.Errorf("length %d beyond the %d bytes left", n, len(d.buf))
		return nil
	}
	b := d.buf[:n:n]
	d.buf = d.buf[n:]
	return b
}
