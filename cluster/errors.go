package cluster

import (
	"context"
	"errors"
	"fmt"
)

// Sentinel errors callers branch on.
var (
	// ErrNoLeader means no leader was known (or reachable) for the whole hold
	// window. The write was not applied or its outcome is unknown; commands
	// are idempotent, so the caller may resubmit it later.
	ErrNoLeader = errors.New("cluster: no leader")
	// ErrTimeout means a leader was known and reachable but the write was
	// not answered before the hold (or the caller's deadline) ran out: the
	// commit was slow, not missing. The outcome is unknown; commands are
	// idempotent, so the caller may resubmit. It wraps
	// context.DeadlineExceeded, so callers that treat a deadline as "try
	// again later" (503) need no change.
	ErrTimeout = fmt.Errorf("cluster: timed out waiting for the leader to commit: %w", context.DeadlineExceeded)
	// ErrClosed means the cluster was closed (or is closing).
	ErrClosed = errors.New("cluster: closed")
	// ErrNotStarted means Start has not completed.
	ErrNotStarted = errors.New("cluster: not started")
	// ErrNotLeader is returned by leader-only operations run on a follower
	// that cannot forward them.
	ErrNotLeader = errors.New("cluster: not the leader")
	// ErrNotReady means there is no known leader or this node has not applied
	// everything it knows to be committed.
	ErrNotReady = errors.New("cluster: not ready")
	// ErrUnknownServer names a server ID that is neither in the Raft
	// configuration nor in gossip.
	ErrUnknownServer = errors.New("cluster: unknown server")
	// ErrFSM wraps an error value the FSM returned as the response of a
	// committed entry. The entry is in the log; the FSM refused it.
	ErrFSM = errors.New("cluster: fsm rejected command")
	// ErrUnauthenticated means an internal connection failed the
	// challenge-response handshake (different or missing gossip key).
	ErrUnauthenticated = errors.New("cluster: internal connection not authenticated")
	// ErrTooLarge means a command exceeds MaxCommandSize.
	ErrTooLarge = errors.New("cluster: command too large")
	// ErrBadRequest means an argument was invalid (empty command, empty id...).
	ErrBadRequest = errors.New("cluster: bad request")
	// ErrUnsafe means a membership change was refused because it would break
	// quorum.
	ErrUnsafe = errors.New("cluster: change would break quorum")
)
