package redisstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vibewell/ratelimit/bucket"
	"github.com/vibewell/ratelimit/internal/logcap"
)

//go:embed take.lua
var takeSource string

// Store is a bucket.Store and bucket.BatchStore that keeps counters in
// Redis. Each check is one EVALSHA of the take script: one round trip,
// atomic per key. It is safe for concurrent use.
type Store struct {
	client   redis.UniversalClient
	ap       *redis.AutoPipeliner // batches the checks of concurrent callers, or nil
	inflight atomic.Int64         // checks in flight
	opts     Options
	url      string // the redacted URL, or the addresses, for messages
	sha      string
	grace    int64 // ms added to every expiry
	breaker  *breaker
	metrics  *metrics
	logger   *slog.Logger
	failures *logcap.Logger // check failures, one line per LogInterval

	calls     sync.Pool // *call
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var (
	_ bucket.Store      = (*Store)(nil)
	_ bucket.BatchStore = (*Store)(nil)
)

// New connects to Redis as opts say, checks the connection and the
// credentials with a PING, and loads the check script. It fails with an
// error wrapping ErrConfig (a malformed URL or option), ErrAuth (credentials
// refused) or ErrUnavailable (no answer within opts.Timeout); the last two
// also wrap bucket.ErrBackend. ctx bounds the start-up along with
// opts.Timeout.
func New(ctx context.Context, opts Options) (*Store, error) {
	o := opts.withDefaults()
	uo, err := o.universal()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(o.Metrics)
	if err != nil {
		return nil, err
	}
	s := &Store{
		client:  redis.NewUniversalClient(uo),
		opts:    o,
		url:     redactURL(o.URL),
		metrics: m,
		logger:  o.Logger,
	}
	s.failures = logcap.New(o.Logger, logcap.Config{Level: slog.LevelWarn, Lines: 1, Per: o.LogInterval})
	if len(o.Addrs) > 0 {
		s.url = strings.Join(o.Addrs, ",")
	}
	if o.UseCallerTime {
		s.grace = callerTimeGrace.Milliseconds()
	}
	s.breaker = newBreaker(o.BreakerFailures, o.BreakerCooldown, time.Now, s.breakerChanged)
	s.calls.New = func() any { return s.newCall() }

	sctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	err = s.client.Ping(sctx).Err()
	if err == nil {
		s.sha, err = s.client.ScriptLoad(sctx, takeSource).Result()
	}
	if err != nil {
		_ = s.client.Close()
		m.unregister()
		return nil, s.startError(err)
	}
	if !o.DisableAutoPipeline {
		s.ap, err = s.client.AsyncAutoPipelineWithOptions(&redis.AutoPipelineOptions{MaxBatchSize: 256})
		if err != nil {
			_ = s.client.Close()
			m.unregister()
			return nil, fmt.Errorf("%w: autopipeline: %v", ErrConfig, err)
		}
	}
	return s, nil
}

// startError describes a failed start-up.
func (s *Store) startError(err error) error {
	_, kind := classify(err)
	switch kind {
	case ErrAuth:
		return &backendError{kind: ErrAuth, err: err,
			msg: fmt.Sprintf("redisstore: redis at %s refused the credentials (check REDIS_PASSWORD or the URL's password): %v", s.url, err)}
	case ErrConfig:
		return &backendError{kind: ErrConfig, err: err,
			msg: fmt.Sprintf("redisstore: TLS to redis at %s: the server's certificate is not trusted (check the CA and the host name): %v", s.url, err)}
	case ErrUnavailable:
		return &backendError{kind: ErrUnavailable, err: err,
			msg: fmt.Sprintf("redisstore: cannot reach redis at %s within %v: %v", s.url, s.opts.Timeout, err)}
	}
	return &backendError{kind: kind, err: err,
		msg: fmt.Sprintf("redisstore: redis at %s: %v", s.url, err)}
}

// call holds the arguments of one EVALSHA, pointed to from args so that
// filling them allocates nothing. Calls are pooled.
type call struct {
	key                       string
	alg, a, b, hits, now, gms int64
	buf                       []byte
	args                      [10]any
}

func (s *Store) newCall() *call {
	c := &call{buf: make([]byte, 0, 128), gms: s.grace}
	c.args = [10]any{"evalsha", s.sha, "1", &c.key, &c.alg, &c.a, &c.b, &c.hits, "", &c.gms}
	if s.opts.UseCallerTime {
		c.args[8] = &c.now
	}
	return c
}

// KeyFor returns the Redis key of the counter of k: the prefix, then the
// hash tag {…} around k's unambiguous binary encoding (bucket.Key's
// AppendBinary: the policy's length as a uvarint, the policy, the ID).
func (s *Store) KeyFor(k bucket.Key) string {
	return string(s.appendKey(nil, k))
}

func (s *Store) appendKey(b []byte, k bucket.Key) []byte {
	b = append(b, s.opts.Prefix...)
	b = append(b, '{')
	b, _ = k.AppendBinary(b)
	return append(b, '}')
}

// prepare fills c for one check. It returns the decision's Limit, or false
// when the policy cannot be computed (a policy that does not Validate).
func (s *Store) prepare(c *call, k bucket.Key, p *bucket.Policy, hits int64, now time.Time) (int64, bool) {
	capacity, alg, a, b, ok := scriptParams(p)
	if !ok {
		return 0, false
	}
	c.buf = s.appendKey(c.buf[:0], k)
	c.key = string(c.buf)
	switch {
	case hits < 0:
		hits = 0
	case hits > capacity:
		hits = -1
	}
	c.alg, c.a, c.b, c.hits, c.now = alg, a, b, hits, now.UnixMicro()
	return capacity, true
}

// Take implements bucket.Store: it applies hits to the counter of k under p
// (whose override for k.ID, if any, applies) in one round trip. It waits at
// most Options.Timeout; while the breaker is open it fails at once. Its
// errors wrap bucket.ErrBackend, except for a policy that does not
// validate (bucket.ErrInvalidPolicy).
func (s *Store) Take(ctx context.Context, k bucket.Key, p bucket.Policy, hits int64, now time.Time) (bucket.Decision, error) {
	if s.closed.Load() {
		return bucket.Decision{}, errClosed
	}
	p.Limit = p.LimitFor(k.ID)
	c := s.calls.Get().(*call)
	inFlight := false
	defer func() {
		if !inFlight {
			s.calls.Put(c)
		}
	}()
	limit, ok := s.prepare(c, k, &p, hits, now)
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
	cmd := redis.NewIntSliceCmd(tctx, c.args[:]...)
	inFlight, err := s.process(tctx, cmd)
	if err != nil && isNoScript(err) {
		// The script cache was flushed, or a failover reached a server
		// that never loaded it: EVAL sends the source, and caches it.
		s.metrics.scriptLoads.Inc()
		args := c.args
		args[0], args[1] = "eval", takeSource
		cmd = redis.NewIntSliceCmd(tctx, args[:]...)
		inFlight, err = s.process(tctx, cmd)
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

// process runs one check: directly when it is the only one in flight (one
// round trip, no hand-off), else through the autopipeliner, which sends the
// checks of concurrent callers in one pipeline. It waits no longer than ctx;
// it reports whether the command may still be in flight (its arguments then
// must not be reused).
func (s *Store) process(ctx context.Context, cmd redis.Cmder) (inFlight bool, err error) {
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	if n > 1 && s.ap != nil {
		err := s.ap.Submit(ctx, cmd).WaitContext(ctx)
		if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return true, err
		}
		return false, err
	}
	return false, s.client.Process(ctx, cmd)
}

// TakeBatch implements bucket.BatchStore: it sends every check of the batch
// in one pipeline (one round trip per Redis node), all at time now, and
// decides checks[i] into out[i]. Checks of the same key apply in order. An
// error applies to the whole batch: some of its checks may have counted.
func (s *Store) TakeBatch(ctx context.Context, checks []bucket.Check, now time.Time, out []bucket.Decision) error {
	if s.closed.Load() {
		return errClosed
	}
	if len(out) < len(checks) {
		return fmt.Errorf("redisstore: batch of %d checks with room for %d decisions", len(checks), len(out))
	}
	if len(checks) == 0 {
		return nil
	}
	calls := make([]*call, len(checks))
	limits := make([]int64, len(checks))
	defer func() {
		for _, c := range calls {
			if c != nil {
				s.calls.Put(c)
			}
		}
	}()
	for i := range checks {
		ch := &checks[i]
		p := ch.Policy
		p.Limit = p.LimitFor(ch.Key.ID)
		calls[i] = s.calls.Get().(*call)
		l, ok := s.prepare(calls[i], ch.Key, &p, ch.Hits, now)
		if !ok {
			return invalidPolicy(&p)
		}
		limits[i] = l
	}
	allowed, probe := s.breaker.allow()
	if !allowed {
		s.refused()
		return errBreakerOpen
	}
	tctx, cancel := s.withTimeout(ctx)
	defer cancel()
	cmds := make([]*redis.IntSliceCmd, len(checks))
	pipe := s.client.Pipeline()
	for i, c := range calls {
		cmds[i] = redis.NewIntSliceCmd(tctx, c.args[:]...)
		_ = pipe.Process(tctx, cmds[i])
	}
	_, err := pipe.Exec(tctx)
	if err != nil {
		err = s.retryNoScript(tctx, cmds, calls)
	}
	if err != nil {
		return s.failed(ctx, err, probe)
	}
	for i, cmd := range cmds {
		d, err := decode(cmd.Val(), limits[i])
		if err != nil {
			return s.failed(ctx, err, probe)
		}
		out[i] = d
	}
	s.breaker.success(probe)
	return nil
}

// retryNoScript re-sends, after loading the script, the checks of a
// pipeline that Redis refused with NOSCRIPT (they did not run), and returns
// the first other error. A check refused so may then run after a later
// check of the same key in the batch: only on the rare flush of the script
// cache between two checks of one pipeline.
func (s *Store) retryNoScript(ctx context.Context, cmds []*redis.IntSliceCmd, calls []*call) error {
	var again []int
	for i, cmd := range cmds {
		switch err := cmd.Err(); {
		case err == nil:
		case isNoScript(err):
			again = append(again, i)
		default:
			return err
		}
	}
	if len(again) == 0 {
		return nil
	}
	s.metrics.scriptLoads.Inc()
	if err := s.client.ScriptLoad(ctx, takeSource).Err(); err != nil {
		return err
	}
	pipe := s.client.Pipeline()
	for _, i := range again {
		cmds[i] = redis.NewIntSliceCmd(ctx, calls[i].args[:]...)
		_ = pipe.Process(ctx, cmds[i])
	}
	_, err := pipe.Exec(ctx)
	return err
}

// withTimeout bounds ctx by Options.Timeout, unless its own deadline is
// sooner.
func (s *Store) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= s.opts.Timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opts.Timeout)
}

