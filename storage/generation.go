package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Files in the FSM directory.
const (
	currentFile = "CURRENT" // names the live generation, e.g. "gen-000003\n"
	dirtyFile   = "DIRTY"   // exists while open; holds the kernel boot id
	genPrefix   = "gen-"
	bootIDPath  = "/proc/sys/kernel/random/boot_id"
)

func genName(n int) string { return fmt.Sprintf("%s%06d", genPrefix, n) }

func parseGenName(s string) (int, bool) {
	rest, ok := strings.CutPrefix(s, genPrefix)
	if !ok || len(rest) != 6 {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 1 {
		return 0, false
	}
	return n, true
}

// readBootID returns the kernel's boot id, "" where there is none. The FSM
// DB does not fsync each commit; comparing boot ids tells a process crash
// (page cache intact, state trusted) from a reboot (state not trusted).
func readBootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// openCurrent finds or creates the live generation, throws the state away
// when the previous run ended in a reboot, removes stray generations, marks
// the directory dirty and opens the Badger DB.
func (f *FSM) openCurrent() (*generation, error) {
	if err := os.MkdirAll(f.dir, 0o750); err != nil {
		return nil, fmt.Errorf("create dir: %w", err)
	}
	n, err := f.currentGeneration()
	if err != nil {
		return nil, err
	}
	prev, err := os.ReadFile(filepath.Join(f.dir, dirtyFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Closed cleanly: everything was flushed and synced.
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", dirtyFile, err)
	case f.bootID != "" && string(bytes.TrimSpace(prev)) == f.bootID:
		f.logger.Info("fsm was not closed cleanly; same boot, page cache intact, keeping state")
	default:
		// A reboot (or no way to tell) while open: writes that were only in
		// the page cache may be lost in any order, so the DB may not even be
		// a prefix of the log. Start empty; the snapshot store and the Raft
		// log rebuild it.
		f.logger.Warn("fsm was open across a reboot; discarding its state to rebuild from snapshot and log",
			"generation", n)
		n++
		if err := f.newGeneration(n); err != nil {
			return nil, err
		}
	}
	if err := f.removeStrays(n); err != nil {
		return nil, err
	}
	if err := writeFileSync(f.dir, dirtyFile, []byte(f.bootID+"\n")); err != nil {
		return nil, err
	}
	dir := filepath.Join(f.dir, genName(n))
	db, err := openBadger(dir, badgerOptions(dir, false, f.logger))
	if err != nil {
		return nil, err
	}
	return &generation{num: n, dir: dir, db: db, refs: 1}, nil
}

// readCurrent reads the generation number CURRENT names; an error
// wrapping fs.ErrNotExist when there is no CURRENT.
func (f *FSM) readCurrent() (int, error) {
	b, err := os.ReadFile(filepath.Join(f.dir, currentFile))
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", currentFile, err)
	}
	name := strings.TrimSpace(string(b))
	n, ok := parseGenName(name)
	if !ok {
		return 0, fmt.Errorf("%w: %s names %q", ErrCorrupt, currentFile, name)
	}
	return n, nil
}

// currentGeneration finds the live generation, creating generation 1 for a
// new directory. The pointer is written before Badger creates any file, so
// a generation holding data without a pointer is never this package's doing.
func (f *FSM) currentGeneration() (int, error) {
	n, err := f.readCurrent()
	if err == nil {
		name := genName(n)
		if _, err := os.Stat(filepath.Join(f.dir, name)); err != nil {
			return 0, fmt.Errorf("%w: %s names %s: %w", ErrCorrupt, currentFile, name, err)
		}
		return n, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", f.dir, err)
	}
	for _, e := range entries {
		if _, ok := parseGenName(e.Name()); ok {
			if _, err := os.Stat(filepath.Join(f.dir, e.Name(), "MANIFEST")); err == nil {
				return 0, fmt.Errorf("%w: %s holds data but %s is missing", ErrCorrupt, e.Name(), currentFile)
			}
		}
	}
	// A fresh directory, or a first open that crashed before any data.
	return 1, f.newGeneration(1)
}

// newGeneration creates an empty generation n and makes it current.
func (f *FSM) newGeneration(n int) error {
	dir := filepath.Join(f.dir, genName(n))
	if err := removeGeneration(dir); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o750); err != nil {
		return fmt.Errorf("create generation: %w", err)
	}
	return f.switchTo(n)
}

// switchTo points CURRENT at generation n: write a temporary file, fsync,
// rename over CURRENT, fsync the directory. The rename is the commit point.
func (f *FSM) switchTo(n int) error {
	if err := syncDir(f.dir); err != nil { // the generation's own entry first
		return err
	}
	return writeFileSync(f.dir, currentFile, []byte(genName(n)+"\n"))
}

// writeFileSync atomically replaces dir/name with data, durably.
func writeFileSync(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+".tmp")
	fh, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	_, err = fh.Write(data)
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return syncDir(dir)
}

// clearDirty removes the dirty marker after a clean close.
func clearDirty(dir string) error {
	if err := os.Remove(filepath.Join(dir, dirtyFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", dirtyFile, err)
	}
	return syncDir(dir)
}

// removeStrays deletes every generation but keep, and leftover temp files:
// the remains of a restore or a rebuild that crashed or completed.
func (f *FSM) removeStrays(keep int) error {
	entries, err := os.ReadDir(f.dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", f.dir, err)
	}
	for _, e := range entries {
		name := e.Name()
		if n, ok := parseGenName(name); ok && n != keep {
			f.logger.Info("removing stray fsm generation", "generation", name)
			if err := removeGeneration(filepath.Join(f.dir, name)); err != nil {
				return err
			}
		}
		if strings.HasSuffix(name, ".tmp") {
			if err := os.Remove(filepath.Join(f.dir, name)); err != nil {
				return fmt.Errorf("remove %s: %w", name, err)
			}
		}
	}
	return nil
}

func removeGeneration(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove generation %s: %w", filepath.Base(dir), err)
	}
	return nil
}
