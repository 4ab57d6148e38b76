package redisstore

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vibewell/ratelimit/bucket"
)

var _ bucket.Refunder = (*Store)(nil)

// Refund implements bucket.Refunder: the take script gives hits back to the
// counter of k under p (its override for k.ID applies) and peeks, in one
// atomic round trip, exactly as bucket.Refund; bucket.RefundAll deletes
// the key. It waits at most Options.Timeout and goes through the breaker,
// as a check does; its errors wrap bucket.ErrBackend.
func (s *Store) Refund(ctx context.Context, k bucket.Key, p bucket.Policy, hits int64, now time.Time) (bucket.Decision, error) {
	if s.closed.Load() {
		return bucket.Decision{}, errClosed
	}
	p.Limit = p.LimitFor(k.ID)
	c := s.newCall()
	limit, ok := s.prepare(c, k, &p, 0, now)
	if !ok {
		return bucket.Decision{}, invalidPolicy(&p)
	}
	allowed, probe := s.breaker.allow()
	if !allowed {
		s.refused()
		return bucket.Decision{}, errBreakerOpen
	}
	tctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if hits == bucket.RefundAll {
		if err := s.client.Del(tctx, c.key).Err(); err != nil {
			return bucket.Decision{}, s.failed(ctx, err, probe)
		}
		s.breaker.success(probe)
		var fresh bucket.State
		return bucket.Refund(p, &fresh, 0, now), nil
	}
	args := append(c.args[:], strconv.FormatInt(max(hits, 0), 10))
	cmd := redis.NewIntSliceCmd(tctx, args...)
	err := s.client.Process(tctx, cmd)
	if err != nil && isNoScript(err) {
		s.metrics.scriptLoads.Inc()
		args[0], args[1] = "eval", takeSource
		cmd = redis.NewIntSliceCmd(tctx, args...)
		err = s.client.Process(tctx, cmd)
	}
	if err != nil {
		return bucket.Decision{}, s.failed(ctx, err, probe)
	}
	d, err := decode(cmd.Val(), limit)
	if err != nil {
		return d, s.failed(ctx, err, probe)
	}
	s.breaker.success(probe)
	return d, nil
}
