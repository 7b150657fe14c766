package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// MaxCommandSize is the largest command Apply accepts. hashicorp/raft
// suggests entries stay under 512 KiB (raft.SuggestedMaxDataSize): larger
// entries delay heartbeats and destabilise leadership.
const MaxCommandSize = 512 * 1024

// Config configures a Cluster. Start from DefaultConfig and override fields.
type Config struct {
	// NodeID is a UUID created once and kept in the data dir: the Raft
	// ServerID and the memberlist node name. Unique forever; a wiped node is
	// a new node with a new ID.
	NodeID string
	// Name is a human label carried in gossip metadata.
	Name string
	// GossipAddr is the memberlist bind host:port (TCP and UDP); port 0 picks one.
	GossipAddr string
	// RaftAddr is the bind host:port for Raft and the internal RPC (one TCP
	// port, first-byte mux); port 0 picks one.
	RaftAddr string
	// AdvertiseHost is the host peers use to reach this node. Never 0.0.0.0.
	AdvertiseHost string
	// HTTPAddr is the advertised HTTP host:port carried in gossip metadata.
	HTTPAddr string
	// Join lists gossip seeds (host:port). A DNS name with several A records
	// reaches all of them. A node with Join and no BootstrapExpect never
	// bootstraps: it waits to be added by the leader.
	Join []string
	// BootstrapExpect, when > 0, lets this many nodes started together form
	// one cluster. 0 = unset.
	BootstrapExpect int
	// Voters is the target number of voters: odd, 1..5 (default 3).
	Voters int
	// DeadNodeTimeout is how long a member may be dead in gossip before the
	// leader removes it from the Raft configuration.
	DeadNodeTimeout time.Duration
	// GossipKey (16, 24 or 32 bytes) encrypts gossip and keys the internal
	// RPC authentication. Empty = unauthenticated (logged loudly at Start).
	GossipKey []byte
	// HoldTimeout bounds how long a write waits through an election or for a
	// reachable leader before ErrNoLeader (or ErrTimeout when a leader was
	// reached but did not answer in time).
	HoldTimeout time.Duration
	// ReconcileInterval is the period of the leader's full reconcile pass.
	ReconcileInterval time.Duration
	// RejoinInterval is the period of re-joining the seeds (heals partitions
	// longer than memberlist's memory of dead nodes).
	RejoinInterval time.Duration
	// StabilizationTime is how long a non-voter must be alive and caught up
	// before it is promoted.
	StabilizationTime time.Duration
	// MaxLagEntries is how far (in log entries) behind the leader's commit
	// index a non-voter may be and still count as caught up.
	MaxLagEntries uint64

	// Raft timings (see DESIGN.md for the reasoning behind the defaults).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotInterval   time.Duration
	SnapshotThreshold  uint64
	TrailingLogs       uint64
	MaxAppendEntries   int

	// Gossip timings (memberlist); defaults are memberlist's LAN profile.
	ProbeInterval       time.Duration
	ProbeTimeout        time.Duration
	SuspicionMult       int
	GossipInterval      time.Duration
	PushPullInterval    time.Duration
	DeadNodeReclaimTime time.Duration

	// Version is this build's version, carried in gossip metadata.
	Version string
	// Logger receives the package's logs and the bridged raft/memberlist logs.
	Logger *slog.Logger
	// StatusExtra, if set, returns application data included in this node's
	// status (the node puts its totals there). It must be fast and safe to
	// call from any goroutine.
	StatusExtra func() json.RawMessage
	// OnApply, if set, is called once per Apply on this node with its total
	// duration (hold and retries included), whether the last attempt was
	// forwarded to another node, and the error returned (nil on success).
	// It runs on the caller's goroutine and must be fast (metrics).
	OnApply func(d time.Duration, forwarded bool, err error)
}

// DefaultConfig returns the LAN defaults: loopback-safe ports, 3 voters,
// Raft timings tuned for sub-second failover (DESIGN.md §Timings).
func DefaultConfig() Config {
	lan := memberlist.DefaultLANConfig()
	return Config{
		GossipAddr:        ":7946",
		RaftAddr:          ":7947",
		Voters:            3,
		DeadNodeTimeout:   10 * time.Minute,
		HoldTimeout:       5 * time.Second,
		ReconcileInterval: 2 * time.Second,
		RejoinInterval:    30 * time.Second,
		StabilizationTime: 3 * time.Second,
		MaxLagEntries:     256,

		HeartbeatTimeout:   300 * time.Millisecond,
		ElectionTimeout:    300 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      20 * time.Millisecond,
		SnapshotInterval:   time.Minute,
		SnapshotThreshold:  65536,
		TrailingLogs:       131072,
		MaxAppendEntries:   128,

		ProbeInterval:       lan.ProbeInterval,
		ProbeTimeout:        lan.ProbeTimeout,
		SuspicionMult:       lan.SuspicionMult,
		GossipInterval:      lan.GossipInterval,
		PushPullInterval:    lan.PushPullInterval,
		DeadNodeReclaimTime: 30 * time.Second,

		Version: "dev",
	}
}

