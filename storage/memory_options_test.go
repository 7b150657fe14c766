package storage

import (
	"math"
	"testing"
)

// TestCompactionTablesStaySmall guards the memory bound of compactions:
// Badger builds every output table in a heap buffer of twice its target
// size, several at once, and the target grows by TableSizeMultiplier per
// level below the base level. With 1 every level's tables are
// BaseTableSize, however large the DB grows (DESIGN.md "Memory of a loaded
// node").
func TestCompactionTablesStaySmall(t *testing.T) {
	for _, sync := range []bool{true, false} {
		o := badgerOptions(t.TempDir(), sync, nil)
		largest := float64(o.BaseTableSize) * math.Pow(float64(o.TableSizeMultiplier), float64(o.MaxLevels-1))
		if o.TableSizeMultiplier != 1 || largest > 2<<20 {
			t.Errorf("sync=%v: base table %d, multiplier %d, %d levels: bottom tables of %.0f bytes, want at most 2 MiB",
				sync, o.BaseTableSize, o.TableSizeMultiplier, o.MaxLevels, largest)
		}
		if o.MemTableSize > 8<<20 || o.NumMemtables > 2 {
			t.Errorf("sync=%v: memtables %d x %d, want at most 2 x 8 MiB", sync, o.NumMemtables, o.MemTableSize)
		}
	}
}
