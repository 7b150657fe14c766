package cluster

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSingleNodeBootstrapApplyRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	logs := testLogs(t)
	cfg := testConfig("solo")
	var hookMu sync.Mutex
	var hooked []error
	cfg.OnApply = func(d time.Duration, forwarded bool, err error) {
		hookMu.Lock()
		defer hookMu.Unlock()
		if forwarded || d <= 0 {
			t.Errorf("OnApply(%s, forwarded=%v) on a single node", d, forwarded)
		}
		hooked = append(hooked, err)
	}
	n := newTestNode(t, logs, cfg)
	n.start()

	waitFor(t, 5*time.Second, "single node ready", n.c.Ready)
	st := n.c.LocalStatus()
	if st.Role != RoleLeader || st.LeaderID != n.id() {
		t.Fatalf("status after bootstrap = %+v, want leader %s", st, n.id())
	}

	out := applyCtx(t, n.c, "k1")
	if string(out) != "ok:k1:1" {
		t.Fatalf("apply k1 = %q", out)
	}
	if out := applyCtx(t, n.c, "k1"); string(out) != "dup:k1" {
		t.Fatalf("apply k1 again = %q, want dup", out)
	}
	if _, err := n.c.Apply(context.Background(), []byte("fail:x")); !errors.Is(err, ErrFSM) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("apply of a refused command = %v, want ErrFSM with the FSM message", err)
	}
	if err := n.c.WaitSync(context.Background()); err != nil {
		t.Fatalf("wait sync: %v", err)
	}
	hookMu.Lock()
	if len(hooked) != 3 || hooked[0] != nil || !errors.Is(hooked[2], ErrFSM) {
		t.Fatalf("OnApply saw %v", hooked)
	}
	hookMu.Unlock()
	if cn := n.c.Counters(); cn.LocalApplies != 2 || cn.FailedApplies != 1 || cn.ForwardedApplies != 0 || cn.LeaderChanges == 0 {
		t.Fatalf("counters = %+v", cn)
	}
	lastBefore := n.c.raft.LastIndex()

	if err := n.c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := n.c.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := n.c.Apply(context.Background(), []byte("k2")); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply after close = %v, want ErrClosed", err)
	}

	// Restart on the same stores and FSM: no second bootstrap, state kept.
	n.start()
	waitFor(t, 5*time.Second, "restarted node ready", n.c.Ready)
	if got := n.c.raft.LastIndex(); got < lastBefore {
		t.Fatalf("last index after restart = %d, want >= %d", got, lastBefore)
	}
	if out := applyCtx(t, n.c, "k2"); string(out) != "ok:k2:2" {
		t.Fatalf("apply k2 after restart = %q", out)
	}
	if !n.fsm.has("k1") || !n.fsm.has("k2") || n.fsm.size() != 2 {
		t.Fatalf("fsm after restart: k1=%v k2=%v size=%d", n.fsm.has("k1"), n.fsm.has("k2"), n.fsm.size())
	}
	if !strings.Contains(logs.String(), "raft state found; resuming") || strings.Count(logs.String(), "bootstrapped cluster") != 1 {
		t.Fatalf("restart must resume, not bootstrap again; logs:\n%s", logs.String())
	}
	members := n.c.Members()
	if len(members) != 1 || members[0].ID != n.id() || members[0].Role != RoleLeader || members[0].Gossip != GossipAlive {
		t.Fatalf("members = %+v", members)
	}
}

func TestApplyRejectsBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	logs := testLogs(t)
	n := newTestNode(t, logs, testConfig("bad"))
	n.start()
	waitFor(t, 5*time.Second, "ready", n.c.Ready)
	for _, tc := range []struct {
		name string
		cmd  []byte
		want error
	}{
		{"empty", nil, ErrBadRequest},
		{"too large", make([]byte, MaxCommandSize+1), ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := n.c.Apply(context.Background(), tc.cmd); !errors.Is(err, tc.want) {
				t.Fatalf("apply = %v, want %v", err, tc.want)
			}
		})
	}
}
