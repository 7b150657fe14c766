package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// startVoters starts a first node and joins n-1 more, and waits until the
// configuration has want voters and n servers.
func startVoters(t *testing.T, tc *testCluster, n, want int, mutate func(*Config)) *testNode {
	t.Helper()
	first := tc.add("n1", mutate)
	waitFor(t, 5*time.Second, "first node ready", first.c.Ready)
	for i := 2; i <= n; i++ {
		tc.add(fmt.Sprintf("n%d", i), func(c *Config) {
			if mutate != nil {
				mutate(c)
			}
			c.Join = []string{first.c.GossipAddr()}
		})
	}
	tc.waitConfig(20*time.Second, "cluster formed", func(v, nv []string) error {
		if len(v) != want || len(v)+len(nv) != n {
			return fmt.Errorf("voters %v non-voters %v", v, nv)
		}
		return nil
	})
	return tc.waitLeader(5 * time.Second)
}

// writer applies unique keys in a loop and records what was acknowledged.
type writer struct {
	mu      sync.Mutex
	acked   map[string]time.Time // key -> when Apply returned success
	started map[string]time.Time // key -> when Apply was called
	errs    []error
}

// firstAckAfter returns how long after t the first write that started at or
// after t was acknowledged.
func (w *writer) firstAckAfter(t time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var first time.Time
	for k, at := range w.acked {
		if st := w.started[k]; !st.Before(t) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	if first.IsZero() {
		return -1
	}
	return first.Sub(t)
}

func (w *writer) run(ctx context.Context, n *testNode, prefix string) {
	for i := 0; ctx.Err() == nil; i++ {
		key := fmt.Sprintf("%s-%d", prefix, i)
		w.mu.Lock()
		w.started[key] = time.Now()
		w.mu.Unlock()
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := n.c.Apply(actx, []byte(key))
		cancel()
		w.mu.Lock()
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				w.errs = append(w.errs, fmt.Errorf("%s: %w", key, err))
			}
		} else {
			w.acked[key] = time.Now()
		}
		w.mu.Unlock()
		if errors.Is(err, ErrClosed) {
			return
		}
	}
}

// TestKillLeader kills the leader abruptly under concurrent writes from the
// survivors: a new leader takes over, the writes keep succeeding, and every
// acknowledged key is present exactly once on every survivor.
func TestKillLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	tc := newTestCluster(t)
	leader := startVoters(t, tc, 3, 3, nil)

	w := &writer{acked: map[string]time.Time{}, started: map[string]time.Time{}}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, n := range tc.running() {
		if n == leader {
			continue
		}
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.run(ctx, n, fmt.Sprintf("%s-g%d", n.cfg.Name, g))
			}()
		}
	}
	time.Sleep(500 * time.Millisecond)
	killedAt := time.Now()
	if err := leader.c.kill(); err != nil {
		t.Fatalf("kill leader: %v", err)
	}
	newLeader := tc.waitLeader(10 * time.Second)
	if newLeader == leader {
		t.Fatal("killed leader still leads")
	}
	t.Logf("kill -> new leader agreed: %s", time.Since(killedAt).Round(time.Millisecond))
	// Let writes run on the new leader for a while.
	waitFor(t, 10*time.Second, "writes after the kill", func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		n := 0
		for _, at := range w.acked {
			if at.After(killedAt) {
				n++
			}
		}
		if n < 20 {
			return fmt.Errorf("%d writes acknowledged after the kill", n)
		}
		return nil
	})
	stop()
	wg.Wait()

	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) > 0 {
		t.Fatalf("%d writes failed across the failover, first: %v", len(w.errs), w.errs[0])
	}
	w.mu.Unlock()
	t.Logf("kill -> first acknowledged write started after the kill: %s (%d writes acknowledged)", w.firstAckAfter(killedAt).Round(time.Millisecond), len(w.acked))
	w.mu.Lock()

	for _, n := range tc.running() {
		if err := n.c.WaitSync(context.Background()); err != nil {
			t.Fatalf("wait sync on %s: %v", n.cfg.Name, err)
		}
		for k := range w.acked {
			if !n.fsm.has(k) {
				t.Fatalf("%s lacks acknowledged key %s", n.cfg.Name, k)
			}
		}
		if err := n.fsm.check(); err != nil {
			t.Fatalf("%s: %v", n.cfg.Name, err)
		}
	}
}

