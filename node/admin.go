package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/surgefund/surge/cluster"
	"github.com/surgefund/surge/donation"
	"github.com/surgefund/surge/storage"
	"github.com/surgefund/surge/web"
)

var _ web.ClusterAdmin = (*clusterAdmin)(nil)

// adminSyncWait bounds how long export and snapshot wait for this node to
// apply what the leader has committed.
const adminSyncWait = 5 * time.Second

// clusterAdmin adapts the cluster and the storage FSM to web.ClusterAdmin
// (the admin API). It translates cluster errors into the web package's
// sentinels so the API maps them to statuses.
type clusterAdmin struct {
	c       *cluster.Cluster
	fsm     *storage.FSM
	scratch string // directory for checking uploaded snapshots (inside the data dir)
	log     *slog.Logger
}

// newClusterAdmin returns the admin adapter. scratchDir holds uploaded
// snapshots while they are checked; it must be on a disk with room for
// two copies of the state (the data dir is).
func newClusterAdmin(c *cluster.Cluster, fsm *storage.FSM, scratchDir string, log *slog.Logger) *clusterAdmin {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &clusterAdmin{c: c, fsm: fsm, scratch: scratchDir, log: log}
}

// statusExtraJSON is what Node.statusExtra puts in cluster.NodeStatus.Extra.
type statusExtraJSON struct {
	RaisedMinor int64  `json:"raised_minor"`
	Donations   int64  `json:"donations"`
	Currency    string `json:"currency"`
}

func toWebStatus(s cluster.NodeStatus) web.NodeStatus {
	out := web.NodeStatus{
		ID: s.ID, Name: s.Name, HTTPAddr: s.HTTPAddr, RaftAddr: s.RaftAddr, Role: s.Role, State: s.State,
		Term: s.Term, CommitIndex: s.CommitIndex, AppliedIndex: s.AppliedIndex, LastIndex: s.LastIndex,
		LastContactMS: s.LastContactMS, LeaderID: s.LeaderID, Version: s.Version,
	}
	var x statusExtraJSON
	if len(s.Extra) > 0 && json.Unmarshal(s.Extra, &x) == nil {
		out.RaisedMinor, out.Donations, out.Currency = x.RaisedMinor, x.Donations, x.Currency
	}
	return out
}

func (a *clusterAdmin) LocalStatus() web.NodeStatus { return toWebStatus(a.c.LocalStatus()) }

func (a *clusterAdmin) Members() []web.ClusterMember {
	ms := a.c.Members()
	out := make([]web.ClusterMember, len(ms))
	for i, m := range ms {
		out[i] = web.ClusterMember{ID: m.ID, Name: m.Name, GossipAddr: m.GossipAddr, RaftAddr: m.RaftAddr,
			HTTPAddr: m.HTTPAddr, Version: m.Version, Gossip: m.Gossip, Role: m.Role}
	}
	return out
}

func (a *clusterAdmin) PeerStatus(ctx context.Context, id string) (web.NodeStatus, error) {
	s, err := a.c.PeerStatus(ctx, id)
	if err != nil {
		return web.NodeStatus{}, a.adminErr(err)
	}
	return toWebStatus(s), nil
}

func (a *clusterAdmin) Leave(ctx context.Context) error {
	return a.adminErr(a.c.Leave(ctx))
}

func (a *clusterAdmin) RemoveServer(ctx context.Context, id string) error {
	return a.adminErr(a.c.RemoveServer(ctx, id))
}

func (a *clusterAdmin) TransferLeadership(ctx context.Context, id string) error {
	return a.adminErr(a.c.TransferLeadership(ctx, id))
}

// adminErr maps cluster errors onto the web package's sentinels.
func (a *clusterAdmin) adminErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cluster.ErrUnknownServer):
		return fmt.Errorf("%w: %v", web.ErrUnknownMember, err)
	case errors.Is(err, cluster.ErrUnsafe):
		return fmt.Errorf("%w: %v", web.ErrUnsafeChange, err)
	case errors.Is(err, cluster.ErrNotLeader):
		return a.notLeader()
	case errors.Is(err, cluster.ErrBadRequest):
		return &web.Error{Code: web.CodeBadRequest, Message: err.Error(), Err: err}
	case errors.Is(err, cluster.ErrNoLeader), errors.Is(err, cluster.ErrNotReady),
		errors.Is(err, cluster.ErrClosed), errors.Is(err, cluster.ErrNotStarted):
		return fmt.Errorf("%w: %v", web.ErrUnavailable, err)
	}
	return err
}

