package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/ristretto/v2/z"
)

// manyKeys returns the records of a valid stream of n unique-key records
// of about 100 bytes each (no donations, so nothing else must add up),
// sorted: n = 100,000 is ~10 MB, several of the tables a restore builds.
func manyKeys(n int) [][2]string {
	recs := make([][2]string, 0, n+2)
	pad := strings.Repeat("x", 60)
	for i := range n {
		recs = append(recs, [2]string{fmt.Sprintf("k/idem/%010d-%s", i, pad), fmt.Sprintf("don-%010d", i)})
	}
	u64 := func(v uint64) string { return string(binary.BigEndian.AppendUint64(nil, v)) }
	return append(recs, [2]string{appliedKey, u64(7)}, [2]string{countKey, u64(0)})
}

// TestRestoreRefusesLateFaults sends streams that go wrong only after
// several tables have been built from them: a duplicate or out-of-order
// key (which Badger's StreamWriter would panic on, from its own goroutine,
// if it ever saw one), a bad checksum, a truncated end. Each must be
// refused with ErrBadSnapshot, leave the state and the generations as
// they were, and not crash the process.
func TestRestoreRefusesLateFaults(t *testing.T) {
	recs := manyKeys(100_000)
	late := 60_000 // ~6 MB into the stream
	dup := slices.Clone(recs)
	dup = slices.Insert(dup, late+1, dup[late])
	swapped := slices.Clone(recs)
	swapped[late], swapped[late+1] = swapped[late+1], swapped[late]
	good := rawStream(recs)
	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-1] ^= 1
	tests := map[string][]byte{
		"duplicate key":     rawStream(dup),
		"key out of order":  rawStream(swapped),
		"bad checksum":      badCRC,
		"truncated trailer": good[:len(good)-3],
	}
	for name, b := range maps.Clone(tests) {
		tests["v2 "+name] = toZstd(t, b)
	}

	f := populated(t, 40)
	want := fingerprintOf(t, f)
	for _, name := range slices.Sorted(maps.Keys(tests)) {
		t.Run(name, func(t *testing.T) {
			requireRefused(t, f, want, tests[name])
		})
	}
	mustVerify(t, f)
	applyAll(t, f, entries(t, f.AppliedIndex()+1, createCmd("still-alive", 1, "EUR")))

	// The same stream without the fault restores, into bottom-level tables
	// of about BaseTableSize each.
	if err := restoreBytes(f, toZstd(t, good)); err != nil {
		t.Fatal(err)
	}
	if f.AppliedIndex() != 7 || f.Count() != 0 {
		t.Fatalf("restored applied %d count %d", f.AppliedIndex(), f.Count())
	}
	g, err := f.acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer f.release(g)
	tables := g.db.Tables()
	tableSize := g.db.Opts().BaseTableSize
	if len(tables) < 3 {
		t.Fatalf("%d tables for ~10 MB, want several of %d bytes", len(tables), tableSize)
	}
	bottom := g.db.Opts().MaxLevels - 1
	for _, ti := range tables {
		if ti.Level != bottom || int64(ti.OnDiskSize) > tableSize*5/4 {
			t.Fatalf("table %d at level %d, %d bytes; want level %d, at most ~%d bytes", ti.ID, ti.Level, ti.OnDiskSize, bottom, tableSize)
		}
	}
	err = g.db.View(func(txn *badger.Txn) error {
		for _, i := range []int{0, late, len(recs) - 3} {
			item, err := txn.Get([]byte(recs[i][0]))
			if err != nil {
				return fmt.Errorf("%s: %w", recs[i][0], err)
			}
			v, err := item.ValueCopy(nil)
			if err != nil || string(v) != recs[i][1] {
				return fmt.Errorf("%s = %q, %v; want %q", recs[i][0], v, err, recs[i][1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// And the restored generation takes ordinary writes.
	applyAll(t, f, entries(t, 8, createCmd("after-restore", 5, "EUR"), paymentCmd("e", "after-restore", "succeeded")))
	if tot := f.Totals("EUR"); tot.RaisedMinor != 5 || tot.Donations != 1 {
		t.Fatalf("totals after restore and apply: %+v", tot)
	}
	mustVerify(t, f)
}

// TestBulkLoaderRefusesDisorder: the loader checks the order itself too,
// so that not even a caller that skipped readSnapshot's check can hand
// the StreamWriter a key it would panic on.
func TestBulkLoaderRefusesDisorder(t *testing.T) {
	for name, keys := range map[string][]string{
		"duplicate":    {"k/a", "k/b", "k/b"},
		"out of order": {"k/a", "k/c", "k/b"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			db, err := openBadger(dir, loadOptions(dir, testLogger(t)))
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := db.Close(); err != nil {
					t.Error(err)
				}
			}()
			l, err := newBulkLoader(db)
			if err != nil {
				t.Fatal(err)
			}
			for i, k := range keys {
				err = l.put([]byte(k), []byte("v"))
				if i < len(keys)-1 && err != nil {
					t.Fatalf("put %q: %v", k, err)
				}
			}
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("last put: err = %v, want ErrBadSnapshot", err)
			}
			l.cancel()
		})
	}
}

// TestAppendKVMatchesBadger: appendKV writes exactly what badger's own
// KVToBuffer writes for the same key, value and version.
func TestAppendKVMatchesBadger(t *testing.T) {
	long := bytes.Repeat([]byte("v"), 300) // a two-byte length
	for _, kv := range [][2][]byte{
		{[]byte("d/a"), []byte("\x02record")},
		{[]byte("m/count"), make([]byte, 8)},
		{[]byte("k/idem/x"), long},
		{[]byte("k/empty-value"), nil},
		{bytes.Repeat([]byte("k"), 1024), long},
	} {
		for _, version := range []uint64{1, 300, 1 << 40} {
			ours, theirs := z.NewBuffer(1<<10, "test"), z.NewBuffer(1<<10, "test")
			appendKV(ours, kv[0], kv[1], version)
			badger.KVToBuffer(&pb.KV{Key: kv[0], Value: kv[1], Version: version}, theirs)
			if !bytes.Equal(ours.Bytes(), theirs.Bytes()) {
				t.Errorf("key %.20q value %d bytes version %d:\n ours   %x\n badger %x", kv[0], len(kv[1]), version, ours.Bytes(), theirs.Bytes())
			}
			_, _ = ours.Release(), theirs.Release()
		}
	}
}
