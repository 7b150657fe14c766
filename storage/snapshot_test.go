package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/klauspost/compress/zstd"

	"github.com/surgefund/surge/donation"
)

// fingerprint is everything observable about an FSM's state.
type fingerprint struct {
	Applied   uint64
	Count     int64
	Totals    []donation.Totals
	Donations []donation.Donation
}

func fingerprintOf(t testing.TB, f *FSM) fingerprint {
	t.Helper()
	return fingerprint{Applied: f.AppliedIndex(), Count: f.Count(), Totals: f.AllTotals(), Donations: exportAll(t, f)}
}

func populated(t testing.TB, n int) *FSM {
	t.Helper()
	f := openTestFSM(t, t.TempDir())
	logs := mixedWorkload(t, n)
	for i := 0; i < len(logs); i += 64 {
		f.ApplyBatch(logs[i:min(i+64, len(logs))])
	}
	return f
}

func restoreBytes(f *FSM, b []byte) error {
	return f.Restore(io.NopCloser(bytes.NewReader(b)))
}

func TestSnapshotRestoreIntoFreshFSM(t *testing.T) {
	src := populated(t, 200)
	snap := snapshotBytes(t, src)
	dst := openTestFSM(t, t.TempDir())
	if err := restoreBytes(dst, snap); err != nil {
		t.Fatal(err)
	}
	want, got := fingerprintOf(t, src), fingerprintOf(t, dst)
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("restored state differs:\nwant applied=%d count=%d totals=%v\ngot  applied=%d count=%d totals=%v",
			want.Applied, want.Count, want.Totals, got.Applied, got.Count, got.Totals)
	}
	mustVerify(t, dst)

	// The restored FSM keeps deduplicating: replaying any old entry is a no-op,
	// and redelivering an event under a new index is a duplicate.
	logs := mixedWorkload(t, 200)
	if r := dst.Apply(logs[5]); r != nil {
		t.Fatalf("old entry answered %v", r)
	}
	redelivered := entries(t, dst.AppliedIndex()+1, paymentCmd("ok-don-0000", "don-0000", donation.OutcomeSucceeded))
	if r := applyAll(t, dst, redelivered)[0]; r.Code != donation.CodeDuplicate {
		t.Fatalf("redelivered event after restore: %s", r.Code)
	}
}

func TestSnapshotIsPointInTime(t *testing.T) {
	f := populated(t, 30)
	before := fingerprintOf(t, f)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	// Apply continues while the snapshot is open.
	applyAll(t, f, entries(t, f.AppliedIndex()+1, createCmd("later", 999, "EUR"),
		paymentCmd("ev-later", "later", donation.OutcomeSucceeded)))
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	dst := openTestFSM(t, t.TempDir())
	if err := restoreBytes(dst, sink.Bytes()); err != nil {
		t.Fatal(err)
	}
	if got := fingerprintOf(t, dst); !reflect.DeepEqual(before, got) {
		t.Fatalf("snapshot saw writes made after it was taken: applied %d vs %d", got.Applied, before.Applied)
	}
	snap.Release() // twice is fine
}

func TestRestoreReplacesNotMerges(t *testing.T) {
	small := openTestFSM(t, t.TempDir())
	applyAll(t, small, entries(t, 1, createCmd("only", 700, "GBP"), paymentCmd("e", "only", donation.OutcomeSucceeded)))
	snap := snapshotBytes(t, small)

	big := populated(t, 60)
	if err := restoreBytes(big, snap); err != nil {
		t.Fatal(err)
	}
	if want, got := fingerprintOf(t, small), fingerprintOf(t, big); !reflect.DeepEqual(want, got) {
		t.Fatalf("restore merged or lost state: count %d totals %v", got.Count, got.Totals)
	}
	if _, ok, _ := big.Donation("don-0001"); ok {
		t.Fatal("old donation survived the restore")
	}
	mustVerify(t, big)
	// Applying continues on the new state.
	res := applyAll(t, big, entries(t, big.AppliedIndex()+1, createCmd("after", 5, "GBP")))
	if res[0].Code != donation.CodeOK || big.Count() != 2 {
		t.Fatalf("apply after restore: %+v count %d", res[0], big.Count())
	}
	// Exactly one generation remains on disk.
	if gens := generations(t, big.dir); len(gens) != 1 {
		t.Fatalf("generations on disk: %v", gens)
	}
}

