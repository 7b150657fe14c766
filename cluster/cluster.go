package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// logCacheSize is how many of the newest Raft log entries are kept in
// memory in front of the log store: 1,024 entries of a few hundred bytes,
// about 50 ms of log at 20,000 commands a second. Consul keeps 512
// (raftLogCacheSize in agent/consul/server.go).
const logCacheSize = 1024

// Cluster is one node's membership and consensus. Create it with New, run it
// with Start, stop it with Close.
type Cluster struct {
	cfg      Config
	log      *slog.Logger
	fsm      raft.FSM
	tracker  *fsmTracker
	logs     raft.LogStore
	stable   raft.StableStore
	snaps    raft.SnapshotStore
	authKey  []byte
	logLimit *logLimiter

	lifeMu  sync.Mutex
	started bool
	closed  bool
	ctx     context.Context // lifetime of background goroutines
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closing chan struct{} // closed when Close begins; Apply stops holding

	ln         net.Listener
	mux        *mux
	trans      *raft.NetworkTransport
	raft       *raft.Raft
	ml         *memberlist.Memberlist
	rpcServer  *rpcServer
	rpc        *rpcClient
	observer   *raft.Observer
	raftAddr   string // advertised host:port
	gossipAddr string // advertised host:port

	hasState atomic.Bool
	leaving  atomic.Bool // announced in gossip metadata before a graceful leave
	raftUp   atomic.Bool // c.raft is set (RPC and Apply may use it)
	up       atomic.Bool // Start completed (gossip fields are set)
	members  *memberTable
	events   chan string   // member IDs that changed; drained by the leader loop
	wake     chan struct{} // wakes the bootstrap-expect loop
	notifyCh chan bool     // raft leadership changes (ordered)

	leaderMu      sync.Mutex
	leaderChanged chan struct{} // closed and replaced on every leader change

	leaderState atomic.Pointer[leaderState] // non-nil while this node runs the leader loop

	counters counters
}

type counters struct {
	leaderChanges, local, forwarded, failed, retries, configChanges atomic.Uint64
}

// Counters are cumulative counts since Start, for metrics.
type Counters struct {
	LeaderChanges    uint64 // leader observations naming a new leader (or none)
	LocalApplies     uint64 // successful Apply calls committed on this node as leader
	ForwardedApplies uint64 // successful Apply calls forwarded to the leader
	FailedApplies    uint64 // Apply calls that returned an error
	ApplyRetries     uint64 // attempts repeated within the hold window
	ConfigChanges    uint64 // Raft configuration changes this node made as leader
}

// Counters returns the cumulative counters.
func (c *Cluster) Counters() Counters {
	return Counters{
		LeaderChanges:    c.counters.leaderChanges.Load(),
		LocalApplies:     c.counters.local.Load(),
		ForwardedApplies: c.counters.forwarded.Load(),
		FailedApplies:    c.counters.failed.Load(),
		ApplyRetries:     c.counters.retries.Load(),
		ConfigChanges:    c.counters.configChanges.Load(),
	}
}

// New validates the configuration and prepares a Cluster. It starts no
// goroutines and opens no sockets. fsm receives committed commands; logs,
// stable and snaps are the Raft stores (owned by the caller, who closes them
// after Close).
func New(cfg Config, fsm raft.FSM, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cluster config: %w", err)
	}
	if fsm == nil || logs == nil || stable == nil || snaps == nil {
		return nil, errors.New("cluster: fsm, log store, stable store and snapshot store are required")
	}
	c := &Cluster{
		cfg:           cfg,
		log:           cfg.logger().With("node_id", cfg.NodeID),
		logs:          logs,
		stable:        stable,
		snaps:         snaps,
		authKey:       deriveAuthKey(cfg.GossipKey),
		logLimit:      newLogLimiter(10 * time.Second),
		closing:       make(chan struct{}),
		events:        make(chan string, 256),
		wake:          make(chan struct{}, 1),
		notifyCh:      make(chan bool, 16),
		leaderChanged: make(chan struct{}),
	}
	c.fsm, c.tracker = newFSMTracker(fsm, snaps)
	c.members = newMemberTable(c.memberChanged)
	return c, nil
}

