package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// handleRPC serves the internal RPC methods.
func (c *Cluster) handleRPC(ctx context.Context, method byte, payload []byte) (byte, []byte) {
	select {
	case <-c.closing:
		return codeClosed, []byte(ErrClosed.Error())
	default:
	}
	if !c.raftUp.Load() {
		return codeClosed, []byte("cluster: starting")
	}
	var out []byte
	var err error
	switch method {
	case mApply:
		out, err = c.serveApply(ctx, payload)
	case mStatus:
		if !c.up.Load() {
			return codeClosed, []byte("cluster: starting")
		}
		out, err = json.Marshal(c.LocalStatus())
	case mLeaderCommit:
		if c.raft.State() != raft.Leader {
			err = ErrNotLeader
			break
		}
		var idx uint64
		if idx, err = c.localLeaderCommit(); err == nil {
			out = binary.BigEndian.AppendUint64(nil, idx)
		}
	case mBootstrapInfo:
		out, err = json.Marshal(c.localBootstrapInfo())
	case mRemoveServer:
		err = c.removeLocal(string(payload))
	case mTransferLeadership:
		err = c.transferLocal(string(payload))
	default:
		err = fmt.Errorf("unknown internal rpc method %d: %w", method, ErrBadRequest)
	}
	if err != nil {
		code := codeFor(err)
		switch {
		case ctx.Err() != nil:
			// This node is shutting down under the request: the caller
			// retries elsewhere.
			return codeClosed, []byte(fmt.Sprintf("%v: %v", ErrClosed, err))
		case code == codeError && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)):
			// A deadline with no more to say (not ErrTimeout, which has
			// its own code): outcome unknown, the caller decides within
			// its own deadline.
			return codeLeadershipLost, []byte(err.Error())
		}
		return code, []byte(err.Error())
	}
	return codeOK, out
}

// onLeader runs local on the leader, or forwards method to the leader,
// retrying through elections for up to HoldTimeout (bounded by ctx).
func (c *Cluster) onLeader(ctx context.Context, method byte, payload []byte, local func() error) error {
	if err := c.running(); err != nil {
		return err
	}
	return c.onLeaderUntil(ctx, method, payload, local, c.closing)
}

