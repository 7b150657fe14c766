package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// meta is what a node tells the others about itself in gossip. Keys are
// short because memberlist caps metadata at 512 bytes.
type meta struct {
	Name    string `json:"n,omitempty"`
	Raft    string `json:"r"`
	HTTP    string `json:"h,omitempty"`
	Expect  int    `json:"e,omitempty"`
	Version string `json:"v,omitempty"`
	State   bool   `json:"s,omitempty"` // has Raft state (bootstrapped or added)
	Leaving bool   `json:"l,omitempty"` // leaving gracefully: its departure is a leave, not a failure
}

func (m meta) encode() ([]byte, error) { return json.Marshal(m) }

func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) == 0 {
		return m, fmt.Errorf("empty gossip metadata")
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("decode gossip metadata: %w", err)
	}
	if m.Raft == "" {
		return m, fmt.Errorf("gossip metadata has no raft address")
	}
	return m, nil
}

// Gossip states as reported in Member.Gossip. memberlist v0.7 does not
// expose the suspect state through its public API (Node.State is never
// updated), so a suspect member reads as alive until it is declared dead.
const (
	GossipAlive = "alive"
	GossipDead  = "dead"
	GossipLeft  = "left"
)

// memberInfo is this node's record of one gossip member, kept from
// memberlist events so dead and left members are remembered after
// memberlist forgets them.
type memberInfo struct {
	ID         string
	GossipAddr string
	Meta       meta
	MetaErr    error
	State      string    // GossipAlive, GossipDead or GossipLeft
	Since      time.Time // when State last changed
}

// memberTable is updated from memberlist's event delegate. Callbacks only
// take this table's own lock and do a non-blocking send, so memberlist is
// never held up and never re-entered.
type memberTable struct {
	mu      sync.RWMutex
	members map[string]*memberInfo
	changed func(id string) // non-blocking notification
}

func newMemberTable(changed func(string)) *memberTable {
	return &memberTable{members: make(map[string]*memberInfo), changed: changed}
}

func (t *memberTable) set(n *memberlist.Node, state string) {
	m, err := decodeMeta(n.Meta)
	addr := net.JoinHostPort(n.Addr.String(), fmt.Sprint(n.Port))
	t.mu.Lock()
	cur := t.members[n.Name]
	if cur == nil {
		cur = &memberInfo{ID: n.Name}
		t.members[n.Name] = cur
	}
	if cur.State != state {
		cur.State, cur.Since = state, time.Now()
	}
	cur.GossipAddr, cur.Meta, cur.MetaErr = addr, m, err
	t.mu.Unlock()
	t.changed(n.Name)
}

// NotifyJoin implements memberlist.EventDelegate.
func (t *memberTable) NotifyJoin(n *memberlist.Node) { t.set(n, GossipAlive) }

// NotifyLeave implements memberlist.EventDelegate: failure or graceful
// leave. memberlist does not say which (the Node.State it passes is never
// updated), so a leaving node first announces Leaving in its metadata.
func (t *memberTable) NotifyLeave(n *memberlist.Node) {
	state := GossipDead
	if m, err := decodeMeta(n.Meta); err == nil && m.Leaving {
		state = GossipLeft
	}
	t.set(n, state)
}

// NotifyUpdate implements memberlist.EventDelegate.
func (t *memberTable) NotifyUpdate(n *memberlist.Node) { t.set(n, GossipAlive) }

func (t *memberTable) snapshot() map[string]memberInfo {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make(map[string]memberInfo, len(t.members))
	for id, m := range t.members {
		out[id] = *m
	}
	return out
}

func (t *memberTable) get(id string) (memberInfo, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	m, ok := t.members[id]
	if !ok {
		return memberInfo{}, false
	}
	return *m, true
}

// prune forgets dead or left members that are no longer in the Raft
// configuration and have been gone longer than keep.
func (t *memberTable) prune(inConfig func(id string) bool, keep time.Duration, self string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, m := range t.members {
		if id == self || m.State == GossipAlive || inConfig(id) {
			continue
		}
		if time.Since(m.Since) > keep {
			delete(t.members, id)
		}
	}
}

// gossipDelegate implements memberlist.Delegate for metadata only.
type gossipDelegate struct {
	c *Cluster
}

