package cluster

import (
	"errors"
	"fmt"

	"github.com/vibewell/ratelimit/bucket"
)

// The errors of the package, all in one place; test them with errors.Is.
// Those that wrap a bucket error match it too.
var (
	// ErrClosed: the node was closed.
	ErrClosed = errors.New("cluster: node closed")

	// Checks and refunds.

	// ErrUnknownPolicy: the call names a policy the table does not hold.
	// It wraps bucket.ErrUnknownPolicy.
	ErrUnknownPolicy = fmt.Errorf("cluster: %w", bucket.ErrUnknownPolicy)
	// ErrInvalidKey: the key is empty or longer than Config.MaxKeyLen. It
	// wraps bucket.ErrInvalidKey.
	ErrInvalidKey = fmt.Errorf("cluster: %w", bucket.ErrInvalidKey)
	// ErrInvalidHits: hits is negative or above Config.MaxHits. It wraps
	// bucket.ErrInvalidHits.
	ErrInvalidHits = fmt.Errorf("cluster: %w", bucket.ErrInvalidHits)
	// ErrOwnerUnavailable: the owner of a key could not answer. Refund and
	// RefundBatch return it (wrapped, with the owner and why): a refund
	// that cannot reach the owner is not made. Allow and AllowBatch never
	// do: the key's successor, or else the policy's failure mode, decides
	// instead, and ErrOwnerUnavailable is the cause they log and count.
	// A KeyLocation's CounterError starts with it when the owner answered
	// Locate's read with an error.
	ErrOwnerUnavailable = errors.New("cluster: owner unavailable")
	// ErrNoRefund: the node's store cannot give hits back (it is not a
	// bucket.Refunder; the memory and Redis stores are).
	ErrNoRefund = errors.New("cluster: the store cannot give hits back")
	// ErrInvalidWindow: the window of TopDenied is not between a minute
	// and MaxDeniedWindow.
	ErrInvalidWindow = errors.New("cluster: invalid window")

	// Policy changes.

	// ErrNoLeader: a policy change could not be committed before its
	// deadline, because the cluster had no reachable raft leader. The
	// change may still be applied later if it reached a leader that then
	// committed it; repeating it is safe, since every change sets a value.
	ErrNoLeader = errors.New("cluster: no raft leader to commit the change")
	// ErrTooManyPolicies: a SetPolicy would take the table past
	// MaxPolicies. It wraps bucket.ErrInvalidPolicy.
	ErrTooManyPolicies = fmt.Errorf("cluster: more than %d policies: %w", MaxPolicies, errInvalidPolicy)
	// ErrCommandTooLarge: a policy change encodes to more than
	// MaxCommandBytes. It wraps bucket.ErrInvalidPolicy.
	ErrCommandTooLarge = fmt.Errorf("cluster: policy command larger than %d bytes: %w", MaxCommandBytes, errInvalidPolicy)
	// ErrInvalidPolicyChange: the leader refused a change as invalid (its
	// policy table differed from the sender's). It wraps
	// bucket.ErrInvalidPolicy.
	ErrInvalidPolicyChange = fmt.Errorf("cluster: leader refused the change: %w", errInvalidPolicy)
	// ErrPolicyInUse: DeletePolicy named a built-in policy that another
	// component depends on (the error says which); ForceDeletePolicy
	// deletes it anyway. It wraps bucket.ErrPolicyInUse.
	ErrPolicyInUse = fmt.Errorf("cluster: %w", bucket.ErrPolicyInUse)
	// ErrUnknownOverride: DeleteOverride names a key the policy has no
	// override for. It wraps bucket.ErrUnknownOverride.
	ErrUnknownOverride = fmt.Errorf("cluster: %w", bucket.ErrUnknownOverride)

	// ErrRingConfig: a peer spreads keys with another ring config
	// (Config.Ring), so the two would pick different owners for a key;
	// they refuse each other. Start returns it when the seeds that answer
	// all refuse so; the refusals are counted in
	// ratelimit_cluster_refused_total{port="gossip",reason="ring_config"}.
	ErrRingConfig = errors.New("cluster: another ring config (Config.Ring): every node of a cluster must use the same")

	// The cluster key (Config, ParseClusterKey).

	// ErrNoClusterKey: the node joins a cluster (Seeds, no Bootstrap) but
	// has no ClusterKey, and neither own credentials (PeerTLS and
	// SecretKey) nor Insecure. Without a key it could neither prove itself to its peers
	// nor tell them from strangers.
	ErrNoClusterKey = errors.New("cluster: no cluster key: a node that joins a cluster needs the cluster's key (ClusterKey; ratelimitd --cluster-key or RATELIMIT_CLUSTER_KEY)")
	// ErrBadClusterKey: a cluster key that is not ClusterKeySize bytes, or
	// whose printable form does not decode.
	ErrBadClusterKey = errors.New("cluster: bad cluster key")
	// ErrInsecureAddr: Insecure is set and an address is not loopback.
	ErrInsecureAddr = errors.New("cluster: insecure cluster on a non-loopback address")
)

// errInvalidPolicy is bucket's, which the policy errors wrap.
var errInvalidPolicy = bucket.ErrInvalidPolicy
