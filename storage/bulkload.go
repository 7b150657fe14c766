package storage

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/ristretto/v2/z"
)

// A restore builds the new generation with Badger's StreamWriter: the
// snapshot stream is sorted, so the tables can be written straight into
// the bottom level (no WAL, memtables, L0 flushes or compactions). See
// DESIGN.md "Atomic restore" for the measurements and for what keeps it
// from panicking.
const (
	// loadBatchSize is how many bytes of records are handed to the
	// StreamWriter per Write. Its goroutine queues up to 3 batches, so
	// the stream's memory stays at a few MiB whatever its size.
	loadBatchSize = 1 << 20
	// loadVersion is the Badger version of every restored key. Any value
	// above 0 works; Flush starts the DB's oracle after it, so later
	// writes have higher versions.
	loadVersion = 1
	// loadMemTableSize is the memtable of a DB being loaded (loadOptions).
	loadMemTableSize = 1 << 20
)

// loadOptions are the options of a generation DB while a restore builds
// it; it is closed and opened again with badgerOptions before it serves.
// They differ in three things:
//
//   - no compactors (there is nothing to compact: every table goes to the
//     bottom level, in key order, without overlaps);
//   - no checksum pass over each table just built from memory (the reopen
//     verifies every table, as every open does);
//   - a 1-MiB memtable (loadMemTableSize). The StreamWriter never writes
//     to it; only the raised applied index can. But Badger allocates its
//     arena whole, twice (at open and in Prepare), and the Go runtime
//     counts the 10 MiB of an ordinary memtable's arena against its memory
//     limit though the pages are never touched. Under a tight limit that
//     room is what the GC lacks (DESIGN.md "Atomic restore").
//
// The size of the tables the StreamWriter builds, BaseTableSize x
// TableSizeMultiplier^(MaxLevels-2), comes from badgerOptions: with its
// multiplier of 1 they are BaseTableSize (2 MiB), each built in a heap
// buffer of twice that, with up to 16 being written at once.
func loadOptions(dir string, logger *slog.Logger) badger.Options {
	return badgerOptions(dir, false, logger).
		WithMemTableSize(loadMemTableSize).
		// Badger refuses a value threshold above 15 % of the memtable.
		WithValueThreshold(loadMemTableSize / 16).
		WithNumCompactors(0).
		WithChecksumVerificationMode(options.NoVerification)
}

// bulkLoader feeds records to a StreamWriter. Keys must come strictly
// ascending: the StreamWriter panics, from its own goroutine, on a key
// that is not above the previous one, so readSnapshot checks the order
// (and refuses the stream with ErrBadSnapshot) before calling put, and put
// checks it once more.
//
// The records are encoded into a batch buffer on the caller's goroutine;
// full batches go to a goroutine of our own that calls Write (which
// decodes them again and copies every key and value), so that work runs
// beside the stream's decompression and verification. Two buffers
// alternate, so at most two batches are in hand.
type bulkLoader struct {
	sw    *badger.StreamWriter
	cur   *z.Buffer
	free  chan *z.Buffer // written batches, for reuse
	full  chan *z.Buffer // batches for the writer goroutine
	done  chan struct{}  // closed when the writer goroutine has returned
	err   atomic.Pointer[error]
	last  []byte
	n     int
	ended bool
}

// newBulkLoader prepares db, a new and empty DB opened with loadOptions,
// for a stream write.
func newBulkLoader(db *badger.DB) (*bulkLoader, error) {
	sw := db.NewStreamWriter()
	if err := sw.Prepare(); err != nil {
		sw.Cancel()
		return nil, fmt.Errorf("prepare stream writer: %w", err)
	}
	l := &bulkLoader{
		sw:   sw,
		cur:  newLoadBuffer(),
		free: make(chan *z.Buffer, 1),
		full: make(chan *z.Buffer),
		done: make(chan struct{}),
	}
	l.free <- newLoadBuffer()
	go l.writeLoop()
	return l, nil
}

func newLoadBuffer() *z.Buffer { return z.NewBuffer(loadBatchSize+loadBatchSize/4, "surge.restore") }

// writeLoop hands full batches to the StreamWriter. After an error it only
// recycles the buffers; put and finish report the error.
func (l *bulkLoader) writeLoop() {
	defer close(l.done)
	for buf := range l.full {
		if l.err.Load() == nil {
			if err := l.sw.Write(buf); err != nil {
				err = fmt.Errorf("stream write: %w", err)
				l.err.Store(&err)
			}
		}
		buf.Reset()
		l.free <- buf
	}
}

func (l *bulkLoader) failed() error {
	if p := l.err.Load(); p != nil {
		return *p
	}
	return nil
}

// put queues one record. Key and value are copied before put returns.
func (l *bulkLoader) put(key, val []byte) error {
	if l.n > 0 && string(key) <= string(l.last) {
		return badSnapshot("key %q out of order", key) // readSnapshot refuses this first
	}
	l.last = append(l.last[:0], key...)
	l.n++
	appendKV(l.cur, key, val, loadVersion)
	if l.cur.LenNoPadding() < loadBatchSize {
		return nil
	}
	l.full <- l.cur
	l.cur = <-l.free
	return l.failed()
}

// stop ends the writer goroutine after the batches handed to it.
func (l *bulkLoader) stop() {
	if !l.ended {
		l.ended = true
		close(l.full)
		<-l.done
	}
}

// finish writes what is queued and the last table, syncs the DB directory
// and hands the DB back for ordinary writes.
func (l *bulkLoader) finish() error {
	defer l.release()
	if l.cur.LenNoPadding() > 0 {
		l.full <- l.cur
		l.cur = <-l.free
	}
	l.stop()
	if err := l.failed(); err != nil {
		l.sw.Cancel()
		return err
	}
	if err := l.sw.Flush(); err != nil {
		return fmt.Errorf("stream flush: %w", err)
	}
	return nil
}

// cancel abandons the load; the caller deletes the generation.
func (l *bulkLoader) cancel() {
	defer l.release()
	l.stop()
	l.sw.Cancel()
}

func (l *bulkLoader) release() {
	for _, b := range []*z.Buffer{l.cur, <-l.free} {
		_ = b.Release()
	}
}

// appendKV appends to buf what badger.KVToBuffer would for a pb.KV holding
// only key, value and version: the protocol-buffer encoding of fields 1
// (bytes), 2 (bytes) and 4 (varint), each left out when empty, as
// proto3 does. KVToBuffer goes through the generic marshaller, which
// costs more than the rest of the loader's own work per record
// (TestAppendKVMatchesBadger compares the two).
func appendKV(buf *z.Buffer, key, val []byte, version uint64) {
	n := 0
	if len(key) > 0 {
		n += 1 + uvarintLen(uint64(len(key))) + len(key)
	}
	if len(val) > 0 {
		n += 1 + uvarintLen(uint64(len(val))) + len(val)
	}
	if version > 0 {
		n += 1 + uvarintLen(version)
	}
	b := buf.SliceAllocate(n)[:0]
	if len(key) > 0 {
		b = append(binary.AppendUvarint(append(b, 1<<3|2), uint64(len(key))), key...)
	}
	if len(val) > 0 {
		b = append(binary.AppendUvarint(append(b, 2<<3|2), uint64(len(val))), val...)
	}
	if version > 0 {
		_ = binary.AppendUvarint(append(b, 4<<3|0), version)
	}
}

func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}