func decode(v []int64, limit int64) (bucket.Decision, error) {
	if len(v) != 4 {
		return bucket.Decision{}, fmt.Errorf("%w: %d values from the take script, want 4", errBadReply, len(v))
	}
	return bucket.Decision{
		Allowed:    v[0] == 1,
		Limit:      limit,
		Remaining:  v[1],
		ResetAfter: time.Duration(v[2]) * time.Microsecond,
		RetryAfter: time.Duration(v[3]) * time.Microsecond,
	}, nil
}

// Sweep implements bucket.Store. Redis expires idle counters itself, so it
// does nothing and returns 0.
func (s *Store) Sweep(time.Time) int { return 0 }

// Ping checks that Redis answers within Options.Timeout, for readiness
// probes. It does not go through the breaker.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return errClosed
	}
	tctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := s.client.Ping(tctx).Err(); err != nil {
		_, kind := classify(err)
		return &backendError{kind: kind, err: err, msg: "redisstore: ping: " + err.Error()}
	}
	return nil
}

// Close closes the connections and unregisters the metrics. Checks after
// Close fail with ErrClosed. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if s.ap != nil {
			_ = s.ap.Close()
		}
		s.closeErr = s.client.Close()
		s.metrics.unregister()
	})
	return s.closeErr
}