// TestGracefulCloseOfLeader hands leadership over on Close and the leader
// that left is removed from the configuration at once.
func TestGracefulCloseOfLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	tc := newTestCluster(t)
	leader := startVoters(t, tc, 3, 3, nil)
	applyCtx(t, leader.c, "before")
	closedAt := time.Now()
	if err := leader.c.Close(); err != nil {
		t.Fatalf("close leader: %v", err)
	}
	nl := tc.waitLeader(5 * time.Second)
	t.Logf("graceful close -> new leader known everywhere: %s", time.Since(closedAt).Round(time.Millisecond))
	applyCtx(t, nl.c, "after")
	tc.waitConfig(5*time.Second, "left leader removed", func(v, nv []string) error {
		if slices.Contains(v, leader.id()) || slices.Contains(nv, leader.id()) || len(v) != 2 {
			return fmt.Errorf("voters %v non-voters %v", v, nv)
		}
		return nil
	})
	if !strings.Contains(tc.logs.String(), "leadership transferred on close") {
		t.Fatal("no leadership transfer logged")
	}
}

// TestDeadVoterReplacedAndRemoved: a dead voter gives its seat to a healthy
// non-voter, and is removed after DeadNodeTimeout.
func TestDeadVoterReplacedAndRemoved(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	tc := newTestCluster(t)
	leader := startVoters(t, tc, 4, 3, func(c *Config) { c.DeadNodeTimeout = 3 * time.Second })
	voters, nonvoters := configOf(leader)
	var victim *testNode
	for _, id := range voters {
		if id != leader.id() {
			victim = tc.byID(id)
			break
		}
	}
	spare := nonvoters[0]
	killedAt := time.Now()
	if err := victim.c.kill(); err != nil {
		t.Fatal(err)
	}
	tc.waitConfig(10*time.Second, "spare promoted in place of the dead voter", func(v, nv []string) error {
		if slices.Contains(v, victim.id()) || !slices.Contains(v, spare) || len(v) != 3 {
			return fmt.Errorf("voters %v non-voters %v", v, nv)
		}
		return nil
	})
	promotedAfter := time.Since(killedAt)
	tc.waitConfig(10*time.Second, "dead node removed", func(v, nv []string) error {
		if slices.Contains(nv, victim.id()) || slices.Contains(v, victim.id()) {
			return fmt.Errorf("voters %v non-voters %v", v, nv)
		}
		return nil
	})
	removedAfter := time.Since(killedAt)
	t.Logf("dead voter replaced after %s, removed after %s", promotedAfter.Round(time.Millisecond), removedAfter.Round(time.Millisecond))
	if removedAfter < 3*time.Second {
		t.Fatalf("dead node removed after %s, before DeadNodeTimeout", removedAfter)
	}
	nl := tc.waitLeader(5 * time.Second)
	applyCtx(t, nl.c, "still-writable")
	for _, m := range nl.c.Members() {
		if m.ID == victim.id() && m.Role != RoleNone {
			t.Fatalf("victim still has role %s", m.Role)
		}
	}
}

// TestWipedNodeRejoins: a node whose data was wiped comes back with a new
// ID at the old address; the stale entry disappears and the new one joins.
func TestWipedNodeRejoins(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	tc := newTestCluster(t)
	leader := startVoters(t, tc, 3, 3, nil)
	var old *testNode
	for _, n := range tc.running() {
		if n != leader {
			old = n
			break
		}
	}
	addr := old.c.RaftAddr()
	if err := old.c.kill(); err != nil {
		t.Fatal(err)
	}
	fresh := tc.add("fresh", func(c *Config) {
		c.RaftAddr = addr
		c.Join = []string{leader.c.GossipAddr()}
	})
	tc.waitConfig(15*time.Second, "stale entry replaced", func(v, nv []string) error {
		all := append(append([]string{}, v...), nv...)
		if slices.Contains(all, old.id()) || !slices.Contains(v, fresh.id()) || len(v) != 3 {
			return fmt.Errorf("voters %v non-voters %v", v, nv)
		}
		return nil
	})
	applyCtx(t, fresh.c, "from-fresh")
}

