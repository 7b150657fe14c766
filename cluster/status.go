package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

// Roles as reported in NodeStatus.Role and Member.Role.
const (
	RoleLeader   = "leader"
	RoleVoter    = "voter"
	RoleNonvoter = "nonvoter"
	RoleNone     = "none" // not in the Raft configuration
)

// NodeStatus is one node's own view of itself and of Raft.
type NodeStatus struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	RaftAddr   string `json:"raft_addr"`
	GossipAddr string `json:"gossip_addr"`
	HTTPAddr   string `json:"http_addr"`
	// Role is leader, voter, nonvoter or none (not in the configuration).
	Role string `json:"role"`
	// State is the Raft state: Leader, Follower, Candidate or Shutdown.
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	LastIndex    uint64 `json:"last_index"`
	// LastContact is when a follower last heard from the leader (zero on
	// the leader or when never contacted).
	LastContact   time.Time `json:"last_contact,omitzero"`
	LastContactMS int64     `json:"last_contact_ms"` // -1 when unknown, 0 on the leader
	LeaderID      string    `json:"leader_id"`
	LeaderAddr    string    `json:"leader_addr"`
	Version       string    `json:"version"`
	// Ready is nil-error Ready() at the time of the status.
	Ready bool `json:"ready"`
	// Extra is the application's data (Config.StatusExtra).
	Extra json.RawMessage `json:"extra,omitempty"`
}

// Member is a gossip member joined with its place in the Raft configuration.
// Servers in the configuration that gossip does not know are listed with
// Gossip "dead".
type Member struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	GossipAddr string `json:"gossip_addr"`
	RaftAddr   string `json:"raft_addr"`
	HTTPAddr   string `json:"http_addr"`
	Version    string `json:"version"`
	// Gossip is alive, suspect, dead or left.
	Gossip string `json:"gossip"`
	// Role is leader, voter, nonvoter or none.
	Role string `json:"role"`
}

// LocalStatus is this node's view of itself.
func (c *Cluster) LocalStatus() NodeStatus {
	s := NodeStatus{
		ID:            c.cfg.NodeID,
		Name:          c.cfg.Name,
		HTTPAddr:      c.cfg.HTTPAddr,
		Version:       c.cfg.Version,
		Role:          RoleNone,
		State:         raft.Shutdown.String(),
		LastContactMS: -1,
	}
	if c.up.Load() {
		s.RaftAddr, s.GossipAddr = c.raftAddr, c.gossipAddr
	}
	if c.raftUp.Load() {
		st := c.raft.State()
		s.State = st.String()
		s.Term = c.raft.CurrentTerm()
		s.CommitIndex = c.raft.CommitIndex()
		s.AppliedIndex = c.raft.AppliedIndex()
		s.LastIndex = c.raft.LastIndex()
		addr, id := c.raft.LeaderWithID()
		s.LeaderID, s.LeaderAddr = string(id), string(addr)
		for _, srv := range c.raft.GetConfiguration().Configuration().Servers {
			if string(srv.ID) == c.cfg.NodeID {
				s.Role = roleOf(srv, s.LeaderID)
			}
		}
		if st == raft.Leader {
			s.LastContactMS = 0
		} else if lc := c.raft.LastContact(); !lc.IsZero() {
			s.LastContact = lc
			s.LastContactMS = time.Since(lc).Milliseconds()
		}
		s.Ready = c.Ready() == nil
	}
	if c.cfg.StatusExtra != nil {
		if x := c.cfg.StatusExtra(); json.Valid(x) {
			s.Extra = x
		}
	}
	return s
}

func roleOf(s raft.Server, leaderID string) string {
	switch {
	case string(s.ID) == leaderID && leaderID != "":
		return RoleLeader
	case s.Suffrage == raft.Voter:
		return RoleVoter
	default:
		return RoleNonvoter
	}
}