// backendError is a failure of the backend: it wraps bucket.ErrBackend, the
// kind (ErrUnavailable, ErrAuth, ErrConfig for an untrusted certificate,
// ErrClosed, or nil) and the cause.
type backendError struct {
	kind error
	err  error
	msg  string
}

func (e *backendError) Error() string { return e.msg }

func (e *backendError) Unwrap() []error {
	errs := make([]error, 0, 3)
	errs = append(errs, bucket.ErrBackend)
	if e.kind != nil {
		errs = append(errs, e.kind)
	}
	if e.err != nil {
		errs = append(errs, e.err)
	}
	return errs
}

var (
	errBreakerOpen = &backendError{kind: ErrUnavailable,
		msg: "redisstore: redis unavailable: circuit breaker open after repeated failures; checks fail at once until redis answers again"}
	errClosed = &backendError{kind: ErrClosed, msg: ErrClosed.Error()}
	// errBadReply is a reply of the wrong shape: Redis is up, the key holds
	// something else.
	errBadReply = errors.New("unexpected reply")
)

func invalidPolicy(p *bucket.Policy) error {
	return fmt.Errorf("redisstore: policy %q (limit %d, window %v): %w", p.Name, p.Limit, p.Window, bucket.ErrInvalidPolicy)
}

// failed turns the error of a check into a backendError, counts and logs
// it, and tells the breaker. ctx is the caller's: a check that the caller
// canceled says nothing about Redis.
func (s *Store) failed(ctx context.Context, err error, probe bool) error {
	reason, kind := classify(err)
	if reason == reasonTimeout && ctx.Err() == nil {
		err = fmt.Errorf("no answer within %v: %w", s.opts.Timeout, err)
	}
	be := &backendError{kind: kind, err: err, msg: "redisstore: check: " + err.Error()}
	if errors.Is(ctx.Err(), context.Canceled) || errors.Is(err, redis.ErrClosed) {
		s.breaker.abandon(probe)
		return be
	}
	s.metrics.byReason[reason].Inc()
	if reason == reasonReply && kind == nil {
		// Redis is up and answered: an error of this check alone.
		s.breaker.success(probe)
	} else {
		s.breaker.failure(probe)
	}
	s.logFailure(reason, err)
	return be
}

