package storage

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"github.com/klauspost/compress/zstd"

	"github.com/surgefund/surge/donation"
)

var _ raft.FSMSnapshot = (*fsmSnapshot)(nil)

// Snapshot stream format (all integers big-endian or uvarint). The logical
// stream is
//
//	header  "SURGEFSM" uint32(version)
//	record  'R' uvarint(len key) key uvarint(len value) value    (keys ascending)
//	trailer 'E' uint64(records) uint32(CRC-32C of every logical byte before it)
//
// and nothing may follow the trailer. Version 1 stores it as is. Version 2
// (what this build writes) stores the 12-byte header as is and everything
// after it as one zstd stream; the CRC still covers the uncompressed bytes,
// header included, so it checks what is restored, not what was shipped.
// Both are read; anything else is refused.
const (
	snapMagic        = "SURGEFSM"
	snapVersionPlain = 1
	snapVersionZstd  = 2
	snapRecord       = 'R'
	snapEnd          = 'E'
	maxSnapKeyLen    = 1 << 10
	maxSnapValLen    = 16 << 20
	snapBufferSize   = 64 << 10

	// zstd: the fastest level (BenchmarkSnapshotPersist, realistic
	// donations: 3.7x smaller, Persist 1.8x the CPU of the plain walk; s2
	// was only 1.9x smaller, zstd's default level no smaller with this
	// window; see DESIGN.md §Snapshots). A 1 MiB window keeps the
	// encoder and the decoder at a few MB; the decoder refuses streams that
	// ask for more than snapMaxWindow, so a hostile stream cannot make it
	// allocate much.
	snapZstdWindow = 1 << 20
	snapMaxWindow  = 8 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Snapshot captures a read-only Badger transaction at the current applied
// index. Apply continues while Persist streams from it.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	g, err := f.acquire()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &fsmSnapshot{f: f, g: g, txn: g.db.NewTransaction(false), applied: f.applied.Load()}, nil
}

type fsmSnapshot struct {
	f       *FSM
	g       *generation
	txn     *badger.Txn
	applied uint64
	once    sync.Once
}

// Persist syncs the FSM DB (so that Raft, which compacts its log after a
// snapshot, never drops entries whose effects are only in the page cache)
// and streams the captured view into sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	err := s.g.db.Sync()
	if err == nil {
		w := bufio.NewWriterSize(sink, snapBufferSize)
		err = writeSnapshot(w, s.txn)
		if err == nil {
			err = w.Flush()
		}
	}
	if err != nil {
		return errors.Join(fmt.Errorf("persist snapshot at %d: %w", s.applied, err), sink.Cancel())
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("persist snapshot at %d: close sink: %w", s.applied, err)
	}
	return nil
}

// Release ends the read transaction. It is safe to call more than once.
func (s *fsmSnapshot) Release() {
	s.once.Do(func() {
		s.txn.Discard()
		s.f.release(s.g)
	})
}

// writeSnapshot writes the captured view as a version-2 stream: the header
// as is, the rest through a zstd encoder.
func writeSnapshot(w io.Writer, txn *badger.Txn) error {
	crc := crc32.New(castagnoli)
	hdr := binary.BigEndian.AppendUint32([]byte(snapMagic), snapVersionZstd)
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	_, _ = crc.Write(hdr)
	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(snapZstdWindow))
	if err != nil {
		return fmt.Errorf("zstd: %w", err)
	}
	if err := writeSnapshotBody(zw, crc, txn); err != nil {
		zw.Reset(nil) // drop what is buffered; the stream is abandoned anyway
		return err
	}
	return zw.Close()
}

// writeSnapshotBody writes every record and the trailer to w, continuing
// crc (which already covers the header).
func writeSnapshotBody(w io.Writer, crc hash.Hash32, txn *badger.Txn) error {
	mw := io.MultiWriter(w, crc)
	opts := badger.DefaultIteratorOptions
	opts.PrefetchSize = 256
	it := txn.NewIterator(opts)
	defer it.Close()
	var n uint64
	var buf []byte
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		buf = append(buf[:0], snapRecord)
		buf = binary.AppendUvarint(buf, uint64(len(item.Key())))
		buf = append(buf, item.Key()...)
		err := item.Value(func(v []byte) error {
			buf = binary.AppendUvarint(buf, uint64(len(v)))
			buf = append(buf, v...)
			return nil
		})
		if err != nil {
			return fmt.Errorf("read %q: %w", item.Key(), err)
		}
		if _, err := mw.Write(buf); err != nil {
			return err
		}
		n++
	}
	tr := binary.BigEndian.AppendUint64([]byte{snapEnd}, n)
	if _, err := mw.Write(tr); err != nil {
		return err
	}
	_, err := w.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32()))
	return err
}