// Members lists gossip members joined with the Raft configuration, sorted
// by ID.
func (c *Cluster) Members() []Member {
	if !c.up.Load() {
		return nil
	}
	_, leaderID := c.raft.LeaderWithID()
	byID := map[string]*Member{}
	table := c.members.snapshot()
	states := c.gossipStates()
	for id, m := range table {
		byID[id] = &Member{
			ID: id, Name: m.Meta.Name, GossipAddr: m.GossipAddr, RaftAddr: m.Meta.Raft,
			HTTPAddr: m.Meta.HTTP, Version: m.Meta.Version, Gossip: states[id], Role: RoleNone,
		}
	}
	for _, s := range c.raft.GetConfiguration().Configuration().Servers {
		id := string(s.ID)
		m := byID[id]
		if m == nil {
			m = &Member{ID: id, RaftAddr: string(s.Address), Gossip: GossipDead}
			byID[id] = m
		}
		if m.RaftAddr == "" {
			m.RaftAddr = string(s.Address)
		}
		m.Role = roleOf(s, string(leaderID))
	}
	out := make([]Member, 0, len(byID))
	for _, m := range byID {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// PeerStatus asks another member for its status over the internal channel.
// Without a deadline in ctx it waits at most two seconds.
func (c *Cluster) PeerStatus(ctx context.Context, id string) (NodeStatus, error) {
	if err := c.running(); err != nil {
		return NodeStatus{}, err
	}
	if id == c.cfg.NodeID {
		return c.LocalStatus(), nil
	}
	addr := c.raftAddrOf(id)
	if addr == "" {
		return NodeStatus{}, fmt.Errorf("peer status %s: %w", id, ErrUnknownServer)
	}
	return c.peerStatusAt(ctx, addr)
}

func (c *Cluster) peerStatusAt(ctx context.Context, addr string) (NodeStatus, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
	}
	out, err := c.rpc.call(ctx, addr, mStatus, nil)
	if err != nil {
		return NodeStatus{}, fmt.Errorf("peer status %s: %w", addr, err)
	}
	var s NodeStatus
	if err := json.Unmarshal(out, &s); err != nil {
		return NodeStatus{}, fmt.Errorf("peer status %s: decode: %w", addr, err)
	}
	return s, nil
}

// raftAddrOf finds a member's Raft address in gossip, then in the Raft
// configuration.
func (c *Cluster) raftAddrOf(id string) string {
	if m, ok := c.members.get(id); ok && m.Meta.Raft != "" {
		return m.Meta.Raft
	}
	for _, s := range c.raft.GetConfiguration().Configuration().Servers {
		if string(s.ID) == id {
			return string(s.Address)
		}
	}
	return ""
}

// Ready returns nil when a leader is known and this node has applied
// everything up to the commit index it knows. It wraps ErrNotReady
// otherwise.
func (c *Cluster) Ready() error {
	if err := c.running(); err != nil {
		return err
	}
	if _, id := c.raft.LeaderWithID(); id == "" {
		return fmt.Errorf("%w: no known leader", ErrNotReady)
	}
	commit := c.raft.CommitIndex()
	if !c.synced(commit) {
		return fmt.Errorf("%w: applied %d of commit index %d", ErrNotReady, c.raft.AppliedIndex(), commit)
	}
	return nil
}

// synced reports whether the FSM has consumed every entry up to target.
// raft.AppliedIndex says what was handed to the FSM goroutine; the tracker
// says what the FSM finished. Entries that never reach the FSM (the noop a
// new leader writes, barriers) are skipped by reading their type from the
// log.
func (c *Cluster) synced(target uint64) bool {
	if c.raft.AppliedIndex() < target {
		return false
	}
	seen := c.tracker.seen.Load()
	if seen >= target {
		return true
	}
	const maxScan = 1024
	for i := target; i > seen; i-- {
		if target-i >= maxScan {
			return false
		}
		var l raft.Log
		if err := c.logs.GetLog(i, &l); err != nil {
			// Compacted into a snapshot the FSM already holds.
			return true
		}
		switch l.Type {
		case raft.LogCommand, raft.LogConfiguration:
			return false
		}
	}
	return true
}

// WaitSync waits until this node has applied everything the leader had
// committed when asked: afterwards a local read observes every write
// acknowledged before the call (read-your-writes across nodes, and the
// basis of strong reads and /readyz?sync). It holds through an election
// within ctx.
func (c *Cluster) WaitSync(ctx context.Context) error {
	if err := c.running(); err != nil {
		return err
	}
	target, err := c.leaderCommit(ctx)
	if err != nil {
		return fmt.Errorf("wait sync: %w", err)
	}
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for !c.synced(target) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait sync: applied %d of %d: %w", c.raft.AppliedIndex(), target, ctx.Err())
		case <-c.closing:
			return ErrClosed
		case <-t.C:
		}
	}
	return nil
}

// leaderCommit returns the leader's commit index after the leader confirmed
// it still leads (VerifyLeader) and has committed an entry of its own term
// (the barrier at the start of its leadership).
func (c *Cluster) leaderCommit(ctx context.Context) (uint64, error) {
	var lastErr error
	backoff := 5 * time.Millisecond
	for {
		changed := c.leaderChange()
		if c.raft.State() == raft.Leader {
			idx, err := c.localLeaderCommit()
			if err == nil {
				return idx, nil
			}
			lastErr = err
		} else if addr, id := c.raft.LeaderWithID(); addr != "" && string(id) != c.cfg.NodeID {
			out, err := c.rpc.call(ctx, string(addr), mLeaderCommit, nil)
			if err == nil && len(out) == 8 {
				return binary.BigEndian.Uint64(out), nil
			}
			if err == nil {
				err = fmt.Errorf("leader commit: bad answer of %d bytes", len(out))
			}
			lastErr = err
		} else {
			lastErr = ErrNoLeader
		}
		if !retryable(lastErr) {
			return 0, lastErr
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, fmt.Errorf("%w (last: %v)", ctx.Err(), lastErr)
		case <-c.closing:
			t.Stop()
			return 0, ErrClosed
		case <-changed:
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

func (c *Cluster) localLeaderCommit() (uint64, error) {
	ls := c.leaderState.Load()
	if ls == nil || !ls.ready.Load() {
		return 0, fmt.Errorf("leader not ready for consistent reads: %w", ErrNoLeader)
	}
	idx := c.raft.CommitIndex()
	if err := c.raft.VerifyLeader().Error(); err != nil {
		return 0, fmt.Errorf("verify leader: %w", ErrNotLeader)
	}
	return idx, nil
}
