package bench

import (
	"fmt"
	"math/rand/v2"
	"strconv"
)

// Dist is how a run picks the key of each check.
type Dist uint8

// Key distributions.
const (
	// Uniform picks each of the Keys keys with equal probability.
	Uniform Dist = iota
	// Zipf picks key i with probability proportional to 1/(1+i)^ZipfS: a few
	// hot keys take most checks.
	Zipf
	// Hot sends every check to one key.
	Hot
)

var distNames = [...]string{"uniform", "zipf", "hot"}

// String returns the distribution's name.
func (d Dist) String() string {
	if int(d) < len(distNames) {
		return distNames[d]
	}
	return "dist(" + strconv.Itoa(int(d)) + ")"
}

// MarshalText encodes d as its name.
func (d Dist) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a distribution name.
func (d *Dist) UnmarshalText(b []byte) error {
	for i, n := range distNames {
		if string(b) == n {
			*d = Dist(i)
			return nil
		}
	}
	return fmt.Errorf("%w: unknown distribution %q (uniform, zipf or hot)", ErrConfig, b)
}

// DefaultZipfS is the Zipf exponent used when Config.ZipfS is not above 1.
const DefaultZipfS = 1.1

// keyGen picks key indexes in [0, keys). It is not safe for concurrent use:
// each caller owns one.
type keyGen struct {
	dist Dist
	n    uint64
	r    *rand.Rand
	zipf *rand.Zipf
}

func newKeyGen(dist Dist, keys int, s float64, seed uint64, stream uint64) *keyGen {
	g := &keyGen{dist: dist, n: uint64(keys), r: rand.New(rand.NewPCG(seed, stream))}
	if dist == Zipf {
		if s <= 1 {
			s = DefaultZipfS
		}
		g.zipf = rand.NewZipf(g.r, s, 1, g.n-1)
	}
	return g
}

// next returns the index of the next key.
func (g *keyGen) next() int {
	switch g.dist {
	case Hot:
		return 0
	case Zipf:
		return int(g.zipf.Uint64())
	}
	return int(g.r.Uint64N(g.n))
}

// keyNames builds the names of n keys under prefix: prefix + index.
func keyNames(prefix string, n int) []string {
	keys := make([]string, n)
	buf := make([]byte, 0, len(prefix)+20)
	for i := range keys {
		buf = strconv.AppendInt(append(buf[:0], prefix...), int64(i), 10)
		keys[i] = string(buf)
	}
	return keys
}
