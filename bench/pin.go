package bench

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// plan splits the CPUs this process may run on between the nodes and the
// load generator: each node gets an equal share, the generator (this
// process) the rest, and is moved onto it. With fewer CPUs than nodes plus
// one, nothing is pinned.
func (s *Spawned) plan() error {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		s.pinning = fmt.Sprintf("not pinned: %v", err)
		return nil
	}
	var cpus []int
	for c := range 1024 {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	n := s.cfg.Nodes
	per := len(cpus) / (n + 1)
	if per == 0 {
		s.pinning = fmt.Sprintf("not pinned: %d CPUs for %d node(s) and the load generator, which want one each at least; the nodes and the generator share them", len(cpus), n)
		return nil
	}
	s.cpus = make([][]int, n)
	var parts []string
	for i := range n {
		s.cpus[i] = cpus[i*per : (i+1)*per]
		parts = append(parts, "node "+strconv.Itoa(i)+" CPU "+cpuList(s.cpus[i]))
	}
	gen := cpus[n*per:]
	if err := pinSelf(gen); err != nil {
		return fmt.Errorf("%w: pin the load generator: %w", ErrSpawn, err)
	}
	s.pinning = strings.Join(parts, ", ") + ", load generator CPU " + cpuList(gen)
	return nil
}

func cpuList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

func cpuSet(cpus []int) *unix.CPUSet {
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	return &set
}

// pinSelf moves every thread of this process onto cpus (the affinity of a
// Linux process is per thread; new threads inherit their creator's).
func pinSelf(cpus []int) error {
	set := cpuSet(cpus)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
			return err
		}
	}
	return nil
}

// startPinned starts cmd on cpus (all of them when cpus is empty). A child
// inherits the affinity of the thread that forks it, so this thread takes
// the child's CPUs for the fork and gets its own back after.
func startPinned(cmd *exec.Cmd, cpus []int) error {
	if len(cpus) == 0 {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return err
	}
	if err := unix.SchedSetaffinity(0, cpuSet(cpus)); err != nil {
		return err
	}
	err := cmd.Start()
	if rerr := unix.SchedSetaffinity(0, &old); rerr != nil && err == nil {
		err = rerr
	}
	return err
}
