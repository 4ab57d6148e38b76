package bench

import (
	"errors"
	"os"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and a parenthesis: fields count from the
	// last ')'. utime 250 and stime 17 ticks of 10 ms.
	line := "4242 (rate limit) d)) S 1 4242 4242 0 -1 4194560 1380 0 0 0 250 17 0 0 20 0 9 0 1000 0 0\n"
	got, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2670 * time.Millisecond; got != want {
		t.Errorf("CPU = %v, want %v", got, want)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 x 1"} {
		if _, err := parseProcStat(bad); !errors.Is(err, ErrNoProcCPU) {
			t.Errorf("parseProcStat(%q) err = %v, want ErrNoProcCPU", bad, err)
		}
	}
}

func TestProcessCPUOfSelf(t *testing.T) {
	before, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn at least 50 ms of CPU, bounded in time.
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for {
		for i := range 1_000_000 {
			x += i
		}
		after, err := ProcessCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after-before >= 50*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time moved %v in 5 s of spinning, want at least 50ms", after-before)
		}
	}
	_ = x
	if _, err := ProcessCPU(-1); !errors.Is(err, ErrNoProcCPU) {
		t.Errorf("ProcessCPU(-1) err = %v, want ErrNoProcCPU", err)
	}
}
