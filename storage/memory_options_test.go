package storage

import (
	"testing"
)

// TestCompactionTablesStaySmall guards the memory bound of table builders:
// Badger builds every table in a heap buffer of twice its target size,
// several at once, and the target grows by TableSizeMultiplier per level
// below the base level. The largest target any level can have,
// BaseTableSize x TableSizeMultiplier^(MaxLevels-2), is the one Badger's
// StreamWriter builds its bottom-level tables at, so this builds ~6 MB of
// them with each DB's options and measures the tables Badger wrote: with a
// multiplier of 1 every one is about BaseTableSize (2 MiB), however large
// the DB grows (DESIGN.md "Memory of a loaded node"); with Badger's default
// of 2 they would be one 6 MB table.
func TestCompactionTablesStaySmall(t *testing.T) {
	const maxTable = 2 << 20
	recs := manyKeys(60_000)
	for _, sync := range []bool{true, false} {
		dir := t.TempDir()
		o := badgerOptions(dir, sync, testLogger(t))
		if o.MemTableSize > 8<<20 || o.NumMemtables > 2 {
			t.Errorf("sync=%v: memtables %d x %d, want at most 2 x 8 MiB", sync, o.NumMemtables, o.MemTableSize)
		}
		db, err := openBadger(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		l, err := newBulkLoader(db)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if err := l.put([]byte(r[0]), []byte(r[1])); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.finish(); err != nil {
			t.Fatal(err)
		}
		tables := db.Tables()
		if len(tables) < 2 {
			t.Errorf("sync=%v: %d table(s) for ~6 MB, want several of at most %d bytes", sync, len(tables), maxTable)
		}
		for _, ti := range tables {
			if ti.OnDiskSize > maxTable*5/4 {
				t.Errorf("sync=%v: table %d at level %d is %d bytes, want at most ~%d (base table %d, multiplier %d, %d levels)",
					sync, ti.ID, ti.Level, ti.OnDiskSize, maxTable, o.BaseTableSize, o.TableSizeMultiplier, o.MaxLevels)
			}
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
