package node

import (
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/surgefund/surge/cluster"
	"github.com/surgefund/surge/storage"
)

var _ prometheus.Collector = (*nodeMetrics)(nil)

// newMetricsRegistry returns the node's own registry (never the global
// default one) with the Go runtime and process collectors.
func newMetricsRegistry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

// nodeMetrics reads the cluster and storage state at scrape time (a
// prometheus.Collector) and keeps the apply histogram the cluster feeds
// through its OnApply hook.
type nodeMetrics struct {
	cluster atomic.Pointer[cluster.Cluster] // set once the cluster exists
	fsm     *storage.FSM
	logs    *storage.LogStore
	pager   *storage.Pager // nil without --rss-limit

	applies   *prometheus.HistogramVec // path: local|forwarded, result: ok|error
	forwarded prometheus.Counter

	raftState, raftTerm, commitIndex, appliedIndex, lastIndex, lastContact, hasLeader, leaderChanges *prometheus.Desc
	raftServers, gossipMembers, donations, raised, badgerSize, fsmApplied                            *prometheus.Desc
	rssLimit, pagerRounds, pagerAdvised                                                              *prometheus.Desc
}

var raftStates = []string{"leader", "follower", "candidate", "shutdown"}

// gossipStates are reported even when empty. "suspect" is part of the
// contract although memberlist v0.7 does not expose it (cluster reads such
// members as alive).
var gossipStates = []string{cluster.GossipAlive, "suspect", cluster.GossipDead, cluster.GossipLeft}

// newNodeMetrics creates the node's collector and counters and registers
// them on reg. logs and pager may be nil.
func newNodeMetrics(reg prometheus.Registerer, fsm *storage.FSM, logs *storage.LogStore, pager *storage.Pager) (*nodeMetrics, error) {
	m := &nodeMetrics{
		fsm:   fsm,
		logs:  logs,
		pager: pager,
		leaderChanges: prometheus.NewDesc("surge_raft_leader_changes_total",
			"Leader changes this node observed (including losing the leader).", nil, nil),
		applies: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "surge_raft_apply_duration_seconds",
			Help:    "Time to commit a write through Raft as seen by the node that received it, by path (local on the leader or forwarded) and result.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"path", "result"}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_raft_forwarded_writes_total",
			Help: "Writes this node forwarded to the leader.",
		}),
		raftState:    prometheus.NewDesc("surge_raft_state", "1 for the Raft state this node is in, 0 for the others.", []string{"state"}, nil),
		raftTerm:     prometheus.NewDesc("surge_raft_term", "Current Raft term.", nil, nil),
		commitIndex:  prometheus.NewDesc("surge_raft_commit_index", "Highest log index this node knows to be committed.", nil, nil),
		appliedIndex: prometheus.NewDesc("surge_raft_applied_index", "Highest log index applied to the state machine.", nil, nil),
		lastIndex:    prometheus.NewDesc("surge_raft_last_index", "Last index in this node's Raft log.", nil, nil),
		lastContact:  prometheus.NewDesc("surge_raft_last_contact_seconds", "Seconds since this follower last heard from the leader (0 on the leader; absent when never).", nil, nil),
		hasLeader:    prometheus.NewDesc("surge_raft_has_leader", "1 when this node knows a leader.", nil, nil),
		raftServers:  prometheus.NewDesc("surge_raft_servers", "Servers in the Raft configuration, by suffrage.", []string{"suffrage"}, nil),
		gossipMembers: prometheus.NewDesc("surge_gossip_members", "Gossip members by state, as this node sees them.",
			[]string{"state"}, nil),
		donations:  prometheus.NewDesc("surge_donations_total", "Donations counted in the public total, by currency (a gauge: a full refund removes one).", []string{"currency"}, nil),
		raised:     prometheus.NewDesc("surge_raised_minor", "Public total (confirmed minus refunded) in minor units, by currency.", []string{"currency"}, nil),
		badgerSize: prometheus.NewDesc("surge_badger_size_bytes", "On-disk size of a Badger database, by db (fsm|raft) and kind (lsm|vlog).", []string{"db", "kind"}, nil),
		fsmApplied: prometheus.NewDesc("surge_fsm_applied_index", "Last Raft index whose effects the state machine stored.", nil, nil),
		rssLimit:   prometheus.NewDesc("surge_rss_limit_bytes", "The --rss-limit the node keeps its resident set to (absent without one).", nil, nil),
		pagerRounds: prometheus.NewDesc("surge_pager_rounds_total",
			"Checks that found the resident set within an eighth of --rss-limit or over it, and paged out the stores' mapped tables.", nil, nil),
		pagerAdvised: prometheus.NewDesc("surge_pager_advised_bytes_total",
			"Total length of the table mappings passed to madvise(MADV_PAGEOUT).", nil, nil),
	}
	for _, c := range []prometheus.Collector{m, m.applies, m.forwarded} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// setCluster makes the collector read c from now on.
