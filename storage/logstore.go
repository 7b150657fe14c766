package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

var (
	_ raft.LogStore    = (*LogStore)(nil)
	_ raft.StableStore = (*LogStore)(nil)
)

// Key prefixes of the log DB. Log keys are the prefix plus the index as a
// big-endian uint64, so that byte order is index order.
var (
	logPrefix    = []byte{'l'}
	stablePrefix = []byte{'s'}
)

// LogStore is the Raft log and stable store: one Badger DB that fsyncs
// every commit before returning.
type LogStore struct {
	db     *badger.DB
	logger *slog.Logger
	gc     *ticker

	// life guards db against Close: operations hold it shared.
	life   sync.RWMutex
	closed bool

	// wmu serialises writers so that the cached bounds follow commit order.
	// dmu serialises DeleteRange calls; a head trim holds only dmu while it
	// deletes, so appends go on (see DeleteRange).
	wmu   sync.Mutex
	dmu   sync.Mutex
	first atomic.Uint64
	last  atomic.Uint64
}

// OpenLogStore opens or creates the log store in dir and starts its
// value-log GC. The caller owns it and must Close it.
func OpenLogStore(dir string, logger *slog.Logger) (*LogStore, error) {
	logger = orDiscard(logger).With("store", "raftlog")
	return openLogStore(dir, logger, badgerOptions(dir, true, logger))
}

func openLogStore(dir string, logger *slog.Logger, opts badger.Options) (*LogStore, error) {
	db, err := openBadger(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open log store: %w", err)
	}
	s := &LogStore{db: db, logger: logger}
	if err := s.loadBounds(); err != nil {
		return nil, errors.Join(fmt.Errorf("open log store: %w", err), db.Close())
	}
	s.gc = startTicker(gcInterval, func() { runValueLogGC(db, logger) })
	return s, nil
}

// Close stops the GC goroutine and closes the DB. It is idempotent.
func (s *LogStore) Close() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.gc.stop()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close log store: %w", err)
	}
	return nil
}

func (s *LogStore) enter() error {
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return ErrClosed
	}
	return nil
}

func (s *LogStore) leave() { s.life.RUnlock() }

// FirstIndex returns the first index written, 0 for an empty log.
func (s *LogStore) FirstIndex() (uint64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	return s.first.Load(), nil
}

// LastIndex returns the last index written, 0 for an empty log.
func (s *LogStore) LastIndex() (uint64, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	return s.last.Load(), nil
}

// GetLog reads the entry at index into log; raft.ErrLogNotFound if absent.
func (s *LogStore) GetLog(index uint64, log *raft.Log) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(logKey(index))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return decodeLog(v, log) })
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("get log %d: %w", index, err)
	}
	if log.Index != index {
		return fmt.Errorf("get log %d: %w: entry says index %d", index, ErrCorrupt, log.Index)
	}
	return nil
}

// StoreLog stores one entry.
func (s *LogStore) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

// StoreLogs stores a batch in one transaction, durable when it returns. A
// batch larger than Badger's transaction limit is split; every part is
// fsynced before StoreLogs returns.
func (s *LogStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	s.wmu.Lock()
	defer s.wmu.Unlock()

	var buf []byte
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	lo, hi := uint64(0), uint64(0)
	for _, l := range logs {
		buf = encodeLog(buf[:0], l)
		// Badger keeps the slices until commit: give it its own copy.
		val := bytes.Clone(buf)
		err := txn.Set(logKey(l.Index), val)
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err := txn.Commit(); err != nil {
				return fmt.Errorf("store logs: commit part up to %d: %w", hi, err)
			}
			s.widen(lo, hi)
			lo, hi = 0, 0
			txn = s.db.NewTransaction(true)
			err = txn.Set(logKey(l.Index), val)
		}
		if err != nil {
			return fmt.Errorf("store log %d: %w", l.Index, err)
		}
		if lo == 0 || l.Index < lo {
			lo = l.Index
		}
		if l.Index > hi {
			hi = l.Index
		}
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("store logs %d-%d: %w", lo, hi, err)
	}
	s.widen(lo, hi)
	return nil
}

