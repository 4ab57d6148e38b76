package cluster

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/vibewell/ratelimit/bucket"
)

// Leases against the exact single-node decision, both ways. An owner (a
// memory store with the owner's lease code) and holders (lease tables)
// take random checks at random times; some holders crash (their leases
// are never given back), some give back idle leases. Exact is a single
// node's counter that only the admitted hits went into, at the times they
// were admitted:
//   - never more than the limit: every admitted hit passes in Exact too;
//   - under-admission as stated: a denied check is denied by Exact too once
//     the lease hits granted and not admitted (nor given back) whose slot
//     is still counted are added; and of those, each holder leaves at most
//     one and a half grants (and a check's hits) unused per slot: it asks
//     for more when half its last grant is left.
func TestPropertyLeaseExact(t *testing.T) {
	leased, denied := 0, 0
	for seed := range uint64(200) {
		for _, alg := range []bucket.Algorithm{bucket.SlidingWindow, bucket.FixedWindow} {
			l, d := leaseRun(t, seed, alg)
			leased, denied = leased+l, denied+d
			if t.Failed() {
				return
			}
		}
	}
	// The histories must exercise both: checks under leases, and denials.
	if leased < 50_000 || denied < 50_000 {
		t.Fatalf("%d checks decided under a lease, %d denied; the histories exercise too little", leased, denied)
	}
}