// Restore replaces the whole state with the snapshot in rc, atomically:
// the stream goes into a new generation directory, is verified and synced,
// and only then does CURRENT switch to it. A bad stream leaves the old state
// untouched and returns an error wrapping ErrBadSnapshot.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return f.restore(rc, 0)
}

// RestoreFromSnapshotStore restores the newest snapshot in store when it is
// ahead of the applied index. This happens when the FSM was rebuilt after a
// reboot (see OpenFSM). Call it before starting Raft, which runs with
// NoSnapshotRestoreOnStart and replays the log from the snapshot's index.
func (f *FSM) RestoreFromSnapshotStore(store raft.SnapshotStore) error {
	metas, err := store.List()
	if err != nil {
		return fmt.Errorf("restore from snapshot store: list: %w", err)
	}
	if len(metas) == 0 || metas[0].Index <= f.AppliedIndex() {
		return nil
	}
	meta := metas[0]
	_, rc, err := store.Open(meta.ID)
	if err != nil {
		return fmt.Errorf("restore from snapshot %s: open: %w", meta.ID, err)
	}
	defer rc.Close()
	f.logger.Info("restoring fsm from snapshot", "snapshot", meta.ID, "snapshot_index", meta.Index,
		"applied_index", f.AppliedIndex())
	// Raft's snapshot index can be above the FSM's own applied index when
	// the last entries before it were noops or barriers. Recording it spares
	// the same restore on the next start.
	if err := f.restore(rc, meta.Index); err != nil {
		return fmt.Errorf("restore from snapshot %s: %w", meta.ID, err)
	}
	return nil
}

