package bench

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// Accuracy modes: how exactly a run knows each key's allowance.
const (
	// AccuracyRun: a sliding-window policy whose window outlasts the run,
	// so no hit expires during it and each key's allowance over the whole run
	// is exactly its limit.
	AccuracyRun = "run"
	// AccuracyFixed: a fixed-window policy, accounted per epoch-aligned
	// window: each key's allowance in each window is its limit.
	AccuracyFixed = "fixed_window"
	// AccuracyBound: a rate (GCRA, token bucket) or a sliding window shorter
	// than the run: only an upper bound on each key's allowed hits is known,
	// so over-admission is counted against it and under-admission is not.
	AccuracyBound = "bound"
	// AccuracyNone: the policy is unknown or the checks only peek.
	AccuracyNone = "none"
)

// Accuracy is how a run's decisions compare with the exact allowance of
// each key. Over-admission is counted in hits, under-admission in checks.
type Accuracy struct {
	// Mode is one of AccuracyRun, AccuracyFixed, AccuracyBound, AccuracyNone.
	Mode string `json:"mode"`
	// Note explains the mode in words.
	Note string `json:"note,omitempty"`
	// Keys is how many distinct keys were checked.
	Keys int `json:"keys"`
	// AllowedHits is the total of allowed hits over every key.
	AllowedHits int64 `json:"allowed_hits"`
	// Allowance is the total allowance of the checked keys (the sum of their
	// limits, per window in AccuracyFixed, the bound in AccuracyBound).
	Allowance int64 `json:"allowance"`
	// OverAdmitted is the hits allowed above the allowance, summed over keys
	// (and windows).
	OverAdmitted int64 `json:"over_admitted"`
	// UnderAdmitted is the checks denied while the key's allowance still had
	// room for them, summed over keys (and windows). Not counted in
	// AccuracyBound.
	UnderAdmitted int64 `json:"under_admitted"`
	// KeysOver is how many keys (key-windows in AccuracyFixed) were
	// over-admitted; MaxOver the most hits one of them was over.
	KeysOver int   `json:"keys_over"`
	MaxOver  int64 `json:"max_over"`
	// Ambiguous counts checks of AccuracyFixed sent in one window and
	// answered in the next: their window is unknown, so they and their
	// key-windows are left out of the per-window accounting.
	Ambiguous int64 `json:"ambiguous,omitempty"`
	// Windows is the per-window accounting of AccuracyFixed, oldest first.
	Windows []WindowAccuracy `json:"windows,omitempty"`
}

// WindowAccuracy is the accounting of one fixed window.
type WindowAccuracy struct {
	// Start is the window's start.
	Start time.Time `json:"start"`
	// Allowed and Denied count the window's unambiguous checks.
	Allowed       int64 `json:"allowed"`
	Denied        int64 `json:"denied"`
	OverAdmitted  int64 `json:"over_admitted"`
	UnderAdmitted int64 `json:"under_admitted"`
	Ambiguous     int64 `json:"ambiguous,omitempty"`
}

// keyCounts holds per-key counters of one window (or the whole run).
type keyCounts struct {
	allowedHits []atomic.Int64
	allowed     []atomic.Int64
	denied      []atomic.Int64
	ambiguous   []atomic.Int64
	seen        []atomic.Bool
}

func newKeyCounts(n int) *keyCounts {
	return &keyCounts{
		allowedHits: make([]atomic.Int64, n),
		allowed:     make([]atomic.Int64, n),
		denied:      make([]atomic.Int64, n),
		ambiguous:   make([]atomic.Int64, n),
		seen:        make([]atomic.Bool, n),
	}
}

// maxWindowCells bounds keys × windows of the fixed-window accounting;
// beyond it, windows past the bound are accounted as ambiguous.
const maxWindowCells = 64 << 20

// accounting tallies decisions per key to compare them with the allowance.
// Its record method is safe for concurrent use.
type accounting struct {
	mode     string
	policy   bucket.Policy
	hits     int64
	limits   []int64
	run      *keyCounts
	windowUS int64

	mu      sync.Mutex
	windows map[int64]*keyCounts
}

// newAccounting sets up the accounting of keys under p (nil: unknown).
func newAccounting(p *bucket.Policy, keys []string, hits int64) *accounting {
	a := &accounting{mode: AccuracyNone, hits: hits}
	if p == nil || hits <= 0 || p.Shadow {
		return a
	}
	a.policy = *p
	a.limits = make([]int64, len(keys))
	for i, k := range keys {
		a.limits[i] = p.LimitFor(k)
	}
	switch p.Algorithm {
	case bucket.FixedWindow:
		a.mode = AccuracyFixed
		a.windowUS = p.Window.Microseconds()
		a.windows = make(map[int64]*keyCounts)
	case bucket.SlidingWindow:
		a.mode = AccuracyRun // downgraded to a bound at the end if the run outlasted the window
		a.run = newKeyCounts(len(keys))
	default:
		a.mode = AccuracyBound
		a.run = newKeyCounts(len(keys))
	}
	return a
}

