package ring

import "slices"

// Owners returns the partition table: the owner of each partition, in
// partition order. A key's partition is xxhash64(key) mod len(Owners()),
// so a client that holds the table finds every key's owner with the same
// hash, without this package (owner-aware clients).
func (r *Ring) Owners() []string { return slices.Clone(r.owners) }