// notLeader names the leader and where its HTTP API is.
func (a *clusterAdmin) notLeader() error {
	e := &web.NotLeaderError{LeaderID: a.c.LocalStatus().LeaderID}
	for _, m := range a.c.Members() {
		if e.LeaderID != "" && m.ID == e.LeaderID {
			e.LeaderHTTPAddr = m.HTTPAddr
		}
	}
	return e
}

// Snapshot takes a Raft user snapshot and opens it. It first waits
// (briefly) until this node has applied what the leader committed; a node
// that cannot confirm it still serves its own state, with a warning, since
// a backup during an outage beats none.
func (a *clusterAdmin) Snapshot(ctx context.Context) (int64, io.ReadCloser, error) {
	sctx, cancel := context.WithTimeout(ctx, adminSyncWait)
	if err := a.c.WaitSync(sctx); err != nil {
		a.log.Warn("snapshot of a node that could not confirm it is up to date", "err", err)
	}
	cancel()
	info, rc, err := a.c.Snapshot(ctx)
	if err != nil {
		return 0, nil, a.adminErr(err)
	}
	a.log.Info("snapshot opened for download", "snapshot", info.ID, "index", info.Index, "bytes", info.Size)
	return info.Size, rc, nil
}

// Restore spools the upload to a file, proves it is a valid snapshot by
// restoring it into a scratch FSM (hashicorp/raft panics if the FSM
// refuses a user restore, so nothing unchecked may reach it), then has
// Raft replace the cluster's state with it.
func (a *clusterAdmin) Restore(ctx context.Context, r io.Reader) error {
	if a.c.LocalStatus().Role != cluster.RoleLeader {
		return a.notLeader()
	}
	f, err := os.CreateTemp(a.scratch, "restore-*.snapshot")
	if err != nil {
		return fmt.Errorf("restore: spool: %w", err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	size, err := io.Copy(f, r)
	if err != nil {
		return fmt.Errorf("restore: receive: %w", err)
	}
	if size == 0 {
		return fmt.Errorf("%w: empty upload", web.ErrBadSnapshot)
	}
	applied, err := a.checkSnapshot(ctx, f.Name())
	if err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("restore: rewind: %w", err)
	}
	if err := a.c.Restore(ctx, applied, size, f); err != nil {
		return a.adminErr(err)
	}
	a.log.Info("cluster state restored from an uploaded snapshot", "bytes", size, "snapshot_applied_index", applied)
	return nil
}

// checkSnapshot restores the file into a throwaway FSM and verifies the
// result. It returns the applied index recorded in the snapshot, which
// Raft must number the restored state above.
func (a *clusterAdmin) checkSnapshot(ctx context.Context, path string) (uint64, error) {
	dir, err := os.MkdirTemp(a.scratch, "restore-check-*")
	if err != nil {
		return 0, fmt.Errorf("restore: scratch dir: %w", err)
	}
	defer os.RemoveAll(dir)
	scratch, err := storage.OpenFSM(filepath.Join(dir, "fsm"), a.log.With("component", "restore-check"))
	if err != nil {
		return 0, fmt.Errorf("restore: scratch fsm: %w", err)
	}
	defer scratch.Close()
	in, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("restore: reopen: %w", err)
	}
	if err := scratch.Restore(in); err != nil { // closes in
		if errors.Is(err, storage.ErrBadSnapshot) {
			return 0, fmt.Errorf("%w: %v", web.ErrBadSnapshot, err)
		}
		return 0, fmt.Errorf("restore: check: %w", err)
	}
	if err := scratch.Verify(ctx); err != nil {
		return 0, fmt.Errorf("%w: %v", web.ErrBadSnapshot, err)
	}
	return scratch.AppliedIndex(), nil
}

// Export lists every donation from the local FSM, after making sure this
// node has applied everything the leader had committed: an export claims
// completeness, so a node that cannot confirm it refuses (503) instead of
// handing finance a stale list.
func (a *clusterAdmin) Export(ctx context.Context, fn func(donation.Donation) error) error {
	sctx, cancel := context.WithTimeout(ctx, adminSyncWait)
	err := a.c.WaitSync(sctx)
	cancel()
	if err != nil {
		return fmt.Errorf("%w: this node cannot confirm it holds every committed donation (%v); retry, or export from another node",
			web.ErrUnavailable, err)
	}
	return a.fsm.Export(ctx, fn)
}
