package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// ErrNothingToSnapshot means the node has neither applied anything since it
// started nor holds a snapshot: there is no state to save yet.
var ErrNothingToSnapshot = errors.New("cluster: nothing to snapshot yet")

// SnapshotInfo describes a snapshot opened by Snapshot.
type SnapshotInfo struct {
	ID    string // the snapshot store's ID
	Index uint64 // last Raft index the state covers
	Term  uint64
	Size  int64 // exact length of the stream in bytes
}

// Snapshot takes a snapshot of the FSM through Raft (a "user snapshot": it
// also lands in the snapshot store and lets Raft compact its log) and opens
// it for reading. When nothing was applied since the newest snapshot, that
// snapshot is the current state and is opened instead. The caller closes
// the reader. The stream is exactly what the FSM's Persist wrote, so it can
// be fed to Restore on any cluster running the same FSM.
//
// A snapshot cannot be taken while a configuration change is being
// committed; Snapshot retries until ctx is done.
func (c *Cluster) Snapshot(ctx context.Context) (SnapshotInfo, io.ReadCloser, error) {
	if err := c.running(); err != nil {
		return SnapshotInfo{}, nil, err
	}
	backoff := 20 * time.Millisecond
	for {
		f := c.raft.Snapshot()
		err := f.Error()
		if err == nil {
			meta, rc, err := f.Open()
			if err != nil {
				return SnapshotInfo{}, nil, fmt.Errorf("open snapshot: %w", err)
			}
			return infoOf(meta), rc, nil
		}
		switch {
		case errors.Is(err, raft.ErrNothingNewToSnapshot):
			return c.openNewestSnapshot()
		case errors.Is(err, raft.ErrRaftShutdown):
			return SnapshotInfo{}, nil, ErrClosed
		case !strings.Contains(err.Error(), "cannot take snapshot now"):
			return SnapshotInfo{}, nil, fmt.Errorf("take snapshot: %w", err)
		}
		// A configuration change is in flight: wait for it to commit.
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return SnapshotInfo{}, nil, fmt.Errorf("take snapshot: %w (last: %v)", ctx.Err(), err)
		case <-c.closing:
			t.Stop()
			return SnapshotInfo{}, nil, ErrClosed
		case <-t.C:
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

func (c *Cluster) openNewestSnapshot() (SnapshotInfo, io.ReadCloser, error) {
	list, err := c.snaps.List()
	if err != nil {
		return SnapshotInfo{}, nil, fmt.Errorf("list snapshots: %w", err)
	}
	if len(list) == 0 {
		return SnapshotInfo{}, nil, ErrNothingToSnapshot
	}
	meta, rc, err := c.snaps.Open(list[0].ID)
	if err != nil {
		return SnapshotInfo{}, nil, fmt.Errorf("open snapshot %s: %w", list[0].ID, err)
	}
	return infoOf(meta), rc, nil
}

func infoOf(m *raft.SnapshotMeta) SnapshotInfo {
	return SnapshotInfo{ID: m.ID, Index: m.Index, Term: m.Term, Size: m.Size}
}

// Restore replaces the state of the whole cluster with the snapshot stream
// r of exactly size bytes (Raft's user restore): the leader writes it into
// its snapshot store, restores its FSM from it, and leaves a hole in the log
// so every follower installs the same snapshot. Writes in flight on the
// leader fail with raft.ErrAbortedByRestore. It runs only on the leader and
// returns ErrNotLeader elsewhere (the caller retries on the leader).
//
// index must be at least the last log index the snapshot's state covers
// (for a stream from Snapshot, SnapshotInfo.Index; for a persistent FSM, the
// applied index stored in the stream). Raft numbers the restored state
// above both index and its own last index, so an FSM that skips entries at
// or below its applied index never skips entries written after the
// restore.
//
// The stream must be valid for the FSM: hashicorp/raft panics when the
// FSM's Restore fails during a user restore. Validate it before calling
// (the node restores it into a scratch FSM first).
//
// Restore returns after a no-op entry written after the restore committed,
// so a quorum holds the new state, or when ctx is done (the restore itself
// may then still complete).
func (c *Cluster) Restore(ctx context.Context, index uint64, size int64, r io.Reader) error {
	if err := c.running(); err != nil {
		return err
	}
	if size <= 0 {
		return fmt.Errorf("restore: size %d: %w", size, ErrBadRequest)
	}
	timeout := 5 * time.Minute
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return fmt.Errorf("restore: %w", context.DeadlineExceeded)
		}
	}
	cr := &countingReader{r: r}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: index, Size: size}
	backoff := 20 * time.Millisecond
	for {
		if c.raft.State() != raft.Leader {
			return fmt.Errorf("restore: %w", ErrNotLeader)
		}
		err := c.raft.Restore(meta, cr, timeout)
		if err == nil {
			c.log.Info("restored user snapshot", "snapshot_index", index, "bytes", size)
			return nil
		}
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
			return fmt.Errorf("restore: %w", mapRaftErr(err))
		case errors.Is(err, raft.ErrRaftShutdown):
			return ErrClosed
		case cr.n > 0 || !strings.Contains(err.Error(), "cannot restore snapshot now"):
			// Once bytes were consumed the stream cannot be replayed.
			return fmt.Errorf("restore: %w", err)
		}
		// A configuration change is being committed; nothing was read yet.
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("restore: %w (last: %v)", ctx.Err(), err)
		case <-c.closing:
			t.Stop()
			return ErrClosed
		case <-t.C:
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