// memberChanged runs inside memberlist's event callbacks: never block.
func (c *Cluster) memberChanged(id string) {
	select {
	case c.events <- id:
	default: // the periodic full reconcile covers dropped events
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Start binds the Raft/RPC listener and gossip, starts Raft, bootstraps when
// the rules allow it and starts joining the seeds in the background. It
// returns once the node is running; it does not wait for a leader.
func (c *Cluster) Start(ctx context.Context) (err error) {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.started {
		return errors.New("cluster: already started")
	}
	c.started = true
	c.ctx, c.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			c.closed = true
			close(c.closing)
			c.cancel()
			err = errors.Join(err, c.teardown(false))
		}
	}()

	if len(c.cfg.GossipKey) == 0 {
		c.log.Warn("NO GOSSIP KEY: gossip and internal cluster traffic are unauthenticated and unencrypted; anyone who reaches the gossip or raft port can join or forge membership. Set a gossip key in production.")
	}

	// 1. The Raft/RPC listener, so the advertised Raft port is known.
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", c.cfg.RaftAddr)
	if err != nil {
		return fmt.Errorf("listen raft %s: %w", c.cfg.RaftAddr, err)
	}
	c.ln = ln
	port := ln.Addr().(*net.TCPAddr).Port
	c.raftAddr = net.JoinHostPort(c.cfg.AdvertiseHost, strconv.Itoa(port))
	c.rpcServer = newRPCServer(c.handleRPC, c.log)
	c.rpc = newRPCClient(c.authKey, c.log)
	c.mux = newMux(ln, advertiseAddr(c.raftAddr), c.authKey, c.log, c.logLimit, c.rpcServer.serve)
	c.mux.start()

	// 2. Raft.
	c.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  c.mux.raft,
		MaxPool: 4,
		Timeout: 10 * time.Second,
		Logger:  newHCLog(c.log, "raft-net", c.logLimit),
	})
	rc := c.raftConfig()
	existing, err := raft.HasExistingState(c.logs, c.stable, c.snaps)
	if err != nil {
		return fmt.Errorf("check raft state: %w", err)
	}
	c.hasState.Store(existing)
	// Raft reads every entry back from the log store twice: the leader to
	// send it to each follower, a follower to apply what it stored. The
	// cache answers both from memory for the newest entries (Consul keeps
	// 512 the same way); the store stays the only durable copy.
	logs, err := raft.NewLogCache(logCacheSize, c.logs)
	if err != nil {
		return fmt.Errorf("raft log cache: %w", err)
	}
	r, err := raft.NewRaft(rc, c.fsm, logs, c.stable, c.snaps, c.trans)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	c.raft = r
	c.raftUp.Store(true)
	obsCh := make(chan raft.Observation, 64)
	c.observer = raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			return true
		}
		return false
	})
	r.RegisterObserver(c.observer)
	c.wg.Add(2)
	go c.observeLoop(c.ctx, obsCh)
	go c.notifyLoop(c.ctx)

	switch {
	case existing:
		c.log.Info("raft state found; resuming", "last_index", r.LastIndex())
	case len(c.cfg.Join) == 0 && c.cfg.BootstrapExpect <= 1,
		c.cfg.BootstrapExpect == 1:
		if err := c.bootstrap([]raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(c.cfg.NodeID), Address: raft.ServerAddress(c.raftAddr)}}); err != nil {
			return err
		}
	case c.cfg.BootstrapExpect > 1:
		c.log.Info("waiting for peers to bootstrap", "bootstrap_expect", c.cfg.BootstrapExpect)
	default:
		c.log.Info("no raft state; waiting to be added by the leader", "join", c.cfg.Join)
	}

	// 3. Gossip.
	advIP, err := resolveAdvertiseIP(ctx, c.cfg.AdvertiseHost)
	if err != nil {
		return err
	}
	mc, err := c.memberlistConfig(advIP)
	if err != nil {
		return err
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("start gossip on %s: %w", c.cfg.GossipAddr, err)
	}
	c.ml = ml
	ln0 := ml.LocalNode()
	c.gossipAddr = net.JoinHostPort(c.cfg.AdvertiseHost, strconv.Itoa(int(ln0.Port)))

	c.wg.Add(2)
	go c.joinLoop(c.ctx)
	go c.housekeeping(c.ctx)
	if !existing && c.cfg.BootstrapExpect > 1 {
		c.wg.Add(1)
		go c.bootstrapExpectLoop(c.ctx)
	}
	c.up.Store(true)
	c.log.Info("cluster started", "raft_addr", c.raftAddr, "gossip_addr", c.gossipAddr, "name", c.cfg.Name, "version", c.cfg.Version)
	return nil
}

func (c *Cluster) raftConfig() *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.cfg.NodeID)
	rc.HeartbeatTimeout = c.cfg.HeartbeatTimeout
	rc.ElectionTimeout = c.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = c.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = c.cfg.CommitTimeout
	rc.SnapshotInterval = c.cfg.SnapshotInterval
	rc.SnapshotThreshold = c.cfg.SnapshotThreshold
	rc.TrailingLogs = c.cfg.TrailingLogs
	rc.MaxAppendEntries = c.cfg.MaxAppendEntries
	rc.NotifyCh = c.notifyCh
	rc.Logger = newHCLog(c.log, "raft", c.logLimit)
	// The FSM is persistent and restores itself from the snapshot store
	// before New when it is behind; raft must not restore it again.
	rc.NoSnapshotRestoreOnStart = true
	// A removed node stays up: it may be re-added (e.g. after it left
	// gracefully and restarted) and keeps serving reads meanwhile.
	rc.ShutdownOnRemove = false
	rc.NoLegacyTelemetry = true
	return rc
}

