package transport

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

func TestNetworkRoundTrip(t *testing.T) {
	n := NewNetwork()
	a, b := n.Transport("a"), n.Transport("b")
	serve(t, a, &echoHandler{})
	serve(t, b, &echoHandler{})
	if n.Transport("a") != a {
		t.Fatal("Transport(a) made a second transport for a live address")
	}
	ctx := context.Background()
	it := CheckItem{Policy: "p", Key: "key", Hits: 12}
	if res, err := a.Check(ctx, "b", it); err != nil || res != expected(it) {
		t.Fatalf("Check: %+v, %v", res, err)
	}
	items := []CheckItem{{Key: "x"}, {Key: "yy", Hits: 20}}
	out := make([]CheckResult, 2)
	if err := b.CheckMany(ctx, "a", items, out); err != nil || out[0] != expected(items[0]) || out[1] != expected(items[1]) {
		t.Fatalf("CheckMany: %+v, %v", out, err)
	}
	if err := b.CheckMany(ctx, "a", items, out[:1]); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("CheckMany short out: %v", err)
	}
	if got, err := a.Call(ctx, "b", "echo", []byte("hi")); err != nil || !bytes.Equal(got, []byte("hi")) {
		t.Fatalf("Call: %q, %v", got, err)
	}
	if _, err := a.Call(ctx, "b", "nope", nil); !errors.Is(err, ErrRemote) {
		t.Fatalf("Call error: %v, want ErrRemote", err)
	}
	if _, err := a.Check(ctx, "nobody", it); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Check to no transport: %v", err)
	}
	if a.Addr() != "a" {
		t.Fatalf("Addr = %q", a.Addr())
	}
}

func TestNetworkPartitionAndHeal(t *testing.T) {
	n := NewNetwork()
	nodes := map[string]Transport{}
	for _, name := range []string{"a", "b", "c"} {
		nodes[name] = n.Transport(name)
		serve(t, nodes[name], &echoHandler{})
	}
	ctx := context.Background()
	it := CheckItem{Key: "k"}
	n.Partition([]string{"a"}, []string{"b", "c"})
	for _, pair := range [][2]string{{"a", "b"}, {"b", "a"}, {"a", "c"}, {"c", "a"}} {
		start := time.Now()
		if _, err := nodes[pair[0]].Check(ctx, pair[1], it); !errors.Is(err, ErrUnreachable) {
			t.Errorf("%s -> %s across the partition: %v, want ErrUnreachable", pair[0], pair[1], err)
		}
		if _, err := nodes[pair[0]].Call(ctx, pair[1], "echo", nil); !errors.Is(err, ErrUnreachable) {
			t.Errorf("call %s -> %s across the partition: %v", pair[0], pair[1], err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("failing across the partition took %v, want at once", took)
		}
	}
	if _, err := nodes["b"].Check(ctx, "c", it); err != nil {
		t.Errorf("b -> c on the same side: %v", err)
	}
	n.Heal()
	if _, err := nodes["a"].Check(ctx, "b", it); err != nil {
		t.Errorf("a -> b after Heal: %v", err)
	}
}

func TestNetworkDelay(t *testing.T) {
	n := NewNetwork()
	a, b := n.Transport("a"), n.Transport("b")
	serve(t, a, &echoHandler{})
	serve(t, b, &echoHandler{})
	n.Delay("b", 30*time.Millisecond)
	ctx := context.Background()
	start := time.Now()
	if _, err := a.Check(ctx, "b", CheckItem{Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 30*time.Millisecond {
		t.Errorf("delayed check took %v, want >= 30ms", took)
	}
	tctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
	_, err := a.Check(tctx, "b", CheckItem{Key: "k"})
	cancel()
	if !isTimeout(err) {
		t.Errorf("check with a deadline shorter than the delay: %v, want ErrTimeout", err)
	}
	n.Delay("b", 0)
	start = time.Now()
	if _, err := a.Check(ctx, "b", CheckItem{Key: "k"}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= 30*time.Millisecond {
		t.Errorf("undelayed check took %v", took)
	}
}

func TestNetworkWaitsForServeAndClose(t *testing.T) {
	n := NewNetwork()
	a, b := n.Transport("a"), n.Transport("b")
	serve(t, a, &echoHandler{})
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		_, err := a.Check(ctx, "b", CheckItem{Key: "k"})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("check to a transport not serving returned: %v", err)
	case <-time.After(20 * time.Millisecond): // it is waiting, as it should
	}
	served := make(chan error, 1)
	go func() { served <- b.Serve(&echoHandler{}) }()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A blocking handler: the caller's deadline holds, and Close waits
	// for the handler, which sees its ctx cancelled.
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err := a.Call(tctx, "b", "block", nil)
	cancel()
	if !isTimeout(err) {
		t.Fatalf("blocking call: %v, want ErrTimeout", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if _, err := a.Check(ctx, "b", CheckItem{}); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("check to a closed transport: %v", err)
	}
	if _, err := b.Check(ctx, "a", CheckItem{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("check from a closed transport: %v", err)
	}
	// A restart at the same address is a new transport.
	b2 := n.Transport("b")
	if b2 == b {
		t.Fatal("Transport(b) returned the closed transport")
	}
	serve(t, b2, &echoHandler{})
	if _, err := a.Check(ctx, "b", CheckItem{}); err != nil {
		t.Fatalf("check to the restarted transport: %v", err)
	}
}