// refused counts a check refused by the open breaker.
func (s *Store) refused() {
	s.metrics.byReason[reasonBreakerOpen].Inc()
	s.logFailure(reasonBreakerOpen, nil)
}

// logFailure logs a failure, at most once per Options.LogInterval, with the
// number of failures not logged since the last one.
func (s *Store) logFailure(reason string, err error) {
	attrs := []any{"reason", reason, "url", s.url}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	s.failures.Log("redisstore: check failed", attrs...)
}

func (s *Store) breakerChanged(open bool) {
	if open {
		s.metrics.breakerOpen.Set(1)
		s.logger.Warn("redisstore: circuit breaker open: checks fail at once until redis answers again",
			"url", s.url, "failures", s.opts.BreakerFailures, "cooldown", s.opts.BreakerCooldown)
		return
	}
	s.metrics.breakerOpen.Set(0)
	s.logger.Info("redisstore: circuit breaker closed: redis answers again", "url", s.url)
}

// classify sorts an error of go-redis into the reason it is counted under
// and the kind it wraps. kind is nil for an error reply about this check
// alone, which says Redis is up.
func classify(err error) (reason string, kind error) {
	var (
		rerr redis.Error
		cve  *tls.CertificateVerificationError
		uae  x509.UnknownAuthorityError
		he   x509.HostnameError
		cie  x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &cve), errors.As(err, &uae), errors.As(err, &he), errors.As(err, &cie):
		return reasonUnavailable, ErrConfig
	case errors.Is(err, errBadReply):
		return reasonReply, nil
	case errors.Is(err, redis.ErrClosed):
		return reasonUnavailable, ErrClosed
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, redis.ErrPoolTimeout), isNetTimeout(err):
		return reasonTimeout, ErrUnavailable
	case redis.IsAuthError(err), strings.Contains(err.Error(), "without any password configured"):
		return reasonReply, ErrAuth
	case errors.As(err, &rerr):
		if redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsClusterDownError(err) ||
			redis.IsTryAgainError(err) || redis.IsMasterDownError(err) || redis.IsMaxClientsError(err) ||
			redis.HasErrorPrefix(err, "BUSY") || redis.IsOOMError(err) {
			return reasonReply, ErrUnavailable
		}
		return reasonReply, nil
	}
	return reasonUnavailable, ErrUnavailable
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isNoScript(err error) bool { return redis.HasErrorPrefix(err, "NOSCRIPT") }