func (f *FSM) restore(r io.Reader, atLeast uint64) error {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if f.closed {
		return ErrClosed
	}
	start := time.Now()
	old := f.cur
	n := old.num + 1
	f.logger.Info("restoring fsm from snapshot stream", "generation", n)
	dir := filepath.Join(f.dir, genName(n))
	if err := removeGeneration(dir); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	db, st, err := f.loadGeneration(dir, r, atLeast)
	if err != nil {
		return errors.Join(fmt.Errorf("restore: %w", err), removeGeneration(dir))
	}
	if err := f.switchTo(n); err != nil {
		// CURRENT may or may not name the new generation now; only the
		// rename inside switchTo commits, and it failing leaves the old one.
		if cur, cerr := f.readCurrent(); cerr != nil || cur != n {
			return errors.Join(fmt.Errorf("restore: %w", err), db.Close(), removeGeneration(dir))
		}
		f.logger.Warn("restore switched generation but could not sync the directory", "err", err)
	}

	f.mu.Lock()
	f.cur = &generation{num: n, dir: dir, db: db, refs: 1}
	f.publish(st)
	f.failed = nil // the new state starts clean
	f.lastErr.Store(nil)
	f.mu.Unlock()
	f.release(old) // drops its "current" reference; the last reader closes and deletes it

	f.logger.Info("fsm restored", "generation", n, "applied_index", st.applied, "donations", st.count,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// loadGeneration streams a snapshot into a new Badger DB in dir, verifies
// it, and makes it durable. The records go through a StreamWriter, which
// writes them as tables straight into the bottom level (the stream is
// sorted, and readSnapshot checks the order before each record reaches
// it); the tables are synced as they are written, Flush syncs the
// directory, and Close writes out the memtable (only the raised applied
// index can be in it) and syncs the manifest. The DB is then opened again
// with the normal options for service.
func (f *FSM) loadGeneration(dir string, r io.Reader, atLeast uint64) (*badger.DB, stats, error) {
	db, err := openBadger(dir, loadOptions(dir, f.logger))
	if err != nil {
		return nil, stats{}, err
	}
	l, err := newBulkLoader(db)
	if err != nil {
		return nil, stats{}, errors.Join(err, db.Close())
	}
	st, err := readSnapshot(r, l.put)
	if err != nil {
		l.cancel()
	} else {
		err = l.finish()
	}
	if err == nil && atLeast > st.applied {
		st.applied = atLeast
		err = db.Update(func(txn *badger.Txn) error {
			return txn.Set([]byte(appliedKey), binary.BigEndian.AppendUint64(nil, atLeast))
		})
	}
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("flush restored state: %w", cerr)
	}
	if err != nil {
		return nil, stats{}, err
	}
	if err := syncDir(dir); err != nil {
		return nil, stats{}, err
	}
	db, err = openBadger(dir, badgerOptions(dir, false, f.logger))
	if err != nil {
		return nil, stats{}, err
	}
	return db, st, nil
}

// CheckSnapshot reads a whole snapshot stream and verifies it as Restore
// would (framing, checksum, record count, key order, that totals and count
// agree with the donations) without storing anything. Raft panics when the
// FSM refuses a user restore, so check a stream before handing it to
// raft.Raft.Restore. Any failure wraps ErrBadSnapshot.
func CheckSnapshot(r io.Reader) error {
	_, err := readSnapshot(r, nil)
	return err
}

// WriteSnapshot writes the current state as a snapshot stream, the same
// bytes FSMSnapshot.Persist writes, from one consistent read view.
func (f *FSM) WriteSnapshot(w io.Writer) error {
	g, err := f.acquire()
	if err != nil {
		return err
	}
	defer f.release(g)
	err = g.db.View(func(txn *badger.Txn) error {
		bw := bufio.NewWriterSize(w, snapBufferSize)
		if err := writeSnapshot(bw, txn); err != nil {
			return err
		}
		return bw.Flush()
	})
	if err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return nil
}

// readSnapshot checks the stream record by record, handing each record to
// put (when not nil) only after it passed every check of its own (keys
// strictly ascending among them), then checks the trailer and that the
// totals and count agree with the donations. Stream faults wrap
// ErrBadSnapshot; the caller must not commit what put received unless
// readSnapshot succeeds. Key and value are only valid during the call to
// put, which must copy what it keeps.
func readSnapshot(r io.Reader, put func(key, val []byte) error) (stats, error) {
	sr := &snapReader{r: bufio.NewReaderSize(r, snapBufferSize), crc: crc32.New(castagnoli)}
	hdr := sr.read(len(snapMagic) + 4)
	if sr.err != nil {
		return stats{}, badSnapshot("header: %v", sr.err)
	}
	if string(hdr[:len(snapMagic)]) != snapMagic {
		return stats{}, badSnapshot("not a surge fsm snapshot")
	}
	switch v := binary.BigEndian.Uint32(hdr[len(snapMagic):]); v {
	case snapVersionPlain:
	case snapVersionZstd:
		zr, err := zstd.NewReader(sr.r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(snapMaxWindow))
		if err != nil {
			return stats{}, badSnapshot("zstd: %v", err)
		}
		defer zr.Close()
		sr.r = bufio.NewReaderSize(zr, snapBufferSize)
	default:
		return stats{}, badSnapshot("version %d, this build reads %d and %d", v, snapVersionPlain, snapVersionZstd)
	}

	var (
		n         uint64
		key, prev []byte // copies: the value is only valid until the next read
		st        = stats{totals: totalsMap{}}
		sum       = totalsMap{}
		donations int64
	)
	for {
		tag := sr.byte()
		if sr.err != nil {
			return stats{}, badSnapshot("record %d: %v", n, sr.err)
		}
		if tag == snapEnd {
			break
		}
		if tag != snapRecord {
			return stats{}, badSnapshot("record %d: unknown tag %#x", n, tag)
		}
		key = append(key[:0], sr.chunk(maxSnapKeyLen)...)
		val := sr.chunk(maxSnapValLen)
		if sr.err != nil {
			return stats{}, badSnapshot("record %d: %v", n, sr.err)
		}
		if n > 0 && bytes.Compare(key, prev) <= 0 {
			return stats{}, badSnapshot("record %d: key %q out of order", n, key)
		}
		if err := checkRecord(key, val, &st, sum, &donations); err != nil {
			return stats{}, badSnapshot("record %d (%q): %v", n, key, err)
		}
		if put != nil {
			if err := put(key, val); err != nil {
				return stats{}, fmt.Errorf("write record %d: %w", n, err)
			}
		}
		key, prev = prev, key
		n++
	}
	var count uint64
	if b := sr.read(8); sr.err == nil {
		count = binary.BigEndian.Uint64(b)
	}
	want := sr.crc.Sum32()
	got := sr.read(4)
	if sr.err != nil {
		return stats{}, badSnapshot("trailer: %v", sr.err)
	}
	if count != n {
		return stats{}, badSnapshot("trailer counts %d records, stream has %d", count, n)
	}
	if c := binary.BigEndian.Uint32(got); c != want {
		return stats{}, badSnapshot("checksum %08x, computed %08x", c, want)
	}
	if _, err := sr.r.ReadByte(); err == nil {
		return stats{}, badSnapshot("data after the trailer")
	} else if err != io.EOF {
		// Version 2: a zstd stream that does not end cleanly.
		return stats{}, badSnapshot("after the trailer: %v", err)
	}
	if st.count != donations {
		return stats{}, badSnapshot("count says %d donations, stream has %d", st.count, donations)
	}
	if err := sameTotals(sum, st.totals); err != nil {
		return stats{}, badSnapshot("%v", err)
	}
	return st, nil
}

// checkRecord validates one key/value pair and folds it into the figures.
func checkRecord(key, val []byte, st *stats, sum totalsMap, donations *int64) error {
	k := string(key)
	switch {
	case strings.HasPrefix(k, donationPrefix):
		d, err := decodeDonation(val)
		if err != nil {
			return err
		}
		if d.ID != k[len(donationPrefix):] {
			return fmt.Errorf("donation id %q under another key", d.ID)
		}
		if !d.Status.Valid() || !d.Amount.Currency.Valid() {
			return fmt.Errorf("donation with status %q currency %q", d.Status, d.Amount.Currency)
		}
		addCounted(sum, d)
		*donations++
	case strings.HasPrefix(k, uniquePrefix):
		if len(val) == 0 || len(val) > donation.MaxIDLen || !utf8.Valid(val) {
			return errors.New("unique key with a bad donation id")
		}
	case strings.HasPrefix(k, totalsPrefix):
		c := donation.Currency(k[len(totalsPrefix):])
		if !c.Valid() {
			return fmt.Errorf("totals of unknown currency %q", c)
		}
		t, err := decodeTotals(c, val)
		if err != nil {
			return err
		}
		st.totals[c] = t
	case k == appliedKey || k == countKey:
		if len(val) != 8 {
			return fmt.Errorf("%d bytes", len(val))
		}
		if k == appliedKey {
			st.applied = binary.BigEndian.Uint64(val)
		} else {
			st.count = int64(binary.BigEndian.Uint64(val))
		}
	default:
		return errors.New("unknown key")
	}
	return nil
}

func badSnapshot(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrBadSnapshot, fmt.Sprintf(format, a...))
}

