package cluster

// ReplicaCalls returns the replica calls n has made to successors.
func (n *Node) ReplicaCalls() uint64 {
	if n.repl == nil {
		return 0
	}
	return n.repl.calls.Load()
}
