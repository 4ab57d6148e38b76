// Package transport is the node-to-node protocol of the cluster: it carries
// checks to the node that owns their key, and calls off the check path
// (counter hand-off, policy writes forwarded to the raft leader).
//
// Two implementations share the Transport interface: TCP, persistent
// (optionally mutual-TLS) connections between nodes, and Network, an
// in-memory network for tests that can partition and delay. The package
// depends on the standard library and msgpack only; its wire structs
// (CheckItem, CheckResult) are its own, and the cluster converts them to
// and from the domain types.
//
// # Usage
//
//	t, err := transport.NewTCP(transport.TCPConfig{Addr: "127.0.0.1:0"})
//	go t.Serve(handler)   // handler decides the checks this node owns
//	defer t.Close()
//	res, err := t.Check(ctx, peerAddr, transport.CheckItem{Policy: "auth", Key: "ip:1.2.3.4", Hits: 1})
//
// In tests:
//
//	net := transport.NewNetwork()
//	a, b := net.Transport("a"), net.Transport("b")
//	net.Partition([]string{"a"}, []string{"b"}) // a <-> b fail at once with ErrUnreachable
//	net.Heal()
//
// # Frames
//
// A connection carries frames in both directions. Every frame is
//
//	uint32 length   big-endian; the bytes after this field (6 + body)
//	uint8  version  Version
//	uint8  type     1 check, 2 check answer, 3 call, 4 call answer, 5 error
//	uint32 id       request id, chosen by the sender, echoed by the answer
//	body            one msgpack value
//
// with these bodies:
//
//	check         [[policy str, key str, hits int], ...]
//	check answer  [[status uint, allowed bool, limit int, remaining int, reset_after_ns int, retry_after_ns int], ...]
//	call          [method str, body bin|nil]
//	call answer   [error str|nil, body bin|nil]
//	error         [code uint, message str]   the request failed as a whole
//
// Requests are pipelined: a connection carries many requests at once, and
// answers, which may come in any order, are matched to requests by id. A
// frame longer than MaxFrame (whole frame, header included) is refused
// before it is sent (ErrFrameTooLarge) and, if announced by a peer, closes
// the connection before its body is read; so do malformed frames. A
// receiver's rejections are logged at most once a second.
//
// The check path encodes and decodes whole batches by hand, in msgpack,
// into reused buffers (no reflection; the keys of a batch share one
// allocation): see BenchmarkCodec and BenchmarkCodecRatio. Call bodies are opaque
// bytes: callers may encode them with msgpack reflection.
//
// # Batching
//
// Concurrent Checks to one peer are gathered into batches without a timer.
// A check goes out at once, alone, when fewer than MaxInFlight batches to
// that peer are in flight (by default: when none is); otherwise it joins
// the peer's queue, and the queue leaves as one batch as soon as an
// in-flight batch returns, or at once when it holds MaxBatch checks (or
// MaxFrame bytes). So a lone check costs one round trip, and under load
// the batches grow with the number of callers. MaxInFlight defaults to 1:
// on a 2-core machine it gave about twice the checks per frame of 2 and
// the most decisions/s (docs/benchmarks-transport.md). With 1, a slow
// batch holds back the checks queued behind it (never CheckMany or Call,
// and never beyond a full batch); MaxInFlight 2 or more lets them overtake
// it. CheckMany sends a caller's own batch at once, outside this rule. The
// batch gathered behind one in flight is sent by the connection's reader as
// soon as it has handed out the answers, without waking another goroutine.
//
// The server decodes each frame in the connection's reader goroutine and
// hands check batches to a few worker goroutines started on demand, so a
// slow batch does not hold up the next; each Call runs in its own
// goroutine. Answers written by several goroutines at once leave in one
// system call.
//
// # Failures and timeouts
//
// A request ends at its ctx deadline (ErrTimeout, also matching
// context.DeadlineExceeded), or after CallTimeout when its ctx has none. A
// broken connection fails its requests with ErrUnreachable (the peer may
// or may not have decided them) and is redialed on the next request; after
// a failed dial the peer is in back-off (BackoffMin doubling to BackoffMax,
// optionally jittered), during which requests to it fail at once with
// ErrUnreachable so that the caller's failure mode applies without delay.
// A write to a peer that stops reading holds its writer for at most
// CallTimeout, and then closes the connection.
// A peer left without a connection or request for a minute is forgotten,
// so the addresses of departed nodes do not pile up.
//
// # Versioning
//
// Every frame carries Version. A node answers a frame of another version
// with an error frame (code 1) and closes the connection; the sender sees
// ErrVersion. Within a version, the arrays of check items, results and
// call bodies may grow new trailing fields: decoders skip fields they do
// not know. Renumbering statuses or frame types, or changing a field's
// meaning, needs a new Version.
package transport
