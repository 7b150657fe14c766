package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

// bootstrapInfo is a node's answer to "may we bootstrap?".
type bootstrapInfo struct {
	HasState bool   `json:"has_state"`
	LeaderID string `json:"leader_id,omitempty"`
	Expect   int    `json:"expect"`
}

func (c *Cluster) localBootstrapInfo() bootstrapInfo {
	_, leader := c.raft.LeaderWithID()
	has := c.hasState.Load()
	if !has {
		if ok, err := raft.HasExistingState(c.logs, c.stable, c.snaps); err == nil && ok {
			has = true
		}
	}
	return bootstrapInfo{HasState: has, LeaderID: string(leader), Expect: c.cfg.BootstrapExpect}
}

// bootstrapExpectLoop implements --bootstrap-expect N, following Consul's
// maybeBootstrap: while this node has no Raft state, wait until gossip
// shows N alive members announcing the same expectation and no state; ask
// each of them over the internal RPC whether it has Raft state or knows a
// leader (if any does, a cluster exists and will fold us in: give up);
// then bootstrap with the same configuration every one of them computes:
// the N smallest IDs, all voters. Identical configurations bootstrapped on
// several nodes form one cluster.
//
// The candidate set must also be stable for a short settle time, so nodes
// that started more than N at once converge on the same set before anyone
// bootstraps.
func (c *Cluster) bootstrapExpectLoop(ctx context.Context) {
	defer c.wg.Done()
	n := c.cfg.BootstrapExpect
	settle := max(2*c.cfg.GossipInterval, 200*time.Millisecond)
	var lastSet string
	var setSince time.Time
	tick := time.NewTicker(max(c.cfg.GossipInterval, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-tick.C:
		}
		if c.hasState.Load() || c.raft.LastIndex() > 0 {
			c.log.Info("bootstrap not needed: this node is part of a cluster")
			return
		}
		set, ok := c.bootstrapCandidates(n)
		if !ok {
			lastSet = ""
			continue
		}
		key := fmt.Sprint(set)
		if key != lastSet {
			lastSet, setSince = key, time.Now()
			continue
		}
		if time.Since(setSince) < settle {
			continue
		}
		done, err := c.tryBootstrap(ctx, set)
		if err != nil {
			c.log.Warn("bootstrap attempt", "err", err)
			continue
		}
		if done {
			return
		}
	}
}

// bootstrapCandidates returns the first n alive members (sorted by ID) that
// announce expect == n, if there are at least n and none announces Raft
// state or a conflicting expectation.
func (c *Cluster) bootstrapCandidates(n int) ([]string, bool) {
	var ids []string
	for id, m := range c.members.snapshot() {
		if m.State != GossipAlive || m.MetaErr != nil {
			continue
		}
		if m.Meta.State {
			return nil, false // a cluster exists: wait to be folded in
		}
		switch m.Meta.Expect {
		case n:
			ids = append(ids, id)
		case 0:
			// A plain joiner; it waits to be added.
		default:
			c.log.Warn("member announces a different bootstrap expect; not bootstrapping", "id", id, "expect", m.Meta.Expect, "ours", n)
			return nil, false
		}
	}
	if len(ids) < n {
		return nil, false
	}
	sort.Strings(ids)
	if len(ids) > n {
		c.log.Warn("more nodes announce bootstrap expect than expected; using the first by ID", "expect", n, "seen", len(ids))
	}
	return ids[:n], true
}

// tryBootstrap checks every candidate over RPC and bootstraps. It returns
// done when this node will never bootstrap (it did, or a cluster exists, or
// it is not in the set and waits to be added).
func (c *Cluster) tryBootstrap(ctx context.Context, set []string) (bool, error) {
	self := c.cfg.NodeID
	servers := make([]raft.Server, 0, len(set))
	inSet := false
	for _, id := range set {
		m, ok := c.members.get(id)
		if !ok {
			return false, fmt.Errorf("candidate %s vanished", id)
		}
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(m.Meta.Raft)})
		if id == self {
			inSet = true
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		out, err := c.rpc.call(cctx, m.Meta.Raft, mBootstrapInfo, nil)
		cancel()
		if err != nil {
			return false, fmt.Errorf("ask %s whether it has raft state: %w", id, err)
		}
		var info bootstrapInfo
		if err := json.Unmarshal(out, &info); err != nil {
			return false, fmt.Errorf("decode bootstrap info from %s: %w", id, err)
		}
		if info.HasState || info.LeaderID != "" {
			c.log.Info("not bootstrapping: a peer already has raft state; waiting to be added", "peer", id, "leader", info.LeaderID)
			return true, nil
		}
		if info.Expect != c.cfg.BootstrapExpect {
			return false, fmt.Errorf("peer %s expects %d, we expect %d", id, info.Expect, c.cfg.BootstrapExpect)
		}
	}
	if !inSet {
		// Keep watching: if the set changes (a member died before it
		// bootstrapped) this node may belong to the next one.
		c.log.Debug("not in the bootstrap set; waiting", "set", set)
		return false, nil
	}
	if c.hasState.Load() || c.raft.LastIndex() > 0 {
		return true, nil
	}
	if err := c.bootstrap(servers); err != nil {
		return false, err
	}
	return true, nil
}
