package main

import (
	"context"
	"fmt"

	"github.com/vibewell/ratelimit/cluster"
)

// runKeygen prints a new cluster key: give the same to every node
// (--cluster-key or RATELIMIT_CLUSTER_KEY), e.g. from a Kubernetes Secret.
func runKeygen(_ context.Context, s sys, args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			fmt.Fprintln(s.stdout, "Usage: ratelimitd keygen")
			fmt.Fprintln(s.stdout)
			fmt.Fprintln(s.stdout, "Prints a new cluster key (32 random bytes, base64url) for --cluster-key")
			fmt.Fprintln(s.stdout, "or RATELIMIT_CLUSTER_KEY; every node of a cluster needs the same key.")
			return exitOK
		}
		fmt.Fprintf(s.stderr, "ratelimitd keygen: takes no arguments, got %q\n", args[0])
		return exitUsage
	}
	k, err := cluster.NewClusterKey(nil)
	if err != nil {
		fmt.Fprintf(s.stderr, "ratelimitd keygen: %v\n", err)
		return exitFailed
	}
	fmt.Fprintln(s.stdout, cluster.EncodeClusterKey(k))
	return exitOK
}
