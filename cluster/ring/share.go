package ring

// Shares returns each member's share of the partitions, and so of the
// keys: a fraction from 0 to 1, the shares summing to 1. Nil for an empty
// ring.
func (r *Ring) Shares() map[string]float64 {
	if len(r.owners) == 0 {
		return nil
	}
	counts := make(map[string]int, len(r.members))
	for _, o := range r.owners {
		counts[o]++
	}
	shares := make(map[string]float64, len(counts))
	for m, c := range counts {
		shares[m] = float64(c) / float64(len(r.owners))
	}
	return shares
}