func generations(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), genPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// rawStream builds a version-1 (uncompressed) snapshot stream from records
// with a correct trailer, so that the semantic checks can be exercised past
// the checksum.
func rawStream(records [][2]string) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint32(append(b, snapMagic...), snapVersionPlain)
	for _, r := range records {
		b = append(b, snapRecord)
		b = binary.AppendUvarint(b, uint64(len(r[0])))
		b = append(b, r[0]...)
		b = binary.AppendUvarint(b, uint64(len(r[1])))
		b = append(b, r[1]...)
	}
	b = binary.BigEndian.AppendUint64(append(b, snapEnd), uint64(len(records)))
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// toZstd turns a version-1 stream into the version-2 stream of the same
// records: header with version 2, body zstd-compressed and, when the
// version-1 checksum was right, the checksum recomputed over the new header
// and the uncompressed body (a wrong one stays wrong).
func toZstd(t testing.TB, plain []byte) []byte {
	t.Helper()
	hdr := binary.BigEndian.AppendUint32([]byte(snapMagic), snapVersionZstd)
	body := bytes.Clone(plain[12:])
	if n := len(plain); n >= 16 && binary.BigEndian.Uint32(plain[n-4:]) == crc32.Checksum(plain[:n-4], castagnoli) {
		body = body[:len(body)-4]
		sum := crc32.Update(crc32.Checksum(hdr, castagnoli), castagnoli, body)
		body = binary.BigEndian.AppendUint32(body, sum)
	}
	var out bytes.Buffer
	out.Write(hdr)
	zw, err := zstd.NewWriter(&out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// toPlain turns a version-2 stream into the version-1 stream of the same
// records.
func toPlain(t testing.TB, v2 []byte) []byte {
	t.Helper()
	if !bytes.HasPrefix(v2, binary.BigEndian.AppendUint32([]byte(snapMagic), snapVersionZstd)) {
		t.Fatalf("not a version-2 stream: %q", v2[:min(12, len(v2))])
	}
	body := unzstd(t, v2[12:])
	b := binary.BigEndian.AppendUint32([]byte(snapMagic), snapVersionPlain)
	b = append(b, body[:len(body)-4]...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// unzstd decompresses a zstd stream.
func unzstd(t testing.TB, z []byte) []byte {
	t.Helper()
	zr, err := zstd.NewReader(bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	body, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func TestRestoreRejectsBadStreams(t *testing.T) {
	good := snapshotBytes(t, populated(t, 20))
	goodPlain := toPlain(t, good)
	flip := func(b []byte, at int) []byte {
		b = bytes.Clone(b)
		b[at] ^= 0x20
		return b
	}
	don := func(id string, st donation.Status, minor int64) string {
		return string(encodeDonation(donation.Donation{ID: id, Status: st, Amount: donation.Money{Minor: minor, Currency: "EUR"}}))
	}
	u64 := func(n uint64) string { return string(binary.BigEndian.AppendUint64(nil, n)) }
	tot := func(raised, n int64) string {
		return string(encodeTotals(donation.Totals{RaisedMinor: raised, Donations: n}))
	}
	// Faults in the records themselves, each sent both plain (version 1)
	// and compressed (version 2, valid zstd around the bad records).
	semantic := map[string][]byte{
		"unknown tag":            append(bytes.Clone(goodPlain[:12]), 'Z'),
		"oversized key":          append(append(bytes.Clone(goodPlain[:12]), snapRecord), binary.AppendUvarint(nil, 1<<20)...),
		"truncated mid record":   goodPlain[:len(goodPlain)/2],
		"flipped byte in data":   flip(goodPlain, len(goodPlain)/2),
		"flipped byte in crc":    flip(goodPlain, len(goodPlain)-1),
		"flipped record count":   flip(goodPlain, len(goodPlain)-6),
		"totals without money":   rawStream([][2]string{{"d/a", don("a", donation.StatusPending, 5)}, {"m/count", u64(1)}, {"t/EUR", tot(5, 1)}}),
		"money without totals":   rawStream([][2]string{{"d/a", don("a", donation.StatusSucceeded, 5)}, {"m/count", u64(1)}}),
		"count mismatch":         rawStream([][2]string{{"d/a", don("a", donation.StatusPending, 5)}, {"m/count", u64(2)}}),
		"id under wrong key":     rawStream([][2]string{{"d/b", don("a", donation.StatusPending, 5)}, {"m/count", u64(1)}}),
		"unknown key":            rawStream([][2]string{{"x/zzz", "1"}}),
		"unknown currency":       rawStream([][2]string{{"t/XXX", tot(0, 0)}}),
		"keys out of order":      rawStream([][2]string{{"m/count", u64(0)}, {"m/applied", u64(3)}}),
		"duplicate key":          rawStream([][2]string{{"m/applied", u64(3)}, {"m/applied", u64(4)}}),
		"bad applied length":     rawStream([][2]string{{"m/applied", "123"}}),
		"undecodable donation":   rawStream([][2]string{{"d/a", "\x01{"}, {"m/count", u64(1)}}),
		"empty unique key value": rawStream([][2]string{{"k/idem/x", ""}}),
	}
	tests := map[string][]byte{
		"empty":                         nil,
		"wrong magic":                   append([]byte("NOTSURGE"), good[8:]...),
		"newer version":                 append(append([]byte(snapMagic), 0, 0, 0, 3), good[12:]...),
		"version 0":                     append(append([]byte(snapMagic), 0, 0, 0, 0), goodPlain[12:]...),
		"v1 trailing garbage":           append(bytes.Clone(goodPlain), 'x'),
		"v1 header, zstd body":          append(bytes.Clone(goodPlain[:12]), good[12:]...),
		"v2 header, plain body":         append(bytes.Clone(good[:12]), goodPlain[12:]...),
		"v2 truncated compressed":       good[:len(good)-3],
		"v2 truncated mid stream":       good[:len(good)/2],
		"v2 flipped compressed byte":    flip(good, len(good)/2),
		"v2 flipped byte in frame end":  flip(good, len(good)-1),
		"v2 trailing garbage":           append(bytes.Clone(good), 'x'),
		"v2 second zstd frame appended": append(bytes.Clone(good), toZstd(t, rawStream(nil))[12:]...),
	}
	for name, b := range semantic {
		tests["v1 "+name] = b
		tests["v2 "+name] = toZstd(t, b)
	}
	// The builders themselves must produce acceptable streams.
	okStream := rawStream([][2]string{{"d/a", don("a", donation.StatusSucceeded, 5)}, {"m/applied", u64(9)}, {"m/count", u64(1)}, {"t/EUR", tot(5, 1)}})
	for _, b := range [][]byte{okStream, toZstd(t, okStream)} {
		if err := restoreBytes(openTestFSM(t, t.TempDir()), b); err != nil {
			t.Fatalf("hand-built good stream refused: %v", err)
		}
	}
	for _, b := range [][]byte{okStream, toZstd(t, okStream), good, goodPlain, toZstd(t, goodPlain)} {
		if err := CheckSnapshot(bytes.NewReader(b)); err != nil {
			t.Fatalf("CheckSnapshot refused a good stream: %v", err)
		}
	}

	f := populated(t, 40)
	want := fingerprintOf(t, f)
	for _, name := range slices.Sorted(maps.Keys(tests)) {
		t.Run(name, func(t *testing.T) {
			if err := CheckSnapshot(bytes.NewReader(tests[name])); !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("CheckSnapshot: err = %v, want ErrBadSnapshot", err)
			}
			requireRefused(t, f, want, tests[name])
		})
	}
	mustVerify(t, f)
	// And the FSM still applies.
	applyAll(t, f, entries(t, f.AppliedIndex()+1, createCmd("still-alive", 1, "EUR")))
}

// TestApplyAfterRestoreSeesRestoredState: after a restore to a state where
// the donation is still pending, a refund must see it pending, not the
// succeeded value applied before the restore.
func TestApplyAfterRestoreSeesRestoredState(t *testing.T) {
	f := openTestFSM(t, t.TempDir())
	applyAll(t, f, entries(t, 1, createCmd("a", 2500, "EUR")))
	pending := snapshotBytes(t, f)
	res := applyAll(t, f, entries(t, 2, paymentCmd("e1", "a", donation.OutcomeSucceeded)))
	if res[0].Code != donation.CodeOK {
		t.Fatalf("payment: %+v", res[0])
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(pending))); err != nil {
		t.Fatal(err)
	}
	res = applyAll(t, f, entries(t, 3, refundCmd("r1", "a", 100, "EUR")))
	if res[0].Code != donation.CodeInvalidTransition || res[0].Donation.Status != donation.StatusPending {
		t.Fatalf("refund after restore: %+v", res[0])
	}
	mustVerify(t, f)
}

// TestRestoreReadsVersion1 restores an uncompressed stream, the format
// written before version 2 (old backups, snapshots of an older leader).
func TestRestoreReadsVersion1(t *testing.T) {
	src := populated(t, 100)
	v1 := toPlain(t, snapshotBytes(t, src))
	dst := openTestFSM(t, t.TempDir())
	if err := restoreBytes(dst, v1); err != nil {
		t.Fatal(err)
	}
	if want, got := fingerprintOf(t, src), fingerprintOf(t, dst); !reflect.DeepEqual(want, got) {
		t.Fatal("state restored from version 1 differs")
	}
	mustVerify(t, dst)
}

func TestRestoreFromSnapshotStore(t *testing.T) {
	src := populated(t, 30)
	store, err := raft.NewFileSnapshotStore(t.TempDir(), 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	dst := openTestFSM(t, t.TempDir())
	// Empty store: nothing to do.
	if err := dst.RestoreFromSnapshotStore(store); err != nil || dst.AppliedIndex() != 0 {
		t.Fatalf("empty store: applied=%d err=%v", dst.AppliedIndex(), err)
	}

	// Raft's snapshot index can sit above the FSM's own (noops at the end).
	raftIndex := src.AppliedIndex() + 3
	sink, err := store.Create(raft.SnapshotVersionMax, raftIndex, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	if err := dst.RestoreFromSnapshotStore(store); err != nil {
		t.Fatal(err)
	}
	if dst.AppliedIndex() != raftIndex {
		t.Fatalf("applied = %d, want the snapshot's index %d", dst.AppliedIndex(), raftIndex)
	}
	if !reflect.DeepEqual(exportAll(t, src), exportAll(t, dst)) || !reflect.DeepEqual(src.AllTotals(), dst.AllTotals()) {
		t.Fatal("restored state differs")
	}
	// Not ahead any more: a second call does nothing.
	gensBefore := generations(t, dst.dir)
	if err := dst.RestoreFromSnapshotStore(store); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gensBefore, generations(t, dst.dir)) {
		t.Fatal("second call restored again")
	}
}

// A snapshot being persisted keeps its generation alive through a restore
// that retires it, and the retired generation is deleted afterwards.
func TestRestoreWhilePersisting(t *testing.T) {
	f := populated(t, 40)
	want := snapshotBytes(t, f)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := restoreBytes(f, snapshotBytes(t, populated(t, 3))); err != nil {
		t.Fatal(err)
	}
	if gens := generations(t, f.dir); len(gens) != 2 {
		t.Fatalf("retired generation should live while the snapshot is open: %v", gens)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !bytes.Equal(sink.Bytes(), want) {
		t.Fatal("snapshot of the retired generation changed")
	}
	if gens := generations(t, f.dir); len(gens) != 1 {
		t.Fatalf("retired generation not deleted after release: %v", gens)
	}
}

func TestOpenFSMGenerations(t *testing.T) {
	t.Run("stray generations and temp files are removed", func(t *testing.T) {
		dir := t.TempDir()
		f, err := OpenFSM(dir, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		applyAll(t, f, entries(t, 1, createCmd("a", 1, "EUR")))
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		// What a crashed restore leaves behind.
		if err := os.MkdirAll(filepath.Join(dir, genName(2)), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, genName(2), "junk"), []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, currentFile+".tmp"), []byte(genName(2)), 0o640); err != nil {
			t.Fatal(err)
		}
		f = openTestFSM(t, dir)
		if _, ok, _ := f.Donation("a"); !ok {
			t.Fatal("state lost")
		}
		if gens := generations(t, dir); !reflect.DeepEqual(gens, []string{genName(1)}) {
			t.Fatalf("generations %v", gens)
		}
		if _, err := os.Stat(filepath.Join(dir, currentFile+".tmp")); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("temp pointer not removed")
		}
	})
	t.Run("pointer naming a missing generation is corrupt", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, currentFile), []byte(genName(4)+"\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenFSM(dir, testLogger(t)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("garbage pointer is corrupt", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, currentFile), []byte("../../etc\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenFSM(dir, testLogger(t)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("data without a pointer is refused, not deleted", func(t *testing.T) {
		dir := t.TempDir()
		f, err := OpenFSM(dir, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		applyAll(t, f, entries(t, 1, createCmd("a", 1, "EUR")))
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, currentFile)); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenFSM(dir, testLogger(t)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("err = %v", err)
		}
		if gens := generations(t, dir); len(gens) != 1 {
			t.Fatalf("data deleted: %v", gens)
		}
	})
}

// The FSM DB does not fsync each commit. After a kill -9 (same boot) the
// page cache still holds every write and the state is kept; after a reboot
// it is discarded and rebuilt from the snapshot store and the log.
func TestFSMUncleanShutdown(t *testing.T) {
	tests := []struct {
		name      string
		bootAfter string
		keep      bool
	}{
		{"same boot keeps state", "boot-1", true},
		{"reboot discards state", "boot-2", false},
		{"unknown boot discards state", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			f, err := openFSM(dir, testLogger(t), "boot-1")
			if err != nil {
				t.Fatal(err)
			}
			applyAll(t, f, entries(t, 1, createCmd("a", 100, "EUR"), paymentCmd("e", "a", donation.OutcomeSucceeded)))
			// Simulate a crash: close Badger but leave the dirty marker.
			if err := f.cur.db.Close(); err != nil {
				t.Fatal(err)
			}
			f.gc.stop()

			g, err := openFSM(dir, testLogger(t), tc.bootAfter)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = g.Close() })
			_, ok, err := g.Donation("a")
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.keep || (g.AppliedIndex() == 2) != tc.keep {
				t.Fatalf("kept=%v applied=%d, want kept=%v", ok, g.AppliedIndex(), tc.keep)
			}
			if gens := generations(t, dir); len(gens) != 1 {
				t.Fatalf("generations %v", gens)
			}
			if err := g.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, dirtyFile)); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("clean close left the dirty marker")
			}
		})
	}
}

