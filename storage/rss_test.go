package storage

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// rssKB reads the resident set size of this process from /proc.
func rssKB() (int64, error) {
	m, err := readProcMem()
	return m.rss, err
}

// envRSSPairs sets how many donations the idle child writes (default 2,000).
const envRSSPairs = "SURGE_STORAGE_RSS_PAIRS"

// idleChild opens both DBs (or nothing, for the baseline), writes donations
// through the log and the FSM in Raft-sized batches, settles, and prints
// its RSS.
func idleChild(dir string, open bool) error {
	pairs := uint64(2000)
	if v := os.Getenv(envRSSPairs); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return err
		}
		pairs = n
	}
	if open {
		logs, err := OpenLogStore(filepath.Join(dir, "log"), nil)
		if err != nil {
			return err
		}
		defer logs.Close()
		fsm, err := OpenFSM(filepath.Join(dir, "fsm"), nil)
		if err != nil {
			return err
		}
		defer fsm.Close()
		var batch []*raft.Log
		for k := uint64(1); k < 2*pairs; k += 2 {
			pair, err := pairLogs(k)
			if err != nil {
				return err
			}
			batch = append(batch, pair...)
			if len(batch) == 64 || k+2 >= 2*pairs {
				if err := logs.StoreLogs(batch); err != nil {
					return err
				}
				for _, r := range fsm.ApplyBatch(batch) {
					if err, ok := r.(error); ok {
						return err
					}
				}
				batch = batch[:0]
			}
		}
	}
	// Idle: let background goroutines settle and return freed memory.
	time.Sleep(2 * time.Second)
	runtime.GC()
	debug.FreeOSMemory()
	rss, err := rssKB()
	if err != nil {
		return err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("rss %d heap %d\n", rss, ms.HeapInuse/1024)
	return nil
}

// TestIdleRSS measures the resident memory of a process holding both DBs
// open against one holding none; DESIGN.md records the figures.
func TestIdleRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("measures a child process for a few seconds")
	}
	if _, err := rssKB(); err != nil {
		t.Skipf("no /proc: %v", err)
	}
	measure := func(mode string) (rss, heap int64) {
		t.Helper()
		c := startChild(t, envCrashMode+"="+mode, envCrashDir+"="+t.TempDir())
		var line string
		c.killAfter(t, time.Minute, func(l string) { line = l })
		if _, err := fmt.Sscanf(line, "rss %d heap %d", &rss, &heap); err != nil {
			t.Fatalf("%s child printed %q: %v", mode, line, err)
		}
		return rss, heap
	}
	baseRSS, baseHeap := measure("baseline")
	rss, heap := measure("idle")
	t.Logf("idle RSS with both DBs open: %d KiB (heap %d KiB); baseline without: %d KiB (heap %d KiB); DBs add %d KiB",
		rss, heap, baseRSS, baseHeap, rss-baseRSS)
	if rss-baseRSS > 128<<10 {
		t.Fatalf("both DBs add %d KiB at idle; the tuned options should keep this far below 128 MiB", rss-baseRSS)
	}
}
