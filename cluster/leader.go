package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// leaderState lives for one term of leadership on this node.
type leaderState struct {
	// ready is set once the leadership barrier committed: the commit index
	// now covers every entry of earlier terms (consistent reads may start).
	ready atomic.Bool
	// healthySince records when each non-voter was first seen healthy and
	// caught up, continuously (promotion needs StabilizationTime).
	healthySince map[string]time.Time
	// missingSince records when a server in the configuration was first
	// found absent from gossip altogether (memberlist forgot it, or this
	// leader never knew it).
	missingSince map[string]time.Time
}

// notifyLoop follows raft's ordered leadership notifications and owns the
// leader loop goroutine.
func (c *Cluster) notifyLoop(ctx context.Context) {
	defer c.wg.Done()
	var stop context.CancelFunc
	var done chan struct{}
	stopLeader := func() {
		if stop == nil {
			return
		}
		stop()
		<-done
		stop, done = nil, nil
		c.leaderState.Store(nil)
	}
	defer stopLeader()
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-c.notifyCh:
			if leader && stop == nil {
				lctx, cancel := context.WithCancel(ctx)
				ls := &leaderState{healthySince: map[string]time.Time{}, missingSince: map[string]time.Time{}}
				c.leaderState.Store(ls)
				stop, done = cancel, make(chan struct{})
				go func(done chan struct{}) {
					defer close(done)
					c.leaderLoop(lctx, ls)
				}(done)
			} else if !leader {
				if stop != nil {
					c.log.Info("lost leadership")
				}
				stopLeader()
			}
		}
	}
}

// leaderLoop is Consul's leader loop: barrier, then a full reconcile on
// every member event (debounced) and every ReconcileInterval.
func (c *Cluster) leaderLoop(ctx context.Context, ls *leaderState) {
	c.log.Info("gained leadership")
	for {
		err := c.raft.Barrier(2 * c.cfg.HoldTimeout).Error()
		if err == nil {
			break
		}
		c.log.Warn("leadership barrier failed", "err", err)
		if c.raft.State() != raft.Leader || !sleepCtx(ctx, 100*time.Millisecond) {
			return
		}
	}
	ls.ready.Store(true)
	c.signalLeaderChange() // wake WaitSync callers waiting for a ready leader
	c.markHasState()

	timer := time.NewTimer(0)
	defer timer.Stop()
	snapCheck := time.NewTimer(leaderSnapshotDelay)
	defer snapCheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-snapCheck.C:
			c.snapshotIfBehind()
			continue
		case <-c.events:
			// Debounce a burst of events into one pass.
			if !sleepCtx(ctx, 20*time.Millisecond) {
				return
			}
			for drained := false; !drained; {
				select {
				case <-c.events:
				default:
					drained = true
				}
			}
		case <-timer.C:
		}
		next := c.reconcile(ctx, ls)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// leaderSnapshotDelay is how long a new leader waits before it checks
// whether its newest snapshot is far behind its log (snapshotIfBehind):
// long enough to keep the snapshot's CPU away from the first writes after
// a failover.
var leaderSnapshotDelay = 5 * time.Second

// snapshotIfBehind takes a snapshot when the log holds SnapshotThreshold
// or more entries after the newest one. A node that joins is sent the
// leader's newest snapshot and then every entry after it, and applying an
// entry costs it far more than restoring one (BENCHMARKS.md §0): after a
// restart that followed a burst of writes the newest snapshot can be
// hundreds of thousands of entries old, and Raft's own check only runs
// 1-2 SnapshotIntervals after the start. This takes that snapshot once,
// early in the term, instead; it is the one Raft's check would take.
func (c *Cluster) snapshotIfBehind() {
	if c.raft.State() != raft.Leader {
		return
	}
	var snapIndex uint64
	if metas, err := c.snaps.List(); err == nil && len(metas) > 0 {
		snapIndex = metas[0].Index
	}
	last := c.raft.LastIndex()
	if last < snapIndex+c.cfg.SnapshotThreshold {
		return
	}
	c.log.Info("taking a snapshot: the newest is far behind the log", "snapshot_index", snapIndex, "last_index", last)
	f := c.raft.Snapshot()
	go func() {
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
			c.log.Warn("snapshot after gaining leadership", "err", err)
		}
	}()
}

// quorum is the majority of n voters.
func quorum(n int) int { return n/2 + 1 }