func (c *Cluster) bootstrap(servers []raft.Server) error {
	err := c.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		c.log.Info("bootstrap skipped: raft state already exists")
		return nil
	}
	if err != nil {
		return fmt.Errorf("bootstrap raft: %w", err)
	}
	ids := make([]string, len(servers))
	for i, s := range servers {
		ids[i] = string(s.ID)
	}
	c.log.Info("bootstrapped cluster", "voters", ids)
	c.markHasState()
	return nil
}

// markHasState records that this node is part of a Raft cluster and tells
// gossip (bootstrap-expect peers check it).
func (c *Cluster) markHasState() {
	if c.hasState.Swap(true) {
		return
	}
	if c.ml != nil {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := c.ml.UpdateNode(5 * time.Second); err != nil {
				c.log.Debug("update gossip metadata", "err", err)
			}
		}()
	}
}

// observeLoop turns raft leader observations into leaderChanged broadcasts.
func (c *Cluster) observeLoop(ctx context.Context, ch chan raft.Observation) {
	defer c.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-ch:
			if lo, ok := o.Data.(raft.LeaderObservation); ok {
				c.counters.leaderChanges.Add(1)
				if lo.LeaderID != "" {
					c.log.Info("leader changed", "leader_id", string(lo.LeaderID), "leader_addr", string(lo.LeaderAddr))
					if lo.LeaderID != raft.ServerID(c.cfg.NodeID) {
						c.markHasState()
					}
				} else {
					c.log.Info("leader lost")
				}
			}
			c.signalLeaderChange()
		}
	}
}

func (c *Cluster) signalLeaderChange() {
	c.leaderMu.Lock()
	close(c.leaderChanged)
	c.leaderChanged = make(chan struct{})
	c.leaderMu.Unlock()
}

// leaderChange returns a channel closed at the next leader change.
func (c *Cluster) leaderChange() <-chan struct{} {
	c.leaderMu.Lock()
	defer c.leaderMu.Unlock()
	return c.leaderChanged
}

// housekeeping prunes the member table.
func (c *Cluster) housekeeping(ctx context.Context) {
	defer c.wg.Done()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cfg := c.raft.GetConfiguration().Configuration()
			in := make(map[string]bool, len(cfg.Servers))
			for _, s := range cfg.Servers {
				in[string(s.ID)] = true
			}
			keep := max(time.Minute, 2*c.cfg.DeadNodeReclaimTime)
			c.members.prune(func(id string) bool { return in[id] }, keep, c.cfg.NodeID)
		}
	}
}

// RaftAddr is the advertised Raft/RPC address (actual port after port 0).
func (c *Cluster) RaftAddr() string { return c.raftAddr }

// GossipAddr is the advertised gossip address (actual port after port 0):
// what other nodes pass as a join seed.
func (c *Cluster) GossipAddr() string { return c.gossipAddr }

// NodeID is this node's ID.
func (c *Cluster) NodeID() string { return c.cfg.NodeID }

// Close leaves gracefully: transfers leadership if leader, leaves gossip,
// shuts Raft down and closes the listener. It is idempotent; later calls
// return nil.
func (c *Cluster) Close() error {
	return c.close(true)
}

// kill stops the node abruptly, as a crash would look to the others: no
// leadership transfer, no gossip leave. Tests use it.
func (c *Cluster) kill() error {
	return c.close(false)
}

func (c *Cluster) close(graceful bool) error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	close(c.closing)
	if !c.started {
		return nil
	}
	return c.teardown(graceful)
}

// teardown releases in reverse order of Start. lifeMu is held.
func (c *Cluster) teardown(graceful bool) error {
	var errs []error
	if graceful && c.up.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), c.leaveTimeout())
		if err := c.leave(ctx); err != nil {
			c.log.Warn("graceful leave incomplete", "err", err)
		}
		cancel()
	}
	if c.ml != nil {
		if err := c.ml.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("shutdown gossip: %w", err))
		}
	}
	if c.cancel != nil {
		c.cancel()
	}
	if c.raft != nil {
		if c.observer != nil {
			c.raft.DeregisterObserver(c.observer)
		}
		if err := c.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("shutdown raft: %w", err))
		}
	}
	if c.trans != nil {
		if err := c.trans.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft transport: %w", err))
		}
	}
	if c.rpc != nil {
		c.rpc.close()
	}
	if c.rpcServer != nil {
		c.rpcServer.close()
	}
	if c.mux != nil {
		if err := c.mux.close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft listener: %w", err))
		}
	} else if c.ln != nil {
		c.ln.Close()
	}
	c.wg.Wait()
	c.log.Info("cluster closed", "graceful", graceful)
	return errors.Join(errs...)
}

func (c *Cluster) voterCount() int {
	n := 0
	for _, s := range c.raft.GetConfiguration().Configuration().Servers {
		if s.Suffrage == raft.Voter {
			n++
		}
	}
	return n
}