// record tallies one decided check of key index k, sent at sent and
// answered at done (wall clock).
func (a *accounting) record(k int, allowed bool, sent, done time.Time) {
	var c *keyCounts
	switch a.mode {
	case AccuracyNone:
		return
	case AccuracyFixed:
		w0, w1 := sent.UnixMicro()/a.windowUS, done.UnixMicro()/a.windowUS
		c = a.window(w1)
		if c == nil {
			return
		}
		if w0 != w1 {
			c.ambiguous[k].Add(1)
			c.seen[k].Store(true)
			return
		}
	default:
		c = a.run
	}
	if !c.seen[k].Load() {
		c.seen[k].Store(true)
	}
	if allowed {
		c.allowed[k].Add(1)
		c.allowedHits[k].Add(a.hits)
	} else {
		c.denied[k].Add(1)
	}
}

func (a *accounting) window(w int64) *keyCounts {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.windows[w]
	if c == nil {
		if (len(a.windows)+1)*len(a.limits) > maxWindowCells {
			return nil
		}
		c = newKeyCounts(len(a.limits))
		a.windows[w] = c
	}
	return c
}

// result computes the accuracy of a run that lasted elapsed.
func (a *accounting) result(elapsed time.Duration) Accuracy {
	r := Accuracy{Mode: a.mode}
	switch a.mode {
	case AccuracyNone:
		r.Note = "the policy is unknown, shadowed, or checks only peek: no allowance to compare with"
		return r
	case AccuracyFixed:
		r.Note = "fixed window: each key's allowance is its limit in each epoch-aligned window"
		a.mu.Lock()
		ws := make([]int64, 0, len(a.windows))
		for w := range a.windows {
			ws = append(ws, w)
		}
		a.mu.Unlock()
		sort.Slice(ws, func(i, j int) bool { return ws[i] < ws[j] })
		seen := make([]bool, len(a.limits))
		for _, w := range ws {
			c := a.windows[w]
			wa := WindowAccuracy{Start: time.UnixMicro(w * a.windowUS).UTC()}
			for k, limit := range a.limits {
				if !c.seen[k].Load() {
					continue
				}
				seen[k] = true
				amb := c.ambiguous[k].Load()
				wa.Ambiguous += amb
				if amb > 0 {
					continue // the key-window's counts are incomplete
				}
				over, under := a.compare(limit, c, k, true)
				wa.Allowed += c.allowed[k].Load()
				wa.Denied += c.denied[k].Load()
				wa.OverAdmitted += over
				wa.UnderAdmitted += under
				r.AllowedHits += c.allowedHits[k].Load()
				r.Allowance += limit
				if over > 0 {
					r.KeysOver++
					r.MaxOver = max(r.MaxOver, over)
				}
			}
			r.OverAdmitted += wa.OverAdmitted
			r.UnderAdmitted += wa.UnderAdmitted
			r.Ambiguous += wa.Ambiguous
			r.Windows = append(r.Windows, wa)
		}
		for _, s := range seen {
			if s {
				r.Keys++
			}
		}
		return r
	}
	// AccuracyRun or AccuracyBound over the whole run.
	exact := a.mode == AccuracyRun && elapsed < a.policy.Window
	if a.mode == AccuracyRun && !exact {
		r.Mode = AccuracyBound
	}
	for k, limit := range a.limits {
		if !a.run.seen[k].Load() {
			continue
		}
		r.Keys++
		allowance := limit
		if !exact {
			allowance = a.bound(limit, elapsed)
		}
		over, under := a.compare(allowance, a.run, k, exact)
		r.AllowedHits += a.run.allowedHits[k].Load()
		r.Allowance += allowance
		r.OverAdmitted += over
		r.UnderAdmitted += under
		if over > 0 {
			r.KeysOver++
			r.MaxOver = max(r.MaxOver, over)
		}
	}
	if exact {
		r.Note = "the window outlasts the run: each key's allowance over the run is its limit"
	} else {
		r.Note = "rate or short window: allowed hits are compared with an upper bound (capacity plus refill over the run); under-admission is not known"
	}
	return r
}

// compare returns the over-admitted hits and, when exact, the
// under-admitted checks of key k against allowance.
func (a *accounting) compare(allowance int64, c *keyCounts, k int, exact bool) (over, under int64) {
	got := c.allowedHits[k].Load()
	if got > allowance {
		over = got - allowance
	}
	if exact && got < allowance {
		under = min(c.denied[k].Load(), (allowance-got)/a.hits)
	}
	return over, under
}

// bound is the most hits a key of the given limit may be allowed over a run
// of length elapsed when the exact allowance is not known.
func (a *accounting) bound(limit int64, elapsed time.Duration) int64 {
	p := a.policy
	w := int64(p.Window)
	if p.Algorithm == bucket.SlidingWindow {
		// Any (now-window, now] holds at most limit, so consecutive windows
		// covering the run hold at most limit each.
		return limit * ((int64(elapsed) + w - 1) / w)
	}
	capacity := p.Capacity()
	if limit != p.Limit { // an override replaces the rate
		switch p.Algorithm {
		case bucket.GCRA:
			capacity = p.Burst + 1
		case bucket.TokenBucket:
			capacity = limit + p.Burst
		}
	}
	return capacity + limit*int64(elapsed)/w + 1
}