// TestRestartOnNewAddress: the same node (same ID and stores) comes back
// on new ports; the leader updates its address. Re-join and push-pull run
// at their production period (30 s), so the address must come through the
// faster re-join of a node that knows no leader: the peers refuse the new
// address until the old entry has been dead for DeadNodeReclaimTime (1 s
// here), and the next join after that must not wait 30 s (the systemtest
// TestClusterProcessesKillLeader once took 60 s this way).
func TestRestartOnNewAddress(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	tc := newTestCluster(t)
	leader := startVoters(t, tc, 3, 3, func(c *Config) {
		c.RejoinInterval = 30 * time.Second
		c.PushPullInterval = 30 * time.Second
	})
	var f *testNode
	for _, n := range tc.running() {
		if n != leader {
			f = n
			break
		}
	}
	oldAddr := f.c.RaftAddr()
	if err := f.c.kill(); err != nil {
		t.Fatal(err)
	}
	applyCtx(t, leader.c, "while-away")
	f.cfg.Join = []string{leader.c.GossipAddr()}
	f.start() // new ports (0)
	if f.c.RaftAddr() == oldAddr {
		t.Skip("got the same port again")
	}
	tc.waitConfig(12*time.Second, "address updated", func(v, nv []string) error {
		for _, s := range leader.c.raft.GetConfiguration().Configuration().Servers {
			if string(s.ID) == f.id() && string(s.Address) == f.c.RaftAddr() {
				return nil
			}
		}
		return fmt.Errorf("%s not at %s", f.id(), f.c.RaftAddr())
	})
	waitFor(t, 10*time.Second, "restarted node caught up", func() error {
		if !f.fsm.has("while-away") {
			return errors.New("missing write made while away")
		}
		return nil
	})
}

// TestSnapshotCatchUp: a follower away for longer than TrailingLogs
// catches up by one snapshot install.
func TestSnapshotCatchUp(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	tc := newTestCluster(t)
	small := func(c *Config) {
		c.SnapshotThreshold = 32
		c.TrailingLogs = 16
		c.SnapshotInterval = 50 * time.Millisecond
	}
	leader := startVoters(t, tc, 3, 3, small)
	var f *testNode
	for _, n := range tc.running() {
		if n != leader {
			f = n
			break
		}
	}
	gossipAddr, raftAddr := f.c.GossipAddr(), f.c.RaftAddr()
	if err := f.c.kill(); err != nil {
		t.Fatal(err)
	}
	lastSeen := f.c.raft.LastIndex()
	var keys []string
	for i := range 200 {
		k := fmt.Sprintf("s%d", i)
		applyCtx(t, leader.c, k)
		keys = append(keys, k)
	}
	lastWrite := leader.c.raft.LastIndex()
	waitFor(t, 10*time.Second, "leader snapshotted every write and compacted past the follower", func() error {
		first, err := leader.logs.FirstIndex()
		if err != nil {
			return err
		}
		if first <= lastSeen+1 {
			return fmt.Errorf("leader first index %d, follower last %d", first, lastSeen)
		}
		// A snapshot that covers all writes: the install is the only one
		// needed (no newer snapshot can overtake it).
		// The automatic snapshot fires only once SnapshotThreshold entries
		// follow the last one, so the tail of the writes may never be
		// covered by itself: ask for a snapshot until one covers them.
		list, err := leader.snaps.List()
		if err != nil || len(list) == 0 || list[0].Index < lastWrite {
			_ = leader.c.raft.Snapshot().Error()
			return fmt.Errorf("newest leader snapshot does not cover index %d yet", lastWrite)
		}
		return nil
	})
	f.cfg.GossipAddr, f.cfg.RaftAddr = gossipAddr, raftAddr
	f.cfg.Join = []string{leader.c.GossipAddr()}
	before := f.fsm.restoreCount()
	f.start()
	waitFor(t, 15*time.Second, "follower caught up", func() error {
		for _, k := range keys {
			if !f.fsm.has(k) {
				return fmt.Errorf("missing %s", k)
			}
		}
		return nil
	})
	if got := f.fsm.restoreCount() - before; got != 1 {
		t.Fatalf("follower restored %d snapshots, want exactly 1", got)
	}
	if err := f.fsm.check(); err != nil {
		t.Fatal(err)
	}
	if err := f.c.WaitSync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestAdminOperations: transfer leadership and remove a server from a
// follower (forwarded to the leader).
func TestAdminOperations(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	tc := newTestCluster(t)
	leader := startVoters(t, tc, 4, 3, nil)
	voters, nonvoters := configOf(leader)
	var follower *testNode
	for _, id := range voters {
		if id != leader.id() {
			follower = tc.byID(id)
		}
	}
	ctx := context.Background()
	if err := follower.c.TransferLeadership(ctx, follower.id()); err != nil {
		t.Fatalf("transfer leadership: %v", err)
	}
	nl := tc.waitLeader(5 * time.Second)
	if nl != follower {
		t.Fatalf("leader is %s, want %s", nl.cfg.Name, follower.cfg.Name)
	}
	if err := leader.c.TransferLeadership(ctx, nonvoters[0]); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("transfer to a non-voter = %v, want ErrBadRequest", err)
	}
	if err := leader.c.RemoveServer(ctx, "no-such-id"); !errors.Is(err, ErrUnknownServer) {
		t.Fatalf("remove unknown = %v, want ErrUnknownServer", err)
	}
	// Remove the non-voter through a follower (the old leader).
	spare := tc.byID(nonvoters[0])
	if err := spare.c.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	tc.waitConfig(5*time.Second, "spare gone", func(v, nv []string) error {
		if slices.Contains(nv, spare.id()) {
			return fmt.Errorf("non-voters %v", nv)
		}
		return nil
	})
	_ = spare.c.Close()
	ids := []string{}
	for _, m := range nl.c.Members() {
		if m.Role != RoleNone {
			ids = append(ids, m.ID)
		}
	}
	sort.Strings(ids)
	if fmt.Sprint(ids) != fmt.Sprint(voters) {
		t.Fatalf("members with a role %v, want %v", ids, voters)
	}
}

