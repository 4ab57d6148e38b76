package ring

import (
	"math"
	"testing"
)

func TestSharesSumToOne(t *testing.T) {
	r := New([]string{"a", "b", "c"}, Config{})
	s := r.Shares()
	if len(s) != 3 {
		t.Fatalf("shares of %d members, want 3: %v", len(s), s)
	}
	sum := 0.0
	for m, f := range s {
		if f < 0.2 || f > 0.45 {
			t.Errorf("%s owns %.2f of the keys; want near a third", m, f)
		}
		sum += f
	}
	if math.Abs(sum-1) > 1e-9 {
		t.Errorf("shares sum to %v, want 1", sum)
	}
	if New(nil, Config{}).Shares() != nil {
		t.Error("an empty ring has shares")
	}
}
