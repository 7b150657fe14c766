package cluster

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
)

// SnapshotsRetained is how many completed snapshots the store keeps. One is
// enough: the FSM is persistent, Raft (NoSnapshotRestoreOnStart) and
// storage.RestoreFromSnapshotStore only ever use the newest, and the store
// deletes the previous one only after the new one is fsynced and renamed
// into place. See DESIGN.md §Snapshots.
const SnapshotsRetained = 1

// OpenSnapshotStore opens Raft's file snapshot store under dir (in
// dir/snapshots), keeping the newest SnapshotsRetained, with its logs
// bridged into logger through this package's hclog adapter.
func OpenSnapshotStore(dir string, logger *slog.Logger) (raft.SnapshotStore, error) {
	s, err := raft.NewFileSnapshotStoreWithLogger(dir, SnapshotsRetained, newHCLog(logger, "snapshots", newLogLimiter(10*time.Second)))
	if err != nil {
		return nil, fmt.Errorf("open snapshot store %s: %w", dir, err)
	}
	return s, nil
}