// leaseRun runs one random history and returns how many checks were
// decided under a lease and how many were denied.
func leaseRun(t *testing.T, seed uint64, alg bucket.Algorithm) (leasedChecks, deniedChecks int) {
	r := rand.New(rand.NewPCG(seed, uint64(alg)))
	ctx := context.Background()
	p := &policyEntry{Policy: bucket.Policy{Name: "hot", Algorithm: alg, Limit: 100 + r.Int64N(3000), Window: time.Duration(1+r.IntN(16)) * 500 * time.Millisecond}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	const key = "tenant:7"
	k := bucket.Key{Policy: p.Name, ID: key}
	owner := bucket.NewMemoryStore(bucket.MemoryConfig{})
	holders := make([]*leases, 1+r.IntN(4))
	dead := make([]bool, len(holders))
	for i := range holders {
		holders[i] = newLeases(1)
	}
	members := len(holders) + 1
	w := p.Window.Microseconds()
	width := w
	if alg == bucket.SlidingWindow {
		width /= bucket.Slots
	}
	// unused[h][end]: hits granted to holder h in leases ending at end,
	// neither admitted nor given back (refunded by the owner); kept[h][end]:
	// of those, the ones h did not send back (a return that arrives after
	// the slot ended is refused: under-admission, but only within a
	// return's delay of the slot's end); maxGrant[h][end] its largest
	// grant there.
	unused := make([]map[int64]int64, len(holders))
	kept := make([]map[int64]int64, len(holders))
	maxGrant := make([]map[int64]int64, len(holders))
	for i := range unused {
		unused[i], kept[i], maxGrant[i] = map[int64]int64{}, map[int64]int64{}, map[int64]int64{}
	}
	const maxCheck = 5
	counted := func(now time.Time) (u int64) {
		t := now.UnixMicro()
		for h := range unused {
			for end, n := range unused[h] {
				if (alg == bucket.SlidingWindow && t < end+w) || (alg == bucket.FixedWindow && t < end) {
					u += n
					if kept[h][end] > maxGrant[h][end]*3/2+maxCheck {
						return -1
					}
				}
			}
		}
		return u
	}

	type sent struct {
		who int
		ret returnable
		at  time.Time
	}
	var inFlight []sent
	var exact bucket.State
	now := time.UnixMicro(1_700_000_000_000_000 + r.Int64N(10_000_000))
	for step := range 3000 {
		switch r.IntN(500) {
		case 0:
			now = now.Add(time.Duration(r.Int64N(int64(p.Window))))
		case 1, 2, 3, 4, 5, 6, 7, 8, 9, 10:
			now = now.Add(time.Duration(r.Int64N(int64(50 * time.Millisecond))))
		default:
			now = now.Add(time.Duration(r.Int64N(int64(time.Millisecond))))
		}
		hits := []int64{0, 1, 1, 1, 1, 2, maxCheck}[r.IntN(7)]
		who := r.IntN(members) - 1 // -1: the owner itself
		if who >= 0 && r.IntN(400) == 0 {
			dead[who] = true // crashed: its leases are never given back
		}
		if who >= 0 && dead[who] {
			continue
		}
		if who >= 0 && r.IntN(50) == 0 {
			// Give back idle leases (or all); the returns arrive later,
			// some after the lease's slot has ended.
			for _, ret := range holders[who].collect(now, r.IntN(4) == 0) {
				inFlight = append(inFlight, sent{who, ret, now.Add(time.Duration(r.Int64N(int64(p.Window / 4))))})
				kept[who][ret.until] -= ret.hits
			}
		}
		for i := 0; i < len(inFlight); i++ {
			if f := inFlight[i]; !now.Before(f.at) {
				if returnLease(ctx, owner, p, k, f.ret.hits, f.ret.until, now) {
					unused[f.who][f.ret.until] -= f.ret.hits
				}
				inFlight = append(inFlight[:i], inFlight[i+1:]...)
				i--
			}
		}
		var d Decision
		var err error
		switch {
		case who < 0:
			d, err = owner.Take(ctx, k, p.Policy, hits, now)
		default:
			var v leaseVerdict
			var want int64
			d, v, want = holders[who].use(p, key, hits, now)
			switch v {
			case leaseDecided, leaseDecidedAsk:
				leasedChecks++
				unused[who][leaseEnd(p.Policy, now)] -= hits
				kept[who][leaseEnd(p.Policy, now)] -= hits
				if v == leaseDecidedAsk {
					// The renewal, asked with a peek.
					res, _, err := grantLease(ctx, owner, p, k, 0, want, members, now)
					if err != nil {
						t.Fatal(err)
					}
					holders[who].asked(p, key, res, now, now)
					if res.Grant > 0 {
						unused[who][res.Until] += res.Grant
						kept[who][res.Until] += res.Grant
						maxGrant[who][res.Until] = max(maxGrant[who][res.Until], res.Grant)
					}
				}
			case leaseAsk:
				var res leaseRes
				res, _, err = grantLease(ctx, owner, p, k, hits, want, members, now)
				holders[who].asked(p, key, res, now, now)
				if res.Grant > 0 {
					unused[who][res.Until] += res.Grant
					kept[who][res.Until] += res.Grant
					maxGrant[who][res.Until] = max(maxGrant[who][res.Until], res.Grant)
				}
				d = res.decision()
			default:
				d, err = owner.Take(ctx, k, p.Policy, hits, now)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		u := counted(now)
		if u < 0 {
			t.Fatalf("seed %d %v step %d: a holder left more than one grant unused in a slot", seed, alg, step)
		}
		if d.Allowed {
			if e := bucket.Take(p.Policy, &exact, hits, now); !e.Allowed {
				t.Fatalf("seed %d %v (limit %d, window %v) step %d: node %d admitted %d hits that a single node denies: over-admission", seed, alg, p.Limit, p.Window, step, who, hits)
			}
			continue
		}
		deniedChecks++
		c := exact
		if e := bucket.Take(p.Policy, &c, max(hits, 1)+u, now); e.Allowed {
			t.Fatalf("seed %d %v (limit %d) step %d: node %d denied %d hits that a single node admits even with the %d unused lease hits counted", seed, alg, p.Limit, step, who, hits, u)
		}
	}
	return leasedChecks, deniedChecks
}

// A hot key is leased: after leaseHotChecks checks, the holder asks, and
// then decides checks itself until its slice is used.
func TestLeaseHotKeyIsLeased(t *testing.T) {
	ctx := context.Background()
	p := &policyEntry{Policy: bucket.Policy{Name: "hot", Limit: 1_000_000, Window: time.Minute}}
	k := bucket.Key{Policy: p.Name, ID: "global"}
	owner := bucket.NewMemoryStore(bucket.MemoryConfig{})
	l := newLeases(1000)
	now := time.UnixMicro(1_700_000_000_000_000)
	asks, local := 0, 0
	for i := range 10_000 {
		now = now.Add(100 * time.Microsecond)
		d, v, want := l.use(p, k.ID, 1, now)
		switch v {
		case leaseDecided:
			local++
		case leaseDecidedAsk:
			local++
			res, _, err := grantLease(ctx, owner, p, k, 0, want, 3, now)
			if err != nil {
				t.Fatal(err)
			}
			l.asked(p, k.ID, res, now, now)
		case leaseAsk:
			asks++
			res, _, err := grantLease(ctx, owner, p, k, 1, want, 3, now)
			if err != nil || !res.Allowed || res.Grant <= 0 {
				t.Fatalf("check %d: ask answered %+v, %v; want a grant", i, res, err)
			}
			l.asked(p, k.ID, res, now, now)
			d = res.decision()
		default:
			if i >= leaseHotChecks {
				t.Fatalf("check %d: not leased", i)
			}
			d, _ = owner.Take(ctx, k, p.Policy, 1, now)
		}
		if !d.Allowed {
			t.Fatalf("check %d denied", i)
		}
	}
	if local < 9_000 || asks > 200 {
		t.Fatalf("%d of 10000 checks decided under a lease, %d asks; want most checks local", local, asks)
	}
	// A new table that counts the key alike keeps the lease; a change of
	// the key's limit ends it at once.
	same := &policyEntry{Policy: p.Policy}
	same.Shadow = true
	if _, v, _ := l.use(same, k.ID, 1, now); v != leaseDecided && v != leaseDecidedAsk {
		t.Fatal("a new table with the same limit and window ended the lease")
	}
	q := &policyEntry{Policy: p.Policy}
	q.Limit++
	if _, v, _ := l.use(q, k.ID, 1, now); v == leaseDecided || v == leaseDecidedAsk {
		t.Fatal("a lease granted under the old limit decided a check")
	}
	// Not eligible: a rate, or a limit below the table's minimum.
	for _, q := range []bucket.Policy{{Name: "g", Algorithm: bucket.GCRA, Limit: 1_000_000, Window: time.Minute}, {Name: "s", Limit: 999, Window: time.Minute}} {
		if l.eligible(&policyEntry{Policy: q}, "x") {
			t.Fatalf("%+v eligible for leases", q)
		}
	}
}

// A lease ends with the owner's slot: a sliding window's window/8,
// aligned on the epoch, or a fixed window.
func TestLeaseEnd(t *testing.T) {
	now := time.UnixMicro(8_000_000*10 + 1_500_000)
	if got := leaseEnd(bucket.Policy{Window: 8 * time.Second}, now); got != 8_000_000*10+2_000_000 {
		t.Fatalf("sliding: %d", got)
	}
	if got := leaseEnd(bucket.Policy{Algorithm: bucket.FixedWindow, Window: 8 * time.Second}, now); got != 8_000_000*11 {
		t.Fatalf("fixed: %d", got)
	}
}

// BenchmarkLeaseUseCold is what the lease table adds to a forwarded
// check of a key that is not leased: for a policy that cannot be leased
// (a limit below the minimum), and for one that can, on keys too cold to
// be leased (each checked once in turn, so only the hot-check count is
// kept).
func BenchmarkLeaseUseCold(b *testing.B) {
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
	}
	for _, tc := range []struct {
		name  string
		limit int64
	}{{"ineligible", 100}, {"eligible", 1_000_000}} {
		b.Run(tc.name, func(b *testing.B) {
			l := newLeases(DefaultLeaseMinLimit)
			p := &policyEntry{Policy: bucket.Policy{Name: "api", Limit: tc.limit, Window: time.Minute}}
			now := time.UnixMicro(1_700_000_000_000_000)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, v, _ := l.use(p, keys[i&(len(keys)-1)], 1, now); v != leaseNone {
					b.Fatal("a cold key was leased")
				}
			}
		})
	}
}