// TestSlowCommitIsATimeout: a leader that is there but does not commit in
// time gives ErrTimeout (wrapping context.DeadlineExceeded), on the leader
// and through a follower, not ErrNoLeader: no election happened.
func TestSlowCommitIsATimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	tc := newTestCluster(t)
	leader := startVoters(t, tc, 3, 3, func(c *Config) { c.HoldTimeout = 700 * time.Millisecond })
	gate := make(chan struct{})
	for _, n := range tc.running() {
		n.fsm.block = gate
	}
	defer close(gate)
	var follower *testNode
	for _, n := range tc.running() {
		if n != leader {
			follower = n
			break
		}
	}
	for _, n := range []*testNode{leader, follower} {
		start := time.Now()
		_, err := n.c.Apply(context.Background(), []byte("block:"+n.cfg.Name))
		if !errors.Is(err, ErrTimeout) || errors.Is(err, ErrNoLeader) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("apply on %s: err = %v, want ErrTimeout", n.cfg.Name, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("apply on %s took %s with a 700ms hold", n.cfg.Name, d)
		}
		t.Logf("apply on %s: %v", n.cfg.Name, err)
	}
	// When the caller's own deadline is the shorter one, Apply reports that
	// deadline (ctx is done when it returns), not a cluster failure.
	for _, n := range []*testNode{leader, follower} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := n.c.Apply(ctx, []byte("block:ctx-"+n.cfg.Name))
		ctxErr := ctx.Err()
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrTimeout) || errors.Is(err, ErrNoLeader) || ctxErr == nil {
			t.Fatalf("apply on %s with a 300ms ctx: err = %v (ctx err %v), want the ctx's DeadlineExceeded", n.cfg.Name, err, ctxErr)
		}
	}
}

// TestForwardedHoldExpiryIsATimeout: a forwarded write that the leader could
// not queue or commit within the caller's remaining hold is answered with
// codeTimeout, which the follower reads as ErrTimeout (503 with
// Retry-After). It was a bare codeError ("timed out enqueuing operation") or
// codeLeadershipLost, which a follower whose own timer had not fired yet
// passed on as an unclassified failure or retried as an election
// (`surgebench propose` at 256 callers, BENCHMARKS.md §0a).
func TestForwardedHoldExpiryIsATimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	tc := newTestCluster(t)
	// One entry per batch: raft's FSM queue (128 batches) fills after 128
	// commits.
	leader := startVoters(t, tc, 3, 3, func(c *Config) { c.MaxAppendEntries = 1 })
	gate := make(chan struct{})
	for _, n := range tc.running() {
		n.fsm.block = gate
	}
	// Commit entries the FSM cannot apply until raft's FSM queue is full
	// and the leader loop stops taking new entries.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
				_, _ = leader.c.Apply(ctx, []byte(fmt.Sprintf("block:fill-%d-%d", w, i)))
				cancel()
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
		close(gate)
	}()
	time.Sleep(1500 * time.Millisecond)

	payload := binary.BigEndian.AppendUint64(nil, uint64(300*time.Millisecond))
	payload = append(payload, "block:forwarded"...)
	code, msg := leader.c.handleRPC(context.Background(), mApply, payload)
	t.Logf("forwarded apply answered code %d: %s", code, msg)
	if code != codeTimeout {
		t.Fatalf("forwarded apply with a 300ms hold answered code %d (%s), want codeTimeout %d", code, msg, codeTimeout)
	}
	err := fmt.Errorf("forward apply to leader: %w", &rpcError{code: code, msg: string(msg)})
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || retryable(err) {
		t.Fatalf("the follower reads %v as ErrTimeout %v, DeadlineExceeded %v, retryable %v; want a final ErrTimeout",
			err, errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded), retryable(err))
	}
}
