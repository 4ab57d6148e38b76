//go:build unix

package cluster_test

import (
	"syscall"
	"time"
)

// processCPU is the CPU time the test process used so far (user and
// system): a benchmark on a loaded machine compares it per operation,
// which the other processes' load moves far less than the wall clock.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
