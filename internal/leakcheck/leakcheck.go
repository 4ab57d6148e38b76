// Package leakcheck is the goroutine-leak check of the project's test
// binaries: goleak, with time for what ends on its own timers.
package leakcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Patience is how long goroutines may outlive the tests before they count
// as leaked: memberlist's last probes of a node that shut down end on their
// own timers, up to about a second later.
const Patience = 5 * time.Second

// Main runs the tests and, when they pass, fails the binary if goroutines
// other than those opts ignore are still running Patience later. Use it as
// os.Exit(leakcheck.Main(m)) in TestMain.
func Main(m *testing.M, opts ...goleak.Option) int {
	code := m.Run()
	if code != 0 {
		return code
	}
	if err := Wait(opts...); err != nil {
		fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
		return 1
	}
	return 0
}

// Wait returns nil once no goroutine but those opts ignore runs, or
// goleak's report after Patience.
func Wait(opts ...goleak.Option) error {
	deadline := time.Now().Add(Patience)
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