// Validate checks the configuration and names the first bad field.
func (c Config) Validate() error {
	if c.NodeID == "" {
		return errors.New("node id: must not be empty")
	}
	if len(c.NodeID) > 64 {
		return fmt.Errorf("node id: %d bytes, at most 64", len(c.NodeID))
	}
	if len(c.Name) > 128 {
		return fmt.Errorf("name: %d bytes, at most 128", len(c.Name))
	}
	if err := validHostPort("gossip addr", c.GossipAddr); err != nil {
		return err
	}
	if err := validHostPort("raft addr", c.RaftAddr); err != nil {
		return err
	}
	if c.AdvertiseHost == "" {
		return errors.New("advertise host: must not be empty")
	}
	if ip := net.ParseIP(c.AdvertiseHost); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("advertise host: %q is not an address peers can reach", c.AdvertiseHost)
	}
	if c.HTTPAddr != "" {
		if err := validHostPort("http addr", c.HTTPAddr); err != nil {
			return err
		}
	}
	for _, j := range c.Join {
		if err := validHostPort("join", j); err != nil {
			return err
		}
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > 9 {
		return fmt.Errorf("bootstrap expect: %d must be between 0 and 9", c.BootstrapExpect)
	}
	if c.Voters < 1 || c.Voters > 5 || c.Voters%2 == 0 {
		return fmt.Errorf("voters: %d must be 1, 3 or 5", c.Voters)
	}
	switch len(c.GossipKey) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("gossip key: %d bytes, must be 16, 24 or 32", len(c.GossipKey))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		min  time.Duration
	}{
		{"dead node timeout", c.DeadNodeTimeout, 100 * time.Millisecond},
		{"hold timeout", c.HoldTimeout, 10 * time.Millisecond},
		{"reconcile interval", c.ReconcileInterval, 10 * time.Millisecond},
		{"rejoin interval", c.RejoinInterval, 100 * time.Millisecond},
		{"heartbeat timeout", c.HeartbeatTimeout, 5 * time.Millisecond},
		{"election timeout", c.ElectionTimeout, 5 * time.Millisecond},
		{"leader lease timeout", c.LeaderLeaseTimeout, 5 * time.Millisecond},
		{"commit timeout", c.CommitTimeout, time.Millisecond},
		{"snapshot interval", c.SnapshotInterval, 5 * time.Millisecond},
		{"probe interval", c.ProbeInterval, 10 * time.Millisecond},
		{"probe timeout", c.ProbeTimeout, 5 * time.Millisecond},
		{"gossip interval", c.GossipInterval, 5 * time.Millisecond},
		{"push pull interval", c.PushPullInterval, 10 * time.Millisecond},
	} {
		if d.v < d.min {
			return fmt.Errorf("%s: %s is below the minimum %s", d.name, d.v, d.min)
		}
	}
	if c.StabilizationTime < 0 {
		return fmt.Errorf("stabilization time: %s must not be negative", c.StabilizationTime)
	}
	if c.DeadNodeReclaimTime < 0 {
		return fmt.Errorf("dead node reclaim time: %s must not be negative", c.DeadNodeReclaimTime)
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		return fmt.Errorf("leader lease timeout: %s must not exceed heartbeat timeout %s", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		return fmt.Errorf("election timeout: %s must be at least heartbeat timeout %s", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.MaxAppendEntries < 1 || c.MaxAppendEntries > 1024 {
		return fmt.Errorf("max append entries: %d must be between 1 and 1024", c.MaxAppendEntries)
	}
	if c.SnapshotThreshold == 0 {
		return errors.New("snapshot threshold: must be positive")
	}
	if c.SuspicionMult < 1 {
		return fmt.Errorf("suspicion mult: %d must be positive", c.SuspicionMult)
	}
	if c.ProbeTimeout > c.ProbeInterval {
		return fmt.Errorf("probe timeout: %s must not exceed probe interval %s", c.ProbeTimeout, c.ProbeInterval)
	}
	// The gossip metadata must fit memberlist's 512-byte limit even with
	// the widest port numbers.
	m := meta{
		Name: c.Name, Raft: net.JoinHostPort(c.AdvertiseHost, "65535"), HTTP: c.HTTPAddr,
		Expect: c.BootstrapExpect, Version: c.Version, State: true,
	}
	if b, err := m.encode(); err != nil {
		return fmt.Errorf("gossip metadata: %w", err)
	} else if len(b) > memberlist.MetaMaxSize {
		return fmt.Errorf("gossip metadata: %d bytes exceeds %d (shorten name or version)", len(b), memberlist.MetaMaxSize)
	}
	return nil
}

func validHostPort(field, v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%s: %q is not host:port: %w", field, v, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%s: %q has a bad port", field, v)
	}
	return nil
}

// logger returns the configured logger or one that discards.
func (c Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}
