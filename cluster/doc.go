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
package cluster