// onLeaderUntil is onLeader that gives up when closing is closed (nil: only
// ctx and the hold bound it, for use while closing).
func (c *Cluster) onLeaderUntil(ctx context.Context, method byte, payload []byte, local func() error, closing <-chan struct{}) error {
	deadline := time.Now().Add(c.cfg.HoldTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	var lastErr error
	backoff := 10 * time.Millisecond
	for {
		changed := c.leaderChange()
		if time.Now().After(deadline) {
			if lastErr == nil {
				lastErr = ErrNoLeader
			}
			return fmt.Errorf("%w (last: %v)", ErrNoLeader, lastErr)
		}
		var err error
		if c.raft.State() == raft.Leader {
			err = local()
		} else if addr, id := c.raft.LeaderWithID(); addr != "" && string(id) != c.cfg.NodeID {
			cctx, cancel := context.WithDeadline(ctx, deadline)
			_, err = c.rpc.call(cctx, string(addr), method, payload)
			cancel()
		} else {
			err = ErrNoLeader
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		}
		if !retryable(err) {
			return err
		}
		lastErr = err
		c.waitChange(ctx, changed, backoff, deadline, closing)
		select {
		case <-closing:
			return ErrClosed
		default:
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// RemoveServer removes id from the Raft configuration (run on the leader,
// forwarded when needed). Removing the leader itself first hands
// leadership to another voter. An unknown ID is ErrUnknownServer.
func (c *Cluster) RemoveServer(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("remove server: empty id: %w", ErrBadRequest)
	}
	if err := c.onLeader(ctx, mRemoveServer, []byte(id), func() error { return c.removeLocal(id) }); err != nil {
		return fmt.Errorf("remove server %s: %w", id, err)
	}
	return nil
}

func (c *Cluster) removeLocal(id string) error {
	if c.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if id == "" {
		return fmt.Errorf("empty id: %w", ErrBadRequest)
	}
	cfg := c.raft.GetConfiguration().Configuration()
	var target *raft.Server
	for _, s := range cfg.Servers {
		if string(s.ID) == id {
			target = &s
		}
	}
	if target == nil {
		return ErrUnknownServer
	}
	if target.Suffrage == raft.Voter {
		// The change commits under the new configuration: the voters left
		// must include a quorum of live ones, or it (and the cluster) hangs.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.checkVoterRemoval(ctx, cfg, id)
		cancel()
		if err != nil {
			return fmt.Errorf("remove voter %s: %w", id, err)
		}
	}
	if id == c.cfg.NodeID {
		// Hand over first; the caller retries and reaches the new leader.
		if err := c.raft.LeadershipTransfer().Error(); err != nil {
			return fmt.Errorf("transfer leadership before removing self: %w", err)
		}
		return ErrNotLeader
	}
	if err := c.raft.RemoveServer(raft.ServerID(id), 0, c.cfg.HoldTimeout).Error(); err != nil {
		return mapRaftErr(err)
	}
	c.log.Info("removed server on request", "id", id)
	return nil
}

// TransferLeadership hands leadership to toID, or to the most up-to-date
// voter when toID is empty (run on the leader, forwarded when needed).
func (c *Cluster) TransferLeadership(ctx context.Context, toID string) error {
	if err := c.onLeader(ctx, mTransferLeadership, []byte(toID), func() error { return c.transferLocal(toID) }); err != nil {
		return fmt.Errorf("transfer leadership: %w", err)
	}
	return nil
}

func (c *Cluster) transferLocal(toID string) error {
	if c.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if toID == c.cfg.NodeID {
		return nil // already the leader
	}
	var f raft.Future
	if toID == "" {
		f = c.raft.LeadershipTransfer()
	} else {
		var target *raft.Server
		for _, s := range c.raft.GetConfiguration().Configuration().Servers {
			if string(s.ID) == toID {
				target = &s
			}
		}
		if target == nil {
			return ErrUnknownServer
		}
		if target.Suffrage != raft.Voter {
			return fmt.Errorf("%s is not a voter: %w", toID, ErrBadRequest)
		}
		f = c.raft.LeadershipTransferToServer(target.ID, target.Address)
	}
	if err := f.Error(); err != nil {
		return fmt.Errorf("%w", mapRaftErr(err))
	}
	c.log.Info("leadership transferred on request", "to", toID)
	return nil
}

// Leave removes this node from the cluster for good: it hands over
// leadership if it leads, announces that it is leaving, asks the leader to
// remove it from the Raft configuration and leaves gossip. Close does the
// same on its way out; call Close afterwards.
func (c *Cluster) Leave(ctx context.Context) error {
	if err := c.running(); err != nil {
		return err
	}
	if !c.up.Load() {
		return ErrNotStarted
	}
	return c.leave(ctx)
}

// leaveTimeout bounds the graceful part of Close.
func (c *Cluster) leaveTimeout() time.Duration {
	return min(c.cfg.HoldTimeout, 5*time.Second) + 3*time.Second
}

// leave is the graceful departure (design §4.5): transfer leadership, mark
// the gossip metadata as leaving (so peers see a leave, not a failure),
// have the leader remove this server, leave gossip. The last voter stays in
// the configuration so a single node restarts as itself.
func (c *Cluster) leave(ctx context.Context) error {
	var errs []error
	self := c.cfg.NodeID
	if c.raft.State() == raft.Leader && c.voterCount() > 1 {
		if err := c.raft.LeadershipTransfer().Error(); err != nil {
			errs = append(errs, fmt.Errorf("transfer leadership: %w", err))
		} else {
			c.log.Info("leadership transferred on close")
		}
	}
	c.leaving.Store(true)
	if err := c.ml.UpdateNode(time.Second); err != nil {
		c.log.Debug("announce leaving in gossip", "err", err)
	}
	if _, leader := c.raft.LeaderWithID(); leader == "" || (string(leader) != self && c.gossipStates()[string(leader)] != GossipAlive) {
		c.log.Warn("no live leader known: leaving gossip without removing this server from the raft configuration (the next leader removes it when it sees the leave)")
	} else if c.inConfig(self) && !c.lastVoter() {
		rctx, cancel := context.WithTimeout(ctx, min(c.cfg.HoldTimeout, 3*time.Second))
		err := c.onLeaderUntil(rctx, mRemoveServer, []byte(self), func() error { return c.removeLocal(self) }, nil)
		cancel()
		if errors.Is(err, ErrUnsafe) {
			c.log.Warn("staying in the raft configuration: removing this voter would break quorum", "err", err)
		} else if err != nil && !errors.Is(err, ErrUnknownServer) {
			errs = append(errs, fmt.Errorf("remove self from raft: %w", err))
		} else if err == nil {
			c.log.Info("removed from the raft configuration")
		}
	}
	if err := c.ml.Leave(2 * time.Second); err != nil {
		errs = append(errs, fmt.Errorf("leave gossip: %w", err))
	}
	return errors.Join(errs...)
}

// lastVoter reports whether this node is the only voter.
func (c *Cluster) lastVoter() bool {
	for _, s := range c.raft.GetConfiguration().Configuration().Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != c.cfg.NodeID {
			return false
		}
	}
	return true
}

func (c *Cluster) inConfig(id string) bool {
	for _, s := range c.raft.GetConfiguration().Configuration().Servers {
		if string(s.ID) == id {
			return true
		}
	}
	return false
}

func mapRaftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	}
	return err
}
