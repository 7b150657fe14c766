package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"golang.org/x/sys/unix"
)

// Sentinel errors callers branch on.
var (
	// ErrKeyNotFound is returned by the StableStore for a missing key. Its
	// text must stay exactly "not found": hashicorp/raft compares
	// err.Error() with that string when it reads CurrentTerm on start.
	ErrKeyNotFound = errors.New("not found")
	// ErrClosed is returned by every operation on a closed store.
	ErrClosed = errors.New("storage closed")
	// ErrBadSnapshot wraps every reason a snapshot stream is refused.
	ErrBadSnapshot = errors.New("bad snapshot")
	// ErrCorrupt means the files on disk are not in a state this package
	// ever leaves them in.
	ErrCorrupt = errors.New("storage corrupt")
)

// Badger tuning shared by the log DB and the FSM DB. The defaults (64 MB
// memtables x5, 256 MB block cache, Snappy) are sized for a big database; a
// Surge node holds small records and must idle in little memory. See
// DESIGN.md for the measured effect.
const (
	memTableSize     = 8 << 20  // maxBatchSize = 15% of this = 1.2 MB per transaction
	numMemtables     = 2        // one active, one being flushed
	valueLogFileSize = 32 << 20 // vlog only holds values > ValueThreshold (1 MB)
	gcInterval       = 5 * time.Minute
	gcDiscardRatio   = 0.5
)

// badgerOptions returns the options both DBs use. Only SyncWrites differs:
// the Raft log must fsync before it returns, the FSM relies on the log
// (DESIGN.md "Log DB options" says what else was tried for the log DB).
func badgerOptions(dir string, syncWrites bool, logger *slog.Logger) badger.Options {
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(syncWrites).
		WithDetectConflicts(false). // a single writer per DB
		WithNumVersionsToKeep(1).
		WithMemTableSize(memTableSize).
		WithNumMemtables(numMemtables).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithBaseTableSize(2 << 20).
		WithNumCompactors(2).  // Badger's minimum
		WithBlockCacheSize(0). // only useful for compressed or encrypted blocks
		WithIndexCacheSize(0). // table indexes stay on the heap; tiny for our data
		WithCompression(options.None).
		WithValueLogFileSize(valueLogFileSize).
		WithChecksumVerificationMode(options.OnTableAndBlockRead).
		WithVerifyValueChecksum(true).
		WithMetricsEnabled(false).
		WithNumGoroutines(4).
		WithLogger(badgerLogger{logger})
	// Every table a compaction writes is BaseTableSize (2 MB). Badger
	// builds each output table in a heap buffer of twice its target size,
	// several at once; with the default multiplier (2) the bottom levels of
	// a 1 M-donation FSM have 8-16 MB tables and one compaction held over
	// 100 MB of heap (DESIGN.md "Memory of a loaded node").
	opts.TableSizeMultiplier = 1
	return opts
}

// openBadger opens (creating) a Badger DB in dir with opts.
func openBadger(dir string, opts badger.Options) (*badger.DB, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create dir %s: %w", dir, err)
	}
	if err := removeEmptyLogs(dir, opts.Logger); err != nil {
		return nil, err
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open badger %s: %w", dir, err)
	}
	return db, nil
}

// removeEmptyLogs deletes empty memtable WALs (.mem) and value-log files
// (.vlog) in dir before Badger opens it. Badger deletes such a file by
// truncating it to zero and then removing it, and creates one before it
// writes its 20-byte header; a process killed in between leaves an empty
// file, and Open then fails on it every time ("Create a new file",
// dgraph-io/badger#2207, still open in v4.9.6). An empty file holds
// nothing, not even the header every written one starts with, so nothing
// is lost. TestCrashKillDuringRestore found this: a kill during a Close
// left the current generation unopenable.
//
// It holds the lock Badger takes on the directory (flock on the directory
// itself) while it looks, so it never touches the files of a DB another
// process has open; if the lock is taken it does nothing, and Badger's Open
// reports the lock.
func removeEmptyLogs(dir string, logger badger.Logger) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	defer d.Close() // releases the lock
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil
	}
	ents, err := d.ReadDir(-1)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	removed := false
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".mem") || strings.HasSuffix(name, ".vlog")) {
			continue
		}
		fi, err := e.Info()
		if err != nil || fi.Size() != 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("remove empty %s: %w", name, err)
		}
		if logger != nil {
			logger.Warningf("removed %s: empty, left by a process killed while Badger created or deleted it", name)
		}
		removed = true
	}
	if removed {
		return syncDir(dir)
	}
	return nil
}

// badgerLogger bridges Badger's printf logger into slog. Badger logs a lot
// at info level on every open and compaction; only warnings and errors
// pass, and the info lines that report write stalls ("L0 was stalled for
// 1.2s", logged when a flush waited over a second for compaction; the
// lifetime total at close when it is not zero), which go out as warnings:
// a stall holds every write to that DB, Raft commits included.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Infof(f string, a ...any) {
	if !strings.Contains(f, "stalled") {
		return
	}
	msg := strings.TrimSpace(fmt.Sprintf(f, a...))
	if strings.HasSuffix(msg, " 0s") {
		return // "Lifetime L0 stalled for: 0s" at every close
	}
	b.l.Warn(msg, "component", "badger")
}

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}

func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
}

func (badgerLogger) Debugf(string, ...any) {}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// ticker runs a function on its own goroutine until stop is called; stop
// waits for the goroutine and is safe to call more than once.
type ticker struct {
	stopOnce sync.Once
	quit     chan struct{}
	done     chan struct{}
}

// startTicker runs fn every interval.
func startTicker(interval time.Duration, fn func()) *ticker {
	return startLoop(interval, func() time.Duration { fn(); return interval })
}

// startLoop runs fn after first, then again after each wait fn returns.
func startLoop(first time.Duration, fn func() time.Duration) *ticker {
	t := &ticker{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(t.done)
		tm := time.NewTimer(first)
		defer tm.Stop()
		for {
			select {
			case <-t.quit:
				return
			case <-tm.C:
				tm.Reset(fn())
			}
		}
	}()
	return t
}

func (t *ticker) stop() {
	t.stopOnce.Do(func() { close(t.quit) })
	<-t.done
}

// runValueLogGC rewrites value-log files until Badger finds nothing worth
// rewriting (at most a few rounds per tick, so Close is never held up long).
func runValueLogGC(db *badger.DB, logger *slog.Logger) {
	for range 4 {
		err := db.RunValueLogGC(gcDiscardRatio)
		if err == nil {
			continue
		}
		if !errors.Is(err, badger.ErrNoRewrite) && !errors.Is(err, badger.ErrRejected) {
			logger.Warn("value log gc", "err", err)
		}
		return
	}
}

// syncDir fsyncs a directory so that renames and new files in it survive
// a power loss.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
