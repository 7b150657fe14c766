package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testCluster is a set of nodes started in one test.
type testCluster struct {
	t     *testing.T
	logs  *syncBuffer
	nodes []*testNode
}

func newTestCluster(t *testing.T) *testCluster {
	t.Helper()
	return &testCluster{t: t, logs: testLogs(t)}
}

// add creates and starts a node; mutate adjusts its config.
func (tc *testCluster) add(name string, mutate func(*Config)) *testNode {
	tc.t.Helper()
	cfg := testConfig(name)
	if mutate != nil {
		mutate(&cfg)
	}
	n := newTestNode(tc.t, tc.logs, cfg)
	n.start()
	tc.nodes = append(tc.nodes, n)
	return n
}

// running returns the nodes whose cluster is not closed.
func (tc *testCluster) running() []*testNode {
	var out []*testNode
	for _, n := range tc.nodes {
		select {
		case <-n.c.closing:
		default:
			out = append(out, n)
		}
	}
	return out
}

func (tc *testCluster) byID(id string) *testNode {
	for _, n := range tc.running() {
		if n.id() == id {
			return n
		}
	}
	return nil
}

// waitLeader waits until every running node names the same leader, which
// is one of them and says it leads; it returns that node.
func (tc *testCluster) waitLeader(d time.Duration) *testNode {
	tc.t.Helper()
	var leader *testNode
	waitFor(tc.t, d, "one agreed leader", func() error {
		leader = nil
		var id string
		for _, n := range tc.running() {
			_, lid := n.c.raft.LeaderWithID()
			if lid == "" {
				return fmt.Errorf("%s knows no leader", n.cfg.Name)
			}
			if id != "" && string(lid) != id {
				return fmt.Errorf("leaders differ: %s vs %s", id, lid)
			}
			id = string(lid)
		}
		leader = tc.byID(id)
		if leader == nil || leader.c.raft.State() != raft.Leader {
			return fmt.Errorf("leader %s is not a running leader", id)
		}
		return nil
	})
	return leader
}

// configOf returns sorted voter and non-voter IDs in n's Raft configuration.
func configOf(n *testNode) (voters, nonvoters []string) {
	for _, s := range n.c.raft.GetConfiguration().Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		} else {
			nonvoters = append(nonvoters, string(s.ID))
		}
	}
	sort.Strings(voters)
	sort.Strings(nonvoters)
	return voters, nonvoters
}

