// Package cluster is the embedded rate limiter: a Node that decides checks
// against policies, keeps counters in memory, and (as peers join) shares the
// work with the other nodes of a cluster.
//
// # Usage
//
//	node, err := cluster.Start(ctx, cluster.Config{}) // a single node with the default policies
//	if err != nil { ... }
//	defer node.Close(ctx)
//
//	d, err := node.Allow(ctx, "auth", "ip:"+ip, 1)
//	switch {
//	case err != nil: // infrastructure: ErrUnknownPolicy, ErrClosed, ...
//	case !d.Allowed: // over the limit: answer 429, retry after d.RetryAfter
//	}
//
// Over the limit is a Decision with Allowed == false and a nil error. Errors
// are the sentinel values below, tested with errors.Is.
//
// # A cluster
//
// With a GossipAddr and Seeds, nodes find each other (memberlist), agree on
// the owner of each (policy, key) by consistent hashing, and forward each
// check to its owner, batched; the policy table is replicated by raft. When
// owners change, counters move with their keys (a graceful Leave hands them
// over), and each node copies the counters that checks changed, one round
// trip behind, to the node that would take over their keys (its
// successor), so that a crash forgives little. A slow owner is waited
// for; an owner that cannot answer is replaced by the key's successor,
// and the policy's FailureMode decides only when neither can answer.
package cluster
