package storage

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// BenchmarkLogStoreSustained runs the log DB the way Raft does under load:
// batches of a realistic command, each stored and fsynced by one StoreLogs
// (64 entries, and for the base options also 8 and 2: a follower under
// light load stores small batches), and after every `threshold` entries a
// compaction that keeps `trailing` (DeleteRange of the head). Besides
// ns/entry it reports the whole process's CPU per entry, which includes
// Badger's background flushes and compactions, and the bytes it wrote to
// storage per entry (diskWritten).
func BenchmarkLogStoreSustained(b *testing.B) {
	data := mustEncode(b, createCmd("bench-000000000001", 2500, "EUR"))
	for _, v := range logOptionVariants() {
		batches := []int{64}
		if v.name == "base" {
			batches = []int{64, 8, 2}
		}
		for _, batch := range batches {
			name := v.name
			if batch != 64 {
				name = fmt.Sprintf("%s-batch%d", v.name, batch)
			}
			b.Run(name, func(b *testing.B) { benchLogStoreSustained(b, v, batch, data) })
		}
	}
}

func benchLogStoreSustained(b *testing.B, v logOptionVariant, batch int, data []byte) {
	const threshold, trailing = 16384, 16384
	dir := b.TempDir()
	logger := testLogger(b)
	s, err := openLogStore(dir, logger, v.opts(dir, logger))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	logs := make([]*raft.Log, batch)
	next, lastSnap := uint64(1), uint64(0)
	cpu0, disk0 := processCPU(), diskWritten()
	b.ResetTimer()
	for b.Loop() {
		for j := range logs {
			logs[j] = &raft.Log{Index: next, Term: 1, Type: raft.LogCommand, Data: data}
			next++
		}
		if err := s.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
		if last := next - 1; last-lastSnap >= threshold {
			first, _ := s.FirstIndex()
			if last > trailing {
				if err := s.DeleteRange(first, last-trailing); err != nil {
					b.Fatal(err)
				}
			}
			lastSnap = last
		}
	}
	n := float64(b.N * batch)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/entry")
	b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/n, "cpu-ns/entry")
	b.ReportMetric(float64(diskWritten()-disk0)/n, "disk-B/entry")
}

type logOptionVariant struct {
	name string
	opts func(dir string, logger *slog.Logger) badger.Options
}

// logOptionVariants are the log DB options compared in DESIGN.md: the
// shared base (what OpenLogStore uses) and single changes to it.
func logOptionVariants() []logOptionVariant {
	base := func(dir string, l *slog.Logger) badger.Options { return badgerOptions(dir, true, l) }
	return []logOptionVariant{
		{"base", base},
		{"mem32", func(d string, l *slog.Logger) badger.Options { return base(d, l).WithMemTableSize(32 << 20) }},
		{"mem32-stall8", func(d string, l *slog.Logger) badger.Options {
			return base(d, l).WithMemTableSize(32 << 20).WithNumLevelZeroTables(4).WithNumLevelZeroTablesStall(8)
		}},
		{"vlog64", func(d string, l *slog.Logger) badger.Options { return base(d, l).WithValueThreshold(64) }},
	}
}