// widen extends the cached bounds by a committed range. Callers hold wmu.
func (s *LogStore) widen(lo, hi uint64) {
	if lo == 0 {
		return
	}
	if f := s.first.Load(); f == 0 || lo < f {
		s.first.Store(lo)
	}
	if hi > s.last.Load() {
		s.last.Store(hi)
	}
}

// DeleteRange deletes the entries min..max inclusive. It is a no-op when
// min > max (raft can ask for that during compaction).
//
// Raft calls it in two ways. Log compaction after a snapshot trims the head
// (min at or below the first index, max below the last) from the snapshot
// goroutine while the main goroutine keeps appending: that path publishes
// the new first index at once, then deletes without holding the writers'
// lock, so StoreLogs is not held up by a trim of 65k+ entries. Anything
// else (a follower truncating a conflicting tail, a range covering the whole
// log) runs under the writers' lock and recomputes the bounds from the DB.
// Either way the keys are deleted in commits of at most deleteChunk, each
// fsynced; a crash part-way leaves a shorter head, which OpenLogStore reads
// back. The log may have a gap (raft keeps the old trailing entries after
// installing a snapshot past them), so keys are found by iterating, never
// assumed.
func (s *LogStore) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if err := s.deleteRange(min, max); err != nil {
		return fmt.Errorf("delete range %d-%d: %w", min, max, err)
	}
	return nil
}

// deleteRange is DeleteRange once the store is entered and dmu is held.
func (s *LogStore) deleteRange(min, max uint64) error {
	s.wmu.Lock()
	first, last := s.first.Load(), s.last.Load()
	if first != 0 && min <= first && max < last {
		s.wmu.Unlock()
		// Head trim. Appends only go past last and dmu keeps other
		// deletions out, so the entries from max+1 on stay where they are.
		next, err := s.firstFrom(max + 1)
		if err != nil {
			return err
		}
		s.wmu.Lock()
		s.first.Store(next)
		s.wmu.Unlock()
		return s.deleteLogs(min, max)
	}
	defer s.wmu.Unlock()
	if err := s.deleteLogs(min, max); err != nil {
		return err
	}
	return s.loadBounds()
}

// deleteChunk bounds the deletions per commit, so that a long trim
// interleaves with appends instead of queueing one huge write ahead of them,
// and bounds the keys held in memory.
const deleteChunk = 4096

// deleteLogs deletes every stored entry in min..max, deleteChunk at a time.
func (s *LogStore) deleteLogs(min, max uint64) error {
	end := logKey(max)
	from := logKey(min)
	keys := make([][]byte, 0, deleteChunk)
	for {
		// Collect the keys first: a transaction must not be committed
		// while one of its iterators is open.
		keys = keys[:0]
		err := s.db.View(func(txn *badger.Txn) error {
			it := logIterator(txn, false)
			defer it.Close()
			for it.Seek(from); it.Valid() && len(keys) < deleteChunk; it.Next() {
				k := it.Item().Key()
				if bytes.Compare(k, end) > 0 {
					break
				}
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			return nil
		}
		if err := s.deleteKeys(keys); err != nil {
			return err
		}
		last := indexOf(keys[len(keys)-1])
		if last >= max {
			return nil
		}
		from = logKey(last + 1)
	}
}

// deleteKeys deletes keys in one commit (more if Badger says the
// transaction is full), fsynced before it returns.
func (s *LogStore) deleteKeys(keys [][]byte) error {
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	for _, k := range keys {
		err := txn.Delete(k)
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err := txn.Commit(); err != nil {
				return err
			}
			txn = s.db.NewTransaction(true)
			err = txn.Delete(k)
		}
		if err != nil {
			return err
		}
	}
	return txn.Commit()
}

// firstFrom returns the index of the first stored entry at or after index.
func (s *LogStore) firstFrom(index uint64) (uint64, error) {
	var found uint64
	err := s.db.View(func(txn *badger.Txn) error {
		found = seekLog(txn, index, false)
		return nil
	})
	if err == nil && found == 0 {
		err = fmt.Errorf("%w: no entry at or after %d below the last index", ErrCorrupt, index)
	}
	return found, err
}

// logIterator iterates over the log entries' keys, without their values.
func logIterator(txn *badger.Txn, reverse bool) *badger.Iterator {
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = logPrefix
	opts.Reverse = reverse
	return txn.NewIterator(opts)
}

// seekLog returns the index of the first stored entry at or after index
// (at or before it when reverse), 0 if there is none.
func seekLog(txn *badger.Txn, index uint64, reverse bool) uint64 {
	it := logIterator(txn, reverse)
	defer it.Close()
	if it.Seek(logKey(index)); it.Valid() {
		return indexOf(it.Item().Key())
	}
	return 0
}

// loadBounds reads the first and last log index from the DB.
func (s *LogStore) loadBounds() error {
	var first, last uint64
	err := s.db.View(func(txn *badger.Txn) error {
		first = seekLog(txn, 0, false)
		last = seekLog(txn, ^uint64(0), true)
		return nil
	})
	if err != nil {
		return fmt.Errorf("load log bounds: %w", err)
	}
	s.first.Store(first)
	s.last.Store(last)
	return nil
}

// Set stores a stable-store value.
func (s *LogStore) Set(key, val []byte) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(stableKey(key), bytes.Clone(val))
	})
	if err != nil {
		return fmt.Errorf("set %q: %w", key, err)
	}
	return nil
}

