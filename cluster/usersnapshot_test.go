package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"
)

// takeSnapshot saves a user snapshot of n into memory.
func takeSnapshot(t *testing.T, n *testNode) (SnapshotInfo, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, rc, err := n.c.Snapshot(ctx)
	if err != nil {
		t.Fatalf("snapshot of %s: %v", n.cfg.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read snapshot: %v", err)
	}
	if int64(len(b)) != info.Size {
		t.Fatalf("snapshot is %d bytes, info says %d", len(b), info.Size)
	}
	return info, b
}

func TestUserSnapshotRestoreIntoFreshNode(t *testing.T) {
	logs := testLogs(t)
	src := newTestNode(t, logs, testConfig("src"))
	src.start()
	waitFor(t, 5*time.Second, "src ready", src.c.Ready)
	for i := range 20 {
		applyCtx(t, src.c, fmt.Sprintf("k%02d", i))
	}
	info, snap := takeSnapshot(t, src)
	if info.Index < src.fsm.AppliedIndex() {
		t.Fatalf("snapshot index %d below the applied index %d", info.Index, src.fsm.AppliedIndex())
	}
	// Nothing applied since: the same state comes back from the store.
	info2, snap2 := takeSnapshot(t, src)
	if info2.Index != info.Index || !bytes.Equal(snap, snap2) {
		t.Fatalf("second snapshot with nothing new: index %d vs %d, equal bytes %v", info2.Index, info.Index, bytes.Equal(snap, snap2))
	}

	tests := []struct {
		name    string
		prewarm int // entries the target applies before the restore
	}{
		{"target behind the snapshot", 0},
		{"target ahead of the snapshot", 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := newTestNode(t, logs, testConfig("dst"))
			dst.start()
			waitFor(t, 5*time.Second, "dst ready", dst.c.Ready)
			for i := range tt.prewarm {
				applyCtx(t, dst.c, fmt.Sprintf("old%02d", i))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := dst.c.Restore(ctx, info.Index, info.Size, bytes.NewReader(snap)); err != nil {
				t.Fatalf("restore: %v", err)
			}
			for i := range 20 {
				if k := fmt.Sprintf("k%02d", i); !dst.fsm.has(k) {
					t.Fatalf("restored state lacks %s", k)
				}
			}
			if tt.prewarm > 0 && dst.fsm.has("old00") {
				t.Fatal("restore merged into the old state instead of replacing it")
			}
			if dst.fsm.size() != 20 {
				t.Fatalf("restored state has %d keys, want 20", dst.fsm.size())
			}
			// A write after the restore must be applied, not skipped as
			// "already applied" by the FSM's index check.
			if out := applyCtx(t, dst.c, "after"); string(out) != "ok:after:21" {
				t.Fatalf("apply after restore = %q, want ok:after:21", out)
			}
			if err := dst.fsm.check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestUserRestoreArguments(t *testing.T) {
	logs := testLogs(t)
	n := newTestNode(t, logs, testConfig("solo"))
	idle, err := New(n.cfg, n.fsm, n.logs, n.logs, n.snaps)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := idle.Snapshot(context.Background()); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("snapshot before start = %v, want ErrNotStarted", err)
	}
	n.start()
	waitFor(t, 5*time.Second, "ready", n.c.Ready)
	ctx := context.Background()
	if err := n.c.Restore(ctx, 1, 0, bytes.NewReader(nil)); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("restore of 0 bytes = %v, want ErrBadRequest", err)
	}
	// A short stream fails inside raft before the FSM sees it (size check)
	// and leaves the state alone.
	applyCtx(t, n.c, "keep")
	if err := n.c.Restore(ctx, 1, 100, bytes.NewReader([]byte("short"))); err == nil {
		t.Fatal("restore of a stream shorter than its size succeeded")
	}
	if !n.fsm.has("keep") {
		t.Fatal("failed restore changed the state")
	}
	if err := n.c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.c.Snapshot(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("snapshot after close = %v, want ErrClosed", err)
	}
	if err := n.c.Restore(ctx, 1, 5, bytes.NewReader([]byte("hello"))); !errors.Is(err, ErrClosed) {
		t.Fatalf("restore after close = %v, want ErrClosed", err)
	}
}

// TestUserRestoreReachesFollowers restores on the leader of three voters:
// the followers install the restored state, a follower refuses to restore
// itself, and writes after the restore reach everyone.
func TestUserRestoreReachesFollowers(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	logs := testLogs(t)
	src := newTestNode(t, logs, testConfig("src"))
	src.start()
	waitFor(t, 5*time.Second, "src ready", src.c.Ready)
	for i := range 10 {
		applyCtx(t, src.c, fmt.Sprintf("s%d", i))
	}
	info, snap := takeSnapshot(t, src)

	tc := newTestCluster(t)
	leader := startVoters(t, tc, 3, 3, nil)
	for i := range 5 {
		applyCtx(t, leader.c, fmt.Sprintf("old%d", i))
	}
	var follower *testNode
	for _, n := range tc.running() {
		if n != leader {
			follower = n
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := follower.c.Restore(ctx, info.Index, info.Size, bytes.NewReader(snap)); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("restore on a follower = %v, want ErrNotLeader", err)
	}
	if err := leader.c.Restore(ctx, info.Index, info.Size, bytes.NewReader(snap)); err != nil {
		t.Fatalf("restore on the leader: %v", err)
	}
	applyCtx(t, follower.c, "after") // forwarded to the leader
	for _, n := range tc.running() {
		waitFor(t, 10*time.Second, n.cfg.Name+" has the restored state", func() error {
			if n.fsm.has("old0") {
				return fmt.Errorf("still has the old state")
			}
			for i := range 10 {
				if !n.fsm.has(fmt.Sprintf("s%d", i)) {
					return fmt.Errorf("lacks s%d", i)
				}
			}
			if !n.fsm.has("after") {
				return fmt.Errorf("lacks the write made after the restore")
			}
			return n.fsm.check()
		})
	}
}