func (d gossipDelegate) NodeMeta(limit int) []byte {
	b, err := d.c.localMeta().encode()
	if err != nil || len(b) > limit {
		// Validate keeps this from happening; never send a truncated blob.
		return nil
	}
	return b
}
func (gossipDelegate) NotifyMsg([]byte)                           {}
func (gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (gossipDelegate) LocalState(join bool) []byte                { return nil }
func (gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

func (c *Cluster) localMeta() meta {
	return meta{
		Name:    c.cfg.Name,
		Raft:    c.raftAddr,
		HTTP:    c.cfg.HTTPAddr,
		Expect:  c.cfg.BootstrapExpect,
		Version: c.cfg.Version,
		State:   c.hasState.Load(),
		Leaving: c.leaving.Load(),
	}
}

// memberlistConfig builds the memberlist configuration from ours.
func (c *Cluster) memberlistConfig(advertiseIP string) (*memberlist.Config, error) {
	host, portStr, err := net.SplitHostPort(c.cfg.GossipAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip addr: %w", err)
	}
	var port int
	if _, err := fmt.Sscan(portStr, &port); err != nil {
		return nil, fmt.Errorf("gossip addr port: %w", err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.cfg.NodeID
	mc.BindAddr = host
	mc.BindPort = port
	mc.AdvertiseAddr = advertiseIP
	mc.AdvertisePort = port
	mc.ProbeInterval = c.cfg.ProbeInterval
	mc.ProbeTimeout = c.cfg.ProbeTimeout
	mc.SuspicionMult = c.cfg.SuspicionMult
	mc.GossipInterval = c.cfg.GossipInterval
	mc.PushPullInterval = c.cfg.PushPullInterval
	mc.DeadNodeReclaimTime = c.cfg.DeadNodeReclaimTime
	// A join to a black-holed seed blocks for TCPTimeout and Close waits for
	// it; 10 s (the LAN default) is long for a LAN.
	mc.TCPTimeout = 3 * time.Second
	mc.Delegate = gossipDelegate{c: c}
	mc.Events = c.members
	mc.Logger = newStdLogger(c.log, "memberlist", c.logLimit)
	if len(c.cfg.GossipKey) > 0 {
		kr, err := memberlist.NewKeyring(nil, c.cfg.GossipKey)
		if err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	return mc, nil
}

// resolveAdvertiseIP returns the IP memberlist advertises (it needs an IP,
// not a name).
func resolveAdvertiseIP(ctx context.Context, host string) (string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return ip.String(), nil
	}
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
	if err != nil {
		return "", fmt.Errorf("resolve advertise host %q: %w", host, err)
	}
	sort.SliceStable(ips, func(i, j int) bool { return ips[i].To4() != nil && ips[j].To4() == nil })
	if len(ips) == 0 {
		return "", fmt.Errorf("resolve advertise host %q: no addresses", host)
	}
	return ips[0].String(), nil
}

// unsettledRejoinInterval is how often a node that knows no Raft leader
// re-joins its seeds (RejoinInterval, if shorter, wins). A node restarted at
// a new address is refused by its peers ("conflicting address") until its
// old entry has been dead for DeadNodeReclaimTime; the first join after that
// lets the leader learn the new Raft address. With only the 30-s re-join it
// could take up to a minute; now it is a few seconds after the reclaim time.
const unsettledRejoinInterval = 2 * time.Second

// joinLoop joins the seeds with backoff until one answers, then re-joins
// them every RejoinInterval so the halves of a healed partition (which
// memberlist alone never re-contacts once it forgot the dead) find each
// other again, and more often while this node knows no leader.
func (c *Cluster) joinLoop(ctx context.Context) {
	defer c.wg.Done()
	if len(c.cfg.Join) == 0 {
		return
	}
	backoff := 100 * time.Millisecond
	for {
		n, err := c.ml.Join(c.cfg.Join)
		if err == nil || n > 0 {
			c.log.Info("joined gossip", "seeds", c.cfg.Join, "contacted", n)
			break
		}
		c.log.Warn("join gossip seeds", "seeds", c.cfg.Join, "err", err, "retry_in", backoff)
		if !sleepCtx(ctx, jitter(backoff)) {
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	for {
		d := c.cfg.RejoinInterval
		if _, id := c.raft.LeaderWithID(); id == "" {
			d = min(d, unsettledRejoinInterval)
		}
		if !sleepCtx(ctx, d) {
			return
		}
		if n, err := c.ml.Join(c.cfg.Join); err != nil && n == 0 {
			c.log.Debug("rejoin gossip seeds", "seeds", c.cfg.Join, "err", err)
		}
	}
}

// jitter returns d randomised by ±20 %.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}

// sleepCtx sleeps for d or until ctx ends; it reports whether it slept.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// gossipStates returns each known member's gossip state.
func (c *Cluster) gossipStates() map[string]string {
	out := make(map[string]string)
	for id, m := range c.members.snapshot() {
		out[id] = m.State
	}
	return out
}
