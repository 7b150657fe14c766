package storage

import (
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/surgefund/surge/donation"
)

// raftNode is one single-node Raft over this package's stores.
type raftNode struct {
	raft  *raft.Raft
	logs  *LogStore
	fsm   *FSM
	snaps *raft.FileSnapshotStore
}

func startRaftNode(t *testing.T, dir, bootID string, bootstrap bool) *raftNode {
	t.Helper()
	logs, err := OpenLogStore(filepath.Join(dir, "raft"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	fsm, err := openFSM(filepath.Join(dir, "fsm"), testLogger(t), bootID)
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := raft.NewFileSnapshotStore(filepath.Join(dir, "snapshots"), 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// What the node does before starting Raft.
	if err := fsm.RestoreFromSnapshotStore(snaps); err != nil {
		t.Fatal(err)
	}
	cfg := raft.DefaultConfig()
	cfg.LocalID = "node-1"
	cfg.Logger = hclog.NewNullLogger()
	cfg.HeartbeatTimeout = 100 * time.Millisecond
	cfg.ElectionTimeout = 100 * time.Millisecond
	cfg.LeaderLeaseTimeout = 100 * time.Millisecond
	cfg.CommitTimeout = 5 * time.Millisecond
	cfg.NoSnapshotRestoreOnStart = true // the FSM is its own persistence
	addr, trans := raft.NewInmemTransport("node-1-addr")
	if bootstrap {
		err := raft.BootstrapCluster(cfg, logs, logs, snaps, trans, raft.Configuration{
			Servers: []raft.Server{{ID: cfg.LocalID, Address: addr}},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	r, err := raft.NewRaft(cfg, fsm, logs, logs, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	n := &raftNode{raft: r, logs: logs, fsm: fsm, snaps: snaps}
	deadline := time.Now().Add(10 * time.Second)
	for r.State() != raft.Leader {
		if time.Now().After(deadline) {
			t.Fatalf("no leader after 10s, state %s", r.State())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *raftNode) stop(t *testing.T) {
	t.Helper()
	if err := n.raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if err := n.fsm.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.logs.Close(); err != nil {
		t.Fatal(err)
	}
}

// crash stops Raft and the log store cleanly but leaves the FSM as a
// killed process would: Badger closed, dirty marker still there.
func (n *raftNode) crash(t *testing.T) {
	t.Helper()
	if err := n.raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	n.fsm.gc.stop()
	if err := n.fsm.cur.db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.logs.Close(); err != nil {
		t.Fatal(err)
	}
}

func (n *raftNode) donate(t *testing.T, id string, minor int64) {
	t.Helper()
	for _, c := range []donation.Command{createCmd(id, minor, "EUR"), paymentCmd("ev-"+id, id, donation.OutcomeSucceeded)} {
		fut := n.raft.Apply(mustEncode(t, c), 5*time.Second)
		if err := fut.Error(); err != nil {
			t.Fatal(err)
		}
		if r := decodeResp(t, fut.Response()); r.Code != donation.CodeOK {
			t.Fatalf("%s %s: %s", c.Kind, id, r.Code)
		}
	}
}

func TestRaftOverStores(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Raft")
	}
	dir := t.TempDir()
	want := donation.Totals{Currency: "EUR"}
	donate := func(n *raftNode, from, to int) {
		for i := from; i < to; i++ {
			n.donate(t, fmt.Sprintf("d%03d", i), int64(100+i))
			want.RaisedMinor += int64(100 + i)
			want.Donations++
		}
	}
	check := func(n *raftNode, stage string) {
		t.Helper()
		if got := n.fsm.Totals("EUR"); got != want {
			t.Fatalf("%s: totals %+v, want %+v", stage, got, want)
		}
		if n.fsm.Count() != want.Donations {
			t.Fatalf("%s: count %d, want %d", stage, n.fsm.Count(), want.Donations)
		}
		mustVerify(t, n.fsm)
	}

	n := startRaftNode(t, dir, "boot-1", true)
	donate(n, 0, 30)
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	donate(n, 30, 40)
	check(n, "first run")
	n.stop(t)

	// Restart on the same stores: Raft replays from the snapshot's index,
	// the FSM skips what it already holds. Nothing counts twice.
	n = startRaftNode(t, dir, "boot-1", false)
	check(n, "after restart")
	donate(n, 40, 45)
	check(n, "after restart and more writes")
	last, err := n.logs.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if n.fsm.AppliedIndex() > last {
		t.Fatalf("applied %d beyond the log's last index %d", n.fsm.AppliedIndex(), last)
	}

	// A kill -9 on the same boot keeps the FSM as it was.
	n.crash(t)
	n = startRaftNode(t, dir, "boot-1", false)
	check(n, "after kill on the same boot")

	// A reboot while open: the FSM is discarded, rebuilt from the newest
	// snapshot, and Raft replays the log after it.
	n.crash(t)
	n = startRaftNode(t, dir, "boot-2", false)
	check(n, "after rebuild from snapshot and log")
	donate(n, 45, 50)
	check(n, "after rebuild and more writes")
	n.stop(t)
}
