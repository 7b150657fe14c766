package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// Apply commits cmd through Raft and returns the FSM's response bytes for
// that entry, on whichever node received the write.
//
// On the leader it calls raft.Apply; elsewhere it forwards the command over
// the internal RPC to the leader. When no leader is known, or the leader
// changes, or the forwarding connection fails, Apply waits and retries for
// up to Config.HoldTimeout (bounded by ctx) before returning ErrNoLeader.
// When a leader was there but did not answer in time (a slow commit, not a
// missing leader) it returns ErrTimeout, which wraps context.DeadlineExceeded.
//
// Contract: commands must be idempotent. A retry after ErrLeadershipLost, a
// lost forwarding connection or a leader change may submit the same bytes a
// second time, because the first attempt's outcome is unknown (it may have
// committed). The application's FSM deduplicates every command by a unique
// key inside it, so the resubmission is how an unknown outcome is resolved
// without writing twice. The response of a deduplicated command must
// describe the original outcome.
//
// An error value returned by the FSM comes back wrapped in ErrFSM (the entry
// is in the log; the FSM refused it). A nil FSM response returns nil bytes.
func (c *Cluster) Apply(ctx context.Context, cmd []byte) (resp []byte, err error) {
	start := time.Now()
	forwarded := false
	defer func() {
		if err == nil {
			if forwarded {
				c.counters.forwarded.Add(1)
			} else {
				c.counters.local.Add(1)
			}
		} else {
			c.counters.failed.Add(1)
		}
		if c.cfg.OnApply != nil {
			c.cfg.OnApply(time.Since(start), forwarded, err)
		}
	}()
	return c.apply(ctx, cmd, &forwarded)
}

func (c *Cluster) apply(ctx context.Context, cmd []byte, forwarded *bool) ([]byte, error) {
	if len(cmd) == 0 {
		return nil, fmt.Errorf("apply: empty command: %w", ErrBadRequest)
	}
	if len(cmd) > MaxCommandSize {
		return nil, fmt.Errorf("apply: %d bytes: %w", len(cmd), ErrTooLarge)
	}
	if err := c.running(); err != nil {
		return nil, err
	}
	// hctx ends at the earlier of the hold and ctx's own deadline, with
	// cause ErrTimeout when the hold ran out first. When ctx ran out first,
	// ctx.Err() is returned, never ErrNoLeader or ErrTimeout: a caller that
	// gave itself 2 s learns that its 2 s ran out, not that the cluster
	// failed.
	hctx, cancel := context.WithTimeoutCause(ctx, c.cfg.HoldTimeout, ErrTimeout)
	defer cancel()
	deadline, _ := hctx.Deadline()
	callerDeadline, ok := ctx.Deadline()
	callerBound := ok && !callerDeadline.After(deadline) // the hold ends with ctx's own deadline
	var lastErr error
	backoff := 5 * time.Millisecond
	for {
		changed := c.leaderChange() // taken before looking at the leader: no change is missed
		select {
		case <-c.closing:
			return nil, ErrClosed
		default:
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("apply: %w", err)
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			<-hctx.Done() // past its deadline: its timer fires at once
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("apply: %w (last: %v)", err, lastErr)
			}
			sentinel := ErrNoLeader
			if errors.Is(lastErr, raft.ErrEnqueueTimeout) {
				// This node led the whole time; raft's queue was full.
				sentinel = ErrTimeout
			}
			if lastErr != nil {
				return nil, fmt.Errorf("apply: hold of %s expired: %w (last: %v)", c.cfg.HoldTimeout, sentinel, lastErr)
			}
			return nil, fmt.Errorf("apply: hold of %s expired: %w", c.cfg.HoldTimeout, sentinel)
		}

		var resp []byte
		var err error
		leaderAddr, leaderID := c.raft.LeaderWithID()
		switch {
		case c.raft.State() == raft.Leader:
			*forwarded = false
			resp, err = c.applyLocal(hctx, cmd, remaining)
		case leaderAddr != "" && string(leaderID) != c.cfg.NodeID:
			*forwarded = true
			resp, err = c.forwardApply(hctx, string(leaderAddr), leaderID, cmd)
		default:
			// No leader known: wait for one to appear.
			c.waitChange(ctx, changed, 100*time.Millisecond, deadline, c.closing)
			continue
		}
		if err == nil {
			return resp, nil
		}
		if callerBound && *forwarded && errors.Is(err, ErrTimeout) {
			// The leader ran out of the caller's own time, which it was
			// given as the time left: it started its clock later, so ours
			// has run out too, but our timer may not have fired yet on a
			// busy machine. Report the caller's deadline, as promised.
			select {
			case <-ctx.Done():
			case <-c.closing:
			}
		}
		if !retryable(err) || ctx.Err() != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("apply: %w (last: %v)", ctx.Err(), err)
			}
			return nil, err
		}
		lastErr = err
		c.counters.retries.Add(1)
		c.log.Debug("apply retry", "err", err, "remaining", time.Until(deadline))
		c.waitChange(ctx, changed, backoff, deadline, c.closing)
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// waitChange waits for a leader change, d, ctx, closing or the deadline.
// It reports whether the leader changed.
func (c *Cluster) waitChange(ctx context.Context, changed <-chan struct{}, d time.Duration, deadline time.Time, closing <-chan struct{}) bool {
	d = min(d, time.Until(deadline))
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-changed:
		return true
	case <-t.C:
	case <-ctx.Done():
	case <-closing:
	}
	return false
}

