package storage

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
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
