// Package crash lets this module's tests stop a cluster.Node as a crash
// would (no hand-off, no leave message: peers find out by failure
// detection) without a method on the node's public API.
//
// A test puts a Switch in the context it gives cluster.Start, which arms
// it with the node's halt; Pull then stops that node:
//
//	sw := new(crash.Switch)
//	node, err := cluster.Start(crash.With(ctx, sw), cfg)
//	...
//	sw.Pull() // the node is gone, as if its process had died
package crash

import (
	"context"
	"sync"
)

// Switch stops one node. Its zero value is unarmed; it is safe for
// concurrent use.
type Switch struct {
	mu   sync.Mutex
	halt func()
}

type key struct{}

// With returns ctx carrying s, for cluster.Start to arm.
func With(ctx context.Context, s *Switch) context.Context {
	return context.WithValue(ctx, key{}, s)
}

// Arm gives the Switch carried by ctx, if any, the function that halts the
// node being started.
func Arm(ctx context.Context, halt func()) {
	if s, ok := ctx.Value(key{}).(*Switch); ok && s != nil {
		s.mu.Lock()
		s.halt = halt
		s.mu.Unlock()
	}
}

// Pull halts the node the Switch was armed for, and reports whether it
// was armed. It returns once the node has stopped.
func (s *Switch) Pull() bool {
	s.mu.Lock()
	halt := s.halt
	s.mu.Unlock()
	if halt == nil {
		return false
	}
	halt()
	return true
}