// snapReader reads the stream, feeding every byte into the checksum; the
// first error sticks. What it returns is only valid until its next call
// (it points into the buffered reader's buffer when it fits there), so
// that reading a record allocates nothing.
type snapReader struct {
	r   *bufio.Reader
	crc hash.Hash32
	err error
}

// read returns the next n bytes.
func (s *snapReader) read(n int) []byte {
	if s.err != nil {
		return nil
	}
	if n <= s.r.Size() {
		b, err := s.r.Peek(n)
		if err != nil {
			s.err = readErr(err)
			return nil
		}
		s.consume(b)
		return b
	}
	// A length read from the stream: grow with the bytes that really
	// arrive instead of trusting it with one big allocation.
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, s.r, int64(n)); err != nil {
		s.err = readErr(err)
		return nil
	}
	b := buf.Bytes()
	_, _ = s.crc.Write(b)
	return b
}

// consume checksums b, which Peek returned, and moves past it. The bytes
// stay where they are until the next read from s.r.
func (s *snapReader) consume(b []byte) {
	_, _ = s.crc.Write(b)
	_, _ = s.r.Discard(len(b))
}

func (s *snapReader) byte() byte {
	if b := s.read(1); b != nil {
		return b[0]
	}
	return 0
}

// readErr reports a short read as truncation and keeps any other error
// (a decompression failure says more than "unexpected EOF").
func readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// chunk reads a uvarint length of at most max and that many bytes.
func (s *snapReader) chunk(max uint64) []byte {
	if s.err != nil {
		return nil
	}
	// Fewer than MaxVarintLen64 bytes can be left (a short value at the
	// end); Peek then returns them with an error, which only matters if
	// they do not hold a whole varint.
	b, perr := s.r.Peek(binary.MaxVarintLen64)
	n, k := binary.Uvarint(b)
	switch {
	case k == 0 && perr != nil:
		s.err = readErr(perr)
		return nil
	case k <= 0:
		s.err = errors.New("bad length")
		return nil
	case n > max:
		s.err = fmt.Errorf("length %d over the limit %d", n, max)
		return nil
	}
	s.consume(b[:k])
	return s.read(int(n))
}