// pass holds one reconcile pass's view of the world.
//
// Configuration changes are made with prevIndex 0 (unconditional): raft
// v1.8's GetConfiguration does not report the configuration index, so a
// conditional change cannot be expressed. Only the leader loop changes the
// configuration automatically and it re-reads the configuration before each
// single change; operator requests (RemoveServer) may interleave, and every
// rule below is idempotent against them.
type pass struct {
	now       time.Time
	cfg       raft.Configuration
	states    map[string]string
	table     map[string]memberInfo
	voters    int // voters in the configuration
	alive     int // voters alive in gossip (the leader counts)
	voterRems int // voter removals so far in this pass
	maxRems   int // (voters-1)/2 at the start of the pass
}

func (c *Cluster) newPass() *pass {
	f := c.raft.GetConfiguration()
	p := &pass{
		now:    time.Now(),
		cfg:    f.Configuration(),
		states: c.gossipStates(),
		table:  c.members.snapshot(),
	}
	for _, s := range p.cfg.Servers {
		if s.Suffrage == raft.Voter {
			p.voters++
			if c.isAlive(p, string(s.ID)) {
				p.alive++
			}
		}
	}
	return p
}

func (c *Cluster) isAlive(p *pass, id string) bool {
	if id == c.cfg.NodeID {
		return true
	}
	return p.states[id] == GossipAlive
}

// reconcile makes the Raft configuration follow gossip, one change at a
// time, re-reading the configuration after each change. It returns when the
// next pass is due.
func (c *Cluster) reconcile(ctx context.Context, ls *leaderState) time.Duration {
	next := c.cfg.ReconcileInterval
	maxRems := -1
	for step := 0; step < 16; step++ {
		if ctx.Err() != nil || c.raft.State() != raft.Leader {
			return next
		}
		p := c.newPass()
		c.log.Debug("reconcile pass", "step", step, "states", p.states, "voters", p.voters, "alive", p.alive)
		if maxRems < 0 {
			maxRems = max(0, (p.voters-1)/2)
		}
		p.maxRems = maxRems
		changed, wait, err := c.reconcileStep(ctx, ls, p)
		if changed && err == nil {
			c.counters.configChanges.Add(1)
		}
		if wait > 0 && wait < next {
			next = wait
		}
		if err != nil {
			c.log.Warn("reconcile", "err", err)
			return min(next, time.Second)
		}
		if !changed {
			return next
		}
		if p.voterRems > 0 {
			maxRems -= p.voterRems
		}
	}
	return min(next, 100*time.Millisecond)
}

