package cluster

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
)

// OpenSnapshotStore opens Raft's file snapshot store under dir (in
// dir/snapshots), keeping the newest two, with its logs bridged into
// logger through this package's hclog adapter.
func OpenSnapshotStore(dir string, logger *slog.Logger) (raft.SnapshotStore, error) {
	s, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, newHCLog(logger, "snapshots", newLogLimiter(10*time.Second)))
	if err != nil {
		return nil, fmt.Errorf("open snapshot store %s: %w", dir, err)
	}
	return s, nil
}
