package cluster

import "github.com/hashicorp/raft"

// ApplyEntry hands data to n's state machine as a committed log entry, as
// a leader that skipped the checks of applyLocal would: the state machine
// must refuse it on its own.
func (n *Node) ApplyEntry(data []byte) error {
	last := n.raft.r.AppliedIndex()
	if err, ok := (fsm{n}).Apply(&raft.Log{Index: last, Data: data}).(error); ok {
		return err
	}
	return nil
}
