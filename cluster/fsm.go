package cluster

import (
	"io"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// fsmTracker wraps the application's FSM to learn which log index the FSM
// goroutine has actually consumed. raft.AppliedIndex only says what was
// handed to that goroutine, and noop/barrier entries never reach the FSM, so
// "applied up to the commit index" needs both views (see synced).
type fsmTracker struct {
	inner raft.FSM
	snaps raft.SnapshotStore
	seen  atomic.Uint64 // highest index the FSM has consumed (commands, configuration, restores)
}

func (f *fsmTracker) note(i uint64) {
	for {
		cur := f.seen.Load()
		if i <= cur || f.seen.CompareAndSwap(cur, i) {
			return
		}
	}
}

func (f *fsmTracker) Apply(l *raft.Log) any {
	r := f.inner.Apply(l)
	f.note(l.Index)
	return r
}

func (f *fsmTracker) Snapshot() (raft.FSMSnapshot, error) { return f.inner.Snapshot() }

func (f *fsmTracker) Restore(rc io.ReadCloser) error {
	if err := f.inner.Restore(rc); err != nil {
		return err
	}
	// Raft saves a snapshot in the store before restoring it (install from
	// the leader and user restores alike), so the newest one is what we
	// just loaded.
	if list, err := f.snaps.List(); err == nil && len(list) > 0 {
		f.note(list[0].Index)
	}
	return nil
}

// StoreConfiguration makes raft hand configuration entries to the tracker
// when the FSM does not batch (batching FSMs receive them in ApplyBatch).
func (f *fsmTracker) StoreConfiguration(index uint64, c raft.Configuration) {
	if cs, ok := f.inner.(raft.ConfigurationStore); ok {
		cs.StoreConfiguration(index, c)
	}
	f.note(index)
}

// batchTracker adds raft.BatchingFSM when the inner FSM batches.
type batchTracker struct {
	*fsmTracker
	batch raft.BatchingFSM
}

func (b *batchTracker) ApplyBatch(logs []*raft.Log) []any {
	r := b.batch.ApplyBatch(logs)
	if n := len(logs); n > 0 {
		b.note(logs[n-1].Index)
	}
	return r
}

var (
	_ raft.FSM                = (*fsmTracker)(nil)
	_ raft.ConfigurationStore = (*fsmTracker)(nil)
	_ raft.BatchingFSM        = (*batchTracker)(nil)
)

// appliedIndexer is implemented by persistent FSMs (storage.FSM) that know
// the last index they applied across restarts.
type appliedIndexer interface {
	AppliedIndex() uint64
}

func newFSMTracker(fsm raft.FSM, snaps raft.SnapshotStore) (raft.FSM, *fsmTracker) {
	t := &fsmTracker{inner: fsm, snaps: snaps}
	if ai, ok := fsm.(appliedIndexer); ok {
		t.note(ai.AppliedIndex())
	}
	if list, err := snaps.List(); err == nil && len(list) > 0 {
		// With NoSnapshotRestoreOnStart the FSM is already at (or past) the
		// newest snapshot: the node restores it before starting raft.
		t.note(list[0].Index)
	}
	if b, ok := fsm.(raft.BatchingFSM); ok {
		return &batchTracker{fsmTracker: t, batch: b}, t
	}
	return t, t
}
