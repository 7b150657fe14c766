package cluster

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestNewLeaderSnapshotsWhenFarBehind: a node that gains leadership while
// its newest snapshot is SnapshotThreshold or more entries behind its log
// takes a snapshot shortly after, instead of 1-2 SnapshotIntervals later
// (an hour here), so that a node joining next is not sent the old one and
// every entry after it.
func TestNewLeaderSnapshotsWhenFarBehind(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	delay := leaderSnapshotDelay
	t.Cleanup(func() { leaderSnapshotDelay = delay }) // runs after the nodes are closed
	leaderSnapshotDelay = 200 * time.Millisecond
	tc := newTestCluster(t)
	leader := startVoters(t, tc, 3, 3, func(c *Config) {
		c.SnapshotThreshold = 64
		c.SnapshotInterval = time.Hour
	})
	for i := range 100 {
		applyCtx(t, leader.c, fmt.Sprintf("k%d", i))
	}
	last := leader.c.raft.LastIndex()
	for _, n := range tc.running() {
		if list, err := n.snaps.List(); err != nil || len(list) > 0 {
			t.Fatalf("%s has snapshots %v (%v) before any leadership change", n.cfg.Name, list, err)
		}
	}
	if err := leader.c.kill(); err != nil {
		t.Fatal(err)
	}
	next := tc.waitLeader(10 * time.Second)
	waitFor(t, 10*time.Second, "the new leader's snapshot", func() error {
		list, err := next.snaps.List()
		if err != nil {
			return err
		}
		if len(list) == 0 || list[0].Index < last {
			return errors.New("no snapshot covering the writes yet")
		}
		return nil
	})
	// Only a leader checks: the other survivor has none.
	for _, n := range tc.running() {
		if n == next {
			continue
		}
		if list, err := n.snaps.List(); err != nil || len(list) > 0 {
			t.Fatalf("follower %s took a snapshot %v (%v)", n.cfg.Name, list, err)
		}
	}
}