func TestSnapshotStreamFormatIsStable(t *testing.T) {
	f := openTestFSM(t, t.TempDir())
	applyAll(t, f, entries(t, 1, createCmd("a", 100, "EUR")))
	var buf bytes.Buffer
	if err := f.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	v2 := buf.Bytes()
	if !bytes.HasPrefix(v2, []byte(snapMagic+"\x00\x00\x00\x02")) {
		t.Fatalf("header %q", v2[:12])
	}
	// The body is one zstd frame (magic 28 b5 2f fd).
	if !bytes.HasPrefix(v2[12:], []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		t.Fatalf("body does not start a zstd frame: % x", v2[12:16])
	}
	b := toPlain(t, v2)
	tr := b[len(b)-13:]
	if tr[0] != snapEnd {
		t.Fatalf("trailer tag %q", tr[0])
	}
	// d/a, k/idem/idem-a, m/applied, m/count
	if n := binary.BigEndian.Uint64(tr[1:9]); n != 4 {
		t.Fatalf("record count %d", n)
	}
	// The version-2 checksum covers its own header and the uncompressed body.
	body := unzstd(t, v2[12:])
	logical := append(bytes.Clone(v2[:12]), body...)
	if crc := binary.BigEndian.Uint32(body[len(body)-4:]); crc != crc32.Checksum(logical[:len(logical)-4], castagnoli) {
		t.Fatal("checksum does not cover the stream")
	}
	if !bytes.Equal(v2, snapshotBytes(t, f)) {
		t.Fatal("WriteSnapshot and Persist differ")
	}
}