func (tc *testCluster) waitConfig(d time.Duration, what string, cond func(voters, nonvoters []string) error) {
	tc.t.Helper()
	waitFor(tc.t, d, what, func() error {
		var leader *testNode
		for _, n := range tc.running() {
			if n.c.raft.State() == raft.Leader {
				leader = n
			}
		}
		if leader == nil {
			return errors.New("no leader")
		}
		v, nv := configOf(leader)
		return cond(v, nv)
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestJoinNeverBootstraps: a node with Join waits without a leader until a
// cluster adds it, even when its seed is unreachable for a while.
func TestJoinNeverBootstraps(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	tc := newTestCluster(t)
	seedPort := freePort(t)
	seed := fmt.Sprintf("127.0.0.1:%d", seedPort)
	b := tc.add("joiner", func(c *Config) { c.Join = []string{seed} })

	time.Sleep(1500 * time.Millisecond) // give it every chance to (wrongly) elect itself
	if _, id := b.c.raft.LeaderWithID(); id != "" {
		t.Fatalf("joiner knows leader %s without a cluster", id)
	}
	if b.c.raft.LastIndex() != 0 || b.c.hasState.Load() {
		t.Fatalf("joiner has raft state: last index %d", b.c.raft.LastIndex())
	}
	if err := b.c.Ready(); !errors.Is(err, ErrNotReady) {
		t.Fatalf("joiner ready = %v, want ErrNotReady", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := b.c.Apply(ctx, []byte("early"))
	cancel()
	if err == nil {
		t.Fatal("apply without any leader succeeded")
	}

	// The seed appears: the joiner's retry finds it and the leader adds it.
	a := tc.add("seed", func(c *Config) { c.GossipAddr = seed })
	leader := tc.waitLeader(10 * time.Second)
	if leader != a {
		t.Fatalf("leader is %s, want the seed", leader.cfg.Name)
	}
	tc.waitConfig(10*time.Second, "joiner in configuration", func(v, nv []string) error {
		if len(v)+len(nv) != 2 {
			return fmt.Errorf("voters %v non-voters %v", v, nv)
		}
		return nil
	})
	if out, err := b.c.Apply(context.Background(), []byte("via-joiner")); err != nil || !strings.HasPrefix(string(out), "ok:via-joiner") {
		t.Fatalf("forwarded apply = %q, %v", out, err)
	}
	if cn := b.c.Counters(); cn.ForwardedApplies != 1 || cn.LocalApplies != 0 {
		t.Fatalf("joiner counters = %+v", cn)
	}
	if strings.Count(tc.logs.String(), "bootstrapped cluster") != 1 {
		t.Fatalf("exactly one bootstrap expected")
	}
}

// TestBootstrapExpect starts three nodes with BootstrapExpect 3 at once,
// repeatedly, and checks that exactly one cluster forms each time.
func TestBootstrapExpect(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	rounds := 10
	for r := range rounds {
		t.Run(fmt.Sprintf("round%d", r), func(t *testing.T) {
			tc := newTestCluster(t)
			n1 := tc.add("e1", func(c *Config) { c.BootstrapExpect = 3 })
			var wg sync.WaitGroup
			for i := 2; i <= 3; i++ {
				cfg := testConfig(fmt.Sprintf("e%d", i))
				cfg.BootstrapExpect = 3
				cfg.Join = []string{n1.c.GossipAddr()}
				n := newTestNode(t, tc.logs, cfg)
				tc.nodes = append(tc.nodes, n)
				wg.Add(1)
				go func() { defer wg.Done(); n.start() }()
			}
			wg.Wait()
			leader := tc.waitLeader(15 * time.Second)
			want := []string{}
			for _, n := range tc.nodes {
				want = append(want, n.id())
			}
			sort.Strings(want)
			for _, n := range tc.nodes {
				waitFor(t, 5*time.Second, "configuration replicated", func() error {
					v, nv := configOf(n)
					if fmt.Sprint(v) != fmt.Sprint(want) || len(nv) != 0 {
						return fmt.Errorf("%s config voters %v non-voters %v, want voters %v", n.cfg.Name, v, nv, want)
					}
					return nil
				})
			}
			// One cluster: a write on the leader reaches every node.
			applyCtx(t, leader.c, "one")
			for _, n := range tc.nodes {
				waitFor(t, 5*time.Second, "write replicated", func() error {
					if !n.fsm.has("one") {
						return fmt.Errorf("%s lacks the write", n.cfg.Name)
					}
					return nil
				})
			}
		})
	}
}

// TestGrowAndForward adds nodes to a running cluster: they enter as
// non-voters and are promoted up to Voters; the rest stay non-voters whose
// writes are forwarded.
func TestGrowAndForward(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	for _, tt := range []struct {
		voters, nodes, wantVoters int
	}{
		{3, 5, 3},
		{5, 5, 5},
		{5, 6, 5}, // a 6th node with --voters 5 stays a non-voter and still serves reads and writes
	} {
		t.Run(fmt.Sprintf("voters%d_nodes%d", tt.voters, tt.nodes), func(t *testing.T) {
			tc := newTestCluster(t)
			first := tc.add("g1", func(c *Config) { c.Voters = tt.voters })
			waitFor(t, 5*time.Second, "first ready", first.c.Ready)
			for i := 2; i <= tt.nodes; i++ {
				tc.add(fmt.Sprintf("g%d", i), func(c *Config) {
					c.Voters = tt.voters
					c.Join = []string{first.c.GossipAddr()}
				})
			}
			tc.waitConfig(20*time.Second, "voters promoted", func(v, nv []string) error {
				if len(v) != tt.wantVoters || len(v)+len(nv) != tt.nodes {
					return fmt.Errorf("voters %d non-voters %d", len(v), len(nv))
				}
				return nil
			})
			leader := tc.waitLeader(5 * time.Second)
			// Stable: several reconcile passes later, still at the target.
			time.Sleep(5 * 200 * time.Millisecond)
			v, nv := configOf(leader)
			if len(v) != tt.wantVoters {
				t.Fatalf("voters drifted to %d", len(v))
			}
			// Every node, including non-voters, accepts writes.
			for i, n := range tc.running() {
				key := fmt.Sprintf("w%d", i)
				out := applyCtx(t, n.c, key)
				if !strings.HasPrefix(string(out), "ok:"+key+":") {
					t.Fatalf("apply on %s = %q", n.cfg.Name, out)
				}
			}
			if len(nv) > 0 {
				nvNode := tc.byID(nv[0])
				st := nvNode.c.LocalStatus()
				if st.Role != RoleNonvoter {
					t.Fatalf("non-voter reports role %q", st.Role)
				}
				if err := nvNode.c.WaitSync(context.Background()); err != nil {
					t.Fatalf("wait sync on non-voter: %v", err)
				}
				for i := range tc.running() {
					if !nvNode.fsm.has(fmt.Sprintf("w%d", i)) {
						t.Fatalf("non-voter lacks w%d after WaitSync", i)
					}
				}
			}
			// Members and PeerStatus agree with the configuration.
			ms := leader.c.Members()
			if len(ms) != tt.nodes {
				t.Fatalf("members = %+v", ms)
			}
			roles := map[string]int{}
			for _, m := range ms {
				roles[m.Role]++
				if m.Gossip != GossipAlive {
					t.Fatalf("member %s gossip %s", m.Name, m.Gossip)
				}
				st, err := leader.c.PeerStatus(context.Background(), m.ID)
				if err != nil || st.ID != m.ID || st.Role != m.Role {
					t.Fatalf("peer status %s = %+v, %v (member role %s)", m.Name, st, err, m.Role)
				}
			}
			if roles[RoleLeader] != 1 || roles[RoleVoter] != tt.wantVoters-1 || roles[RoleNonvoter] != tt.nodes-tt.wantVoters {
				t.Fatalf("roles = %v", roles)
			}
		})
	}
}