// reconcileStep makes at most one configuration change. It returns whether
// it changed something, and a hint for when the next pass should run.
func (c *Cluster) reconcileStep(ctx context.Context, ls *leaderState, p *pass) (bool, time.Duration, error) {
	self := c.cfg.NodeID
	inCfg := map[string]raft.Server{}
	for _, s := range p.cfg.Servers {
		inCfg[string(s.ID)] = s
	}

	// 0. This node came back on a new address: update its own entry.
	if s, ok := inCfg[self]; ok && s.Address != raft.ServerAddress(c.raftAddr) {
		var f raft.IndexFuture
		if s.Suffrage == raft.Voter {
			f = c.raft.AddVoter(s.ID, raft.ServerAddress(c.raftAddr), 0, c.cfg.HoldTimeout)
		} else {
			f = c.raft.AddNonvoter(s.ID, raft.ServerAddress(c.raftAddr), 0, c.cfg.HoldTimeout)
		}
		if err := f.Error(); err != nil {
			return false, 0, fmt.Errorf("update own address to %s: %w", c.raftAddr, err)
		}
		c.log.Info("updated own server address", "from", string(s.Address), "to", c.raftAddr)
		return true, 0, nil
	}

	// 1. Members that left gracefully go at once.
	for _, s := range p.cfg.Servers {
		id := string(s.ID)
		if id != self && p.states[id] == GossipLeft {
			if s.Suffrage == raft.Voter && !c.canRemoveVoter(ctx, p, id) {
				continue
			}
			return true, 0, c.removeServer(id, 0, "left gossip")
		}
	}

	// 2. Alive members enter as non-voters (or get their new address).
	ids := make([]string, 0, len(p.table))
	for id := range p.table {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := p.table[id]
		if id == self || m.State != GossipAlive || m.MetaErr != nil || m.Meta.Leaving {
			continue // a leaving member is on its way out: never re-add it
		}
		addr := raft.ServerAddress(m.Meta.Raft)
		if s, ok := inCfg[id]; ok {
			if s.Address == addr {
				continue
			}
			// Same ID at a new address: re-adding updates the address and
			// keeps the suffrage.
			var f raft.IndexFuture
			if s.Suffrage == raft.Voter {
				f = c.raft.AddVoter(s.ID, addr, 0, c.cfg.HoldTimeout)
			} else {
				f = c.raft.AddNonvoter(s.ID, addr, 0, c.cfg.HoldTimeout)
			}
			if err := f.Error(); err != nil {
				return false, 0, fmt.Errorf("update address of %s to %s: %w", id, addr, err)
			}
			c.log.Info("updated server address", "id", id, "from", string(s.Address), "to", string(addr))
			return true, 0, nil
		}
		// Another ID at the same address is a wiped node's old self.
		stale := ""
		for _, s := range p.cfg.Servers {
			if s.Address == addr && string(s.ID) != id && string(s.ID) != self {
				stale = string(s.ID)
				if s.Suffrage == raft.Voter && !c.canRemoveVoter(ctx, p, stale) {
					stale = "-"
				}
				break
			}
		}
		switch stale {
		case "":
		case "-":
			c.log.Warn("cannot add member: its address is held by a stale voter that cannot be removed without breaking quorum", "id", id, "addr", string(addr))
			continue
		default:
			return true, 0, c.removeServer(stale, 0, "stale entry at the address of "+id)
		}
		if err := c.raft.AddNonvoter(raft.ServerID(id), addr, 0, c.cfg.HoldTimeout).Error(); err != nil {
			return false, 0, fmt.Errorf("add non-voter %s at %s: %w", id, addr, err)
		}
		c.log.Info("added non-voter", "id", id, "name", m.Meta.Name, "addr", string(addr))
		return true, 0, nil
	}

	// 3 and 4 need the health of non-voters; ask them only when a voter is
	// missing or down.
	var hint time.Duration
	if p.voters < c.cfg.Voters || p.alive < p.voters {
		eligible, wait := c.eligibleNonvoters(ctx, ls, p)
		hint = wait
		potential := p.alive + len(eligible)
		desired := min(c.cfg.Voters, potential)
		if desired%2 == 0 {
			desired--
		}
		// 3. A dead voter gives its seat to a healthy non-voter: demote it
		// first (one change at a time, from an odd count, only if the
		// change can commit), the promotion follows in the next step.
		if len(eligible) > 0 && p.voters%2 == 1 && p.alive >= quorum(p.voters) {
			for _, s := range p.cfg.Servers {
				id := string(s.ID)
				if s.Suffrage != raft.Voter || id == self || c.isAlive(p, id) {
					continue
				}
				if err := c.checkVoterRemoval(ctx, p.cfg, id); err != nil {
					c.log.Warn("demotion refused", "id", id, "err", err)
					break
				}
				if err := c.raft.DemoteVoter(s.ID, 0, c.cfg.HoldTimeout).Error(); err != nil {
					return false, hint, fmt.Errorf("demote dead voter %s: %w", id, err)
				}
				c.log.Info("demoted dead voter", "id", id, "gossip", p.states[id])
				return true, hint, nil
			}
		}
		// 4. Promote caught-up, stable non-voters while below the target.
		if p.voters < desired && len(eligible) > 0 {
			id := eligible[0]
			s := inCfg[id]
			if err := c.raft.AddVoter(s.ID, s.Address, 0, c.cfg.HoldTimeout).Error(); err != nil {
				return false, hint, fmt.Errorf("promote %s: %w", id, err)
			}
			delete(ls.healthySince, id)
			c.log.Info("promoted non-voter", "id", id, "voters", p.voters+1, "target", c.cfg.Voters)
			return true, hint, nil
		}
	}

	// 5. Dead servers go after DeadNodeTimeout.
	for id := range ls.missingSince {
		if _, ok := inCfg[id]; !ok || p.states[id] != "" {
			delete(ls.missingSince, id)
		}
	}
	for _, s := range p.cfg.Servers {
		id := string(s.ID)
		if id == self || c.isAlive(p, id) {
			continue
		}
		var since time.Time
		if m, ok := p.table[id]; ok && (m.State == GossipDead || m.State == GossipLeft) {
			since = m.Since
		} else {
			if _, ok := ls.missingSince[id]; !ok {
				ls.missingSince[id] = p.now
			}
			since = ls.missingSince[id]
		}
		left := c.cfg.DeadNodeTimeout - p.now.Sub(since)
		if left > 0 {
			if hint == 0 || left < hint {
				hint = left
			}
			continue
		}
		if s.Suffrage == raft.Voter && !c.canRemoveVoter(ctx, p, id) {
			continue
		}
		return true, hint, c.removeServer(id, 0, fmt.Sprintf("dead for %s", p.now.Sub(since).Round(time.Millisecond)))
	}
	return false, hint, nil
}