func FuzzCheckSnapshot(f *testing.F) {
	fsm := openTestFSM(f, f.TempDir())
	applyAll(f, fsm, entries(f, 1, createCmd("a", 100, "EUR"), paymentCmd("e", "a", donation.OutcomeSucceeded),
		refundCmd("r", "a", 10, "EUR")))
	f.Add(snapshotBytes(f, fsm))
	f.Add(rawStream(nil))
	f.Add(toPlain(f, snapshotBytes(f, fsm)))
	f.Add([]byte(snapMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := CheckSnapshot(bytes.NewReader(b)); err != nil && !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("error does not wrap ErrBadSnapshot: %v", err)
		}
	})
}

// requireRefused restores stream into f and fails unless the restore is
// refused with ErrBadSnapshot and leaves f's state (want) and its single
// generation as they were.
func requireRefused(t *testing.T, f *FSM, want fingerprint, stream []byte) {
	t.Helper()
	if err := restoreBytes(f, stream); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("err = %v, want ErrBadSnapshot", err)
	}
	if got := fingerprintOf(t, f); !reflect.DeepEqual(want, got) {
		t.Fatal("a refused restore changed the state")
	}
	if gens := generations(t, f.dir); len(gens) != 1 {
		t.Fatalf("refused restore left generations %v", gens)
	}
}