// Get reads a stable-store value; ErrKeyNotFound (text "not found") if absent.
func (s *LogStore) Get(key []byte) ([]byte, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	var val []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(stableKey(key))
		if err != nil {
			return err
		}
		val, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		// Not wrapped: raft compares the text with "not found".
		return nil, ErrKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get %q: %w", key, err)
	}
	return val, nil
}

// SetUint64 stores a uint64 stable-store value.
func (s *LogStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 reads a uint64 stable-store value; ErrKeyNotFound if absent.
func (s *LogStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("get uint64 %q: %w: %d bytes", key, ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func logKey(index uint64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, 9), logPrefix...), index)
}

func indexOf(key []byte) uint64 {
	return binary.BigEndian.Uint64(key[len(logPrefix):])
}

func stableKey(key []byte) []byte {
	return append(append(make([]byte, 0, len(stablePrefix)+len(key)), stablePrefix...), key...)
}

// Log entry encoding, version 1:
//
//	byte    version (1)
//	uvarint index
//	uvarint term
//	byte    type
//	uvarint len(data), data
//	uvarint len(extensions), extensions
//	byte    1 if AppendedAt is set, then varint unix seconds, uvarint nanoseconds
const logEncodingV1 = 1

func encodeLog(b []byte, l *raft.Log) []byte {
	b = append(b, logEncodingV1)
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	b = append(b, l.Extensions...)
	if l.AppendedAt.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, l.AppendedAt.Unix())
	return binary.AppendUvarint(b, uint64(l.AppendedAt.Nanosecond()))
}

// decodeLog decodes into l, copying every slice out of b (Badger owns b).
func decodeLog(b []byte, l *raft.Log) error {
	d := decoder{b: b}
	if v := d.byte(); v != logEncodingV1 {
		if d.err != nil {
			return d.err
		}
		return fmt.Errorf("decode log: %w: encoding version %d", ErrCorrupt, v)
	}
	var out raft.Log
	out.Index = d.uvarint()
	out.Term = d.uvarint()
	out.Type = raft.LogType(d.byte())
	out.Data = d.bytes()
	out.Extensions = d.bytes()
	if d.byte() == 1 {
		sec := d.varint()
		nsec := d.uvarint()
		out.AppendedAt = time.Unix(sec, int64(nsec))
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("decode log: %w", d.err)
	}
	*l = out
	return nil
}

// decoder reads the varint framing used by the log encoding; the first
// error sticks and later reads return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated entry", ErrCorrupt)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	if n == 0 {
		return nil
	}
	out := bytes.Clone(d.b[:n])
	d.b = d.b[n:]
	return out
}

// Size reports the on-disk size of the log store's LSM tree and value log
// (Badger's own estimate), for metrics. It is zero after Close.
func (s *LogStore) Size() (lsm, vlog int64) {
	s.life.RLock()
	defer s.life.RUnlock()
	if s.closed {
		return 0, 0
	}
	return s.db.Size()
}