// retryable reports whether an Apply attempt may be repeated within the hold
// window (possibly resubmitting a command that did commit: see Apply).
func retryable(err error) bool {
	switch {
	case errors.Is(err, ErrTimeout):
		// The hold is spent. (It wraps context.DeadlineExceeded, which
		// passes for a net.Error below.)
		return false
	case errors.Is(err, ErrNotLeader),
		errors.Is(err, errLeadershipLost),
		errors.Is(err, ErrNoLeader),
		errors.Is(err, errConnLost),
		errors.Is(err, raft.ErrNotLeader),
		errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress),
		errors.Is(err, raft.ErrEnqueueTimeout),
		errors.Is(err, raft.ErrAbortedByRestore), // a user restore raced the write; it never entered the new state
		errors.Is(err, errLeaderChanged):
		return true
	}
	var re *rpcError
	if errors.As(err, &re) && re.code == codeClosed {
		return true // the leader is shutting down; a new one will be elected
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true // dial refused or timed out
	}
	var oe *net.OpError
	return errors.As(err, &oe)
}

// applyLocal runs raft.Apply on this node (the leader) and checks both the
// future's error and the FSM's response. raft waits at most enqueue to take
// the entry; the commit is awaited until ctx is done, which is ErrTimeout
// when ctx's cause is ErrTimeout (the hold ran out).
func (c *Cluster) applyLocal(ctx context.Context, cmd []byte, enqueue time.Duration) ([]byte, error) {
	f := c.raft.Apply(cmd, enqueue)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			switch {
			case errors.Is(err, raft.ErrRaftShutdown):
				return nil, ErrClosed
			case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
				return nil, fmt.Errorf("apply: %w: %w", errLeadershipLost, err)
			case errors.Is(err, raft.ErrNotLeader):
				return nil, fmt.Errorf("apply: %w", ErrNotLeader)
			}
			return nil, fmt.Errorf("apply: %w", err)
		}
		return fsmResponse(f.Response())
	case <-ctx.Done():
		if errors.Is(context.Cause(ctx), ErrTimeout) {
			return nil, fmt.Errorf("apply: not committed in time: %w", ErrTimeout)
		}
		return nil, fmt.Errorf("apply: %w", ctx.Err())
	}
}

func fsmResponse(r any) ([]byte, error) {
	switch v := r.(type) {
	case nil:
		return nil, nil
	case []byte:
		return v, nil
	case error:
		return nil, fmt.Errorf("%w: %w", ErrFSM, v)
	default:
		return nil, fmt.Errorf("%w: unexpected response type %T", ErrFSM, r)
	}
}

// errLeaderChanged cancels a forwarded call whose target stopped being the
// leader; the outcome is unknown and the command is resubmitted.
var errLeaderChanged = errors.New("leader changed while forwarding")

// forwardApply sends cmd to the leader. The call is cancelled as soon as
// this node learns of a different leader, so a dead leader's address never
// holds a write until a dial timeout.
// ctx bounds the call and carries its deadline to the leader; ending with
// cause ErrTimeout (the hold ran out) is ErrTimeout.
func (c *Cluster) forwardApply(ctx context.Context, addr string, id raft.ServerID, cmd []byte) ([]byte, error) {
	cctx, ccancel := context.WithCancelCause(ctx)
	defer ccancel(nil)
	go func() {
		for {
			ch := c.leaderChange()
			if _, cur := c.raft.LeaderWithID(); cur != id {
				ccancel(errLeaderChanged)
				return
			}
			select {
			case <-ch:
			case <-cctx.Done():
				return
			}
		}
	}()
	deadline, _ := ctx.Deadline()
	payload := make([]byte, 8+len(cmd))
	binary.BigEndian.PutUint64(payload, uint64(time.Until(deadline)))
	copy(payload[8:], cmd)
	out, err := c.rpc.call(cctx, addr, mApply, payload)
	if err != nil {
		cause := context.Cause(cctx)
		if errors.Is(cause, errLeaderChanged) {
			return nil, fmt.Errorf("forward apply to %s: %w", addr, errLeaderChanged)
		}
		if errors.Is(cause, ErrTimeout) {
			// Our own hold ran out while the leader we reached was still
			// committing: a slow commit, not an election. Not retryable (the
			// hold is spent); the outcome is unknown.
			return nil, fmt.Errorf("forward apply to %s: %w", addr, ErrTimeout)
		}
		return nil, fmt.Errorf("forward apply to %s: %w", addr, err)
	}
	return out, nil
}

// serveApply is the leader side of a forwarded write.
func (c *Cluster) serveApply(ctx context.Context, payload []byte) ([]byte, error) {
	if len(payload) < 8 {
		return nil, fmt.Errorf("apply request: short payload: %w", ErrBadRequest)
	}
	timeout := time.Duration(binary.BigEndian.Uint64(payload))
	cmd := payload[8:]
	if len(cmd) == 0 {
		return nil, fmt.Errorf("apply request: empty command: %w", ErrBadRequest)
	}
	if len(cmd) > MaxCommandSize {
		return nil, fmt.Errorf("apply request: %d bytes: %w", len(cmd), ErrTooLarge)
	}
	if timeout <= 0 || timeout > time.Minute {
		timeout = c.cfg.HoldTimeout
	}
	if c.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, ErrTimeout)
	defer cancel()
	return c.applyLocal(ctx, cmd, timeout)
}

// running returns nil when the cluster accepts work.
func (c *Cluster) running() error {
	select {
	case <-c.closing:
		return ErrClosed
	default:
	}
	if !c.raftUp.Load() {
		return ErrNotStarted
	}
	return nil
}
