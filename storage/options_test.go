package storage

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/surgefund/surge/donation"
)

// TestBadgerLoggerPassesStalls checks which Badger lines reach the log:
// warnings, errors and write stalls; not the info chatter.
func TestBadgerLoggerPassesStalls(t *testing.T) {
	var buf bytes.Buffer
	bl := badgerLogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	bl.Infof("L0 was stalled for %s\n", 1500*time.Millisecond)
	bl.Infof("Lifetime L0 stalled for: %s\n", time.Duration(0))
	bl.Infof("Lifetime L0 stalled for: %s\n", 3*time.Second)
	bl.Infof("[%d]%s LOG Compact %d->%d\n", 0, "x", 0, 1)
	bl.Infof("All %d tables opened in %s\n", 3, time.Millisecond)
	bl.Debugf("Flushing memtable\n")
	bl.Warningf("value log %d\n", 7)
	bl.Errorf("boom\n")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		`level=WARN msg="L0 was stalled for 1.5s"`,
		`level=WARN msg="Lifetime L0 stalled for: 3s"`,
		`level=WARN msg="value log 7"`,
		`level=ERROR msg=boom`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) || !strings.Contains(lines[i], "component=badger") {
			t.Errorf("line %d = %q, want %s component=badger", i, lines[i], w)
		}
	}
}

// TestOpenIgnoresEmptyLogFiles: an empty .mem or .vlog file, which a
// process killed while Badger created or deleted one leaves behind, must
// not stop either DB from opening (it made Badger's Open fail every time).
func TestOpenIgnoresEmptyLogFiles(t *testing.T) {
	for _, name := range []string{"00001.mem", "00007.mem", "000009.vlog"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			f, err := OpenFSM(filepath.Join(dir, "fsm"), testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			applyAll(t, f, entries(t, 1, createCmd("a", 5, "EUR"), paymentCmd("e", "a", donation.OutcomeSucceeded)))
			gen := f.cur.dir
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			l, err := OpenLogStore(filepath.Join(dir, "log"), testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := l.StoreLogs(entries(t, 1, createCmd("a", 5, "EUR"))); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			for _, d := range []string{gen, filepath.Join(dir, "log")} {
				if err := os.WriteFile(filepath.Join(d, name), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			f = openTestFSM(t, filepath.Join(dir, "fsm"))
			if got := f.Totals("EUR"); got.RaisedMinor != 5 || f.AppliedIndex() != 2 {
				t.Fatalf("after reopen: totals %+v applied %d", got, f.AppliedIndex())
			}
			mustVerify(t, f)
			l = openTestLogStore(t, filepath.Join(dir, "log"))
			if last, err := l.LastIndex(); err != nil || last != 1 {
				t.Fatalf("log store after reopen: last %d, %v", last, err)
			}
		})
	}
}
