package storage

import (
	"log/slog"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// BenchmarkLogStoreSustained runs the log DB the way Raft does under load:
// 64-entry batches of a realistic command, and after every `threshold`
// entries a compaction that keeps `trailing` (DeleteRange of the head).
// Besides ns/entry it reports the whole process's CPU per entry, which
// includes Badger's background flushes and compactions.
func BenchmarkLogStoreSustained(b *testing.B) {
	data := mustEncode(b, createCmd("bench-000000000001", 2500, "EUR"))
	for _, v := range logOptionVariants() {
		b.Run(v.name, func(b *testing.B) {
			const batch, threshold, trailing = 64, 16384, 16384
			dir := b.TempDir()
			logger := testLogger(b)
			s, err := openLogStore(dir, logger, v.opts(dir, logger))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			logs := make([]*raft.Log, batch)
			next, lastSnap := uint64(1), uint64(0)
			cpu0 := processCPU()
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
		})
	}
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