// canRemoveVoter applies the removal limits: at most (voters-1)/2 voter
// removals per pass, and the voters that remain must include a quorum of
// live ones, checked by asking them (gossip lags a fresh failure by
// seconds, and a change that leaves too few live voters can never commit
// and stalls the cluster).
func (c *Cluster) canRemoveVoter(ctx context.Context, p *pass, id string) bool {
	if p.voterRems >= p.maxRems {
		c.log.Debug("voter removal deferred: per-pass limit", "id", id, "limit", p.maxRems)
		return false
	}
	if err := c.checkVoterRemoval(ctx, p.cfg, id); err != nil {
		c.log.Warn("voter removal refused", "id", id, "err", err)
		return false
	}
	p.voterRems++
	return true
}

// checkVoterRemoval returns ErrUnsafe unless the voters other than id
// include a quorum (of the configuration without id) that answer a status
// request now. The local node counts as live.
func (c *Cluster) checkVoterRemoval(ctx context.Context, cfg raft.Configuration, id string) error {
	var others []raft.Server
	for _, s := range cfg.Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != id {
			others = append(others, s)
		}
	}
	need := quorum(len(others))
	if len(others) == 0 {
		return fmt.Errorf("%s is the last voter: %w", id, ErrUnsafe)
	}
	live := c.liveCount(ctx, others)
	if live < need {
		return fmt.Errorf("only %d of the %d remaining voters answer, %d needed: %w", live, len(others), need, ErrUnsafe)
	}
	return nil
}

// liveCount asks each server for its status (500 ms each, concurrently)
// and counts those that answer as themselves; this node counts without
// asking.
func (c *Cluster) liveCount(ctx context.Context, servers []raft.Server) int {
	var mu sync.Mutex
	var wg sync.WaitGroup
	live, self := 0, 0
	for _, s := range servers {
		if string(s.ID) == c.cfg.NodeID {
			self = 1
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			st, err := c.peerStatusAt(sctx, string(s.Address))
			if err == nil && st.ID == string(s.ID) {
				mu.Lock()
				live++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return live + self
}

func (c *Cluster) removeServer(id string, prevIndex uint64, why string) error {
	if err := c.raft.RemoveServer(raft.ServerID(id), prevIndex, c.cfg.HoldTimeout).Error(); err != nil {
		return fmt.Errorf("remove server %s (%s): %w", id, why, err)
	}
	c.log.Info("removed server", "id", id, "reason", why)
	return nil
}

// eligibleNonvoters returns the non-voters that are alive, caught up and
// have been healthy for StabilizationTime, best first; and when the next
// one becomes eligible (0 if none is pending).
func (c *Cluster) eligibleNonvoters(ctx context.Context, ls *leaderState, p *pass) ([]string, time.Duration) {
	var cands []raft.Server
	for _, s := range p.cfg.Servers {
		if s.Suffrage == raft.Nonvoter && p.states[string(s.ID)] == GossipAlive && !p.table[string(s.ID)].Meta.Leaving {
			cands = append(cands, s)
		}
	}
	for id := range ls.healthySince {
		if !slices.ContainsFunc(cands, func(s raft.Server) bool { return string(s.ID) == id }) {
			delete(ls.healthySince, id)
		}
	}
	if len(cands) == 0 {
		return nil, 0
	}
	commit := c.raft.CommitIndex()
	maxContact := max(2*c.cfg.HeartbeatTimeout, 500*time.Millisecond)
	type res struct {
		id      string
		healthy bool
		applied uint64
	}
	results := make([]res, len(cands))
	var wg sync.WaitGroup
	for i, s := range cands {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			st, err := c.peerStatusAt(sctx, string(s.Address))
			r := res{id: string(s.ID)}
			if err == nil && st.ID == string(s.ID) && st.LeaderID == c.cfg.NodeID &&
				st.AppliedIndex+c.cfg.MaxLagEntries >= commit &&
				st.LastContactMS >= 0 && time.Duration(st.LastContactMS)*time.Millisecond <= maxContact {
				r.healthy, r.applied = true, st.AppliedIndex
			}
			results[i] = r
		}()
	}
	wg.Wait()
	var out []res
	var wait time.Duration
	for _, r := range results {
		if !r.healthy {
			delete(ls.healthySince, r.id)
			continue
		}
		since, ok := ls.healthySince[r.id]
		if !ok {
			since = p.now
			ls.healthySince[r.id] = since
		}
		if left := c.cfg.StabilizationTime - p.now.Sub(since); left > 0 {
			if wait == 0 || left < wait {
				wait = left
			}
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].applied != out[j].applied {
			return out[i].applied > out[j].applied
		}
		return out[i].id < out[j].id
	})
	ids := make([]string, len(out))
	for i, r := range out {
		ids[i] = r.id
	}
	return ids, wait
}