func (m *nodeMetrics) setCluster(c *cluster.Cluster) { m.cluster.Store(c) }

// ObserveApply records one write through the cluster (the cluster's apply
// hook).
func (m *nodeMetrics) ObserveApply(d time.Duration, forwarded bool, err error) {
	path, result := "local", "ok"
	if forwarded {
		path = "forwarded"
		m.forwarded.Inc()
	}
	if err != nil {
		result = "error"
	}
	m.applies.WithLabelValues(path, result).Observe(d.Seconds())
}

// Describe sends the descriptors of the scrape-time metrics.
func (m *nodeMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.raftState, m.raftTerm, m.commitIndex, m.appliedIndex, m.lastIndex,
		m.lastContact, m.hasLeader, m.leaderChanges, m.raftServers, m.gossipMembers, m.donations, m.raised, m.badgerSize, m.fsmApplied,
		m.rssLimit, m.pagerRounds, m.pagerAdvised} {
		ch <- d
	}
}

// Collect reads the state now.
func (m *nodeMetrics) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		if mt, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...); err == nil {
			ch <- mt
		}
	}
	counter := func(d *prometheus.Desc, v float64) {
		if mt, err := prometheus.NewConstMetric(d, prometheus.CounterValue, v); err == nil {
			ch <- mt
		}
	}
	if c := m.cluster.Load(); c != nil {
		st := c.LocalStatus()
		for _, s := range raftStates {
			gauge(m.raftState, b2f(strings.EqualFold(st.State, s)), s)
		}
		gauge(m.raftTerm, float64(st.Term))
		gauge(m.commitIndex, float64(st.CommitIndex))
		gauge(m.appliedIndex, float64(st.AppliedIndex))
		gauge(m.lastIndex, float64(st.LastIndex))
		if st.LastContactMS >= 0 {
			gauge(m.lastContact, float64(st.LastContactMS)/1000)
		}
		gauge(m.hasLeader, b2f(st.LeaderID != ""))
		counter(m.leaderChanges, float64(c.Counters().LeaderChanges))
		counts := map[string]int{}
		servers := map[string]int{"voter": 0, "nonvoter": 0}
		for _, mem := range c.Members() {
			counts[mem.Gossip]++
			switch mem.Role {
			case cluster.RoleLeader, cluster.RoleVoter:
				servers["voter"]++
			case cluster.RoleNonvoter:
				servers["nonvoter"]++
			}
		}
		for _, s := range gossipStates {
			gauge(m.gossipMembers, float64(counts[s]), s)
		}
		for _, s := range []string{"voter", "nonvoter"} {
			gauge(m.raftServers, float64(servers[s]), s)
		}
	}
	if m.fsm != nil {
		for _, t := range m.fsm.AllTotals() {
			gauge(m.donations, float64(t.Donations), string(t.Currency))
			gauge(m.raised, float64(t.RaisedMinor), string(t.Currency))
		}
		gauge(m.fsmApplied, float64(m.fsm.AppliedIndex()))
		lsm, vlog := m.fsm.Size()
		gauge(m.badgerSize, float64(lsm), "fsm", "lsm")
		gauge(m.badgerSize, float64(vlog), "fsm", "vlog")
	}
	if m.logs != nil {
		lsm, vlog := m.logs.Size()
		gauge(m.badgerSize, float64(lsm), "raft", "lsm")
		gauge(m.badgerSize, float64(vlog), "raft", "vlog")
	}
	if m.pager != nil {
		st := m.pager.Stats()
		gauge(m.rssLimit, float64(st.Limit))
		counter(m.pagerRounds, float64(st.Rounds))
		counter(m.pagerAdvised, float64(st.AdvisedBytes))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
