package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"github.com/surgefund/surge/donation"
)

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.BatchingFSM = (*FSM)(nil)
)

// Key layout of the FSM DB. See DESIGN.md.
const (
	donationPrefix = "d/" // d/<donation id> -> encoded donation.Donation (record.go)
	uniquePrefix   = "k/" // k/<unique key>  -> donation id
	totalsPrefix   = "t/" // t/<currency>    -> raised int64 BE, donations int64 BE
	metaPrefix     = "m/"
	appliedKey     = "m/applied" // uint64 BE: last Raft index whose effects are stored
	countKey       = "m/count"   // uint64 BE: number of d/ records
)

// FSM is the persistent Raft state machine: donations, unique keys and
// per-currency totals in a Badger DB, with the applied index written in the
// same transaction as the effects of the entries it covers.
//
// Raft calls Apply/ApplyBatch, Snapshot and Restore from one goroutine; the
// read methods are safe from any goroutine at any time.
type FSM struct {
	dir    string
	logger *slog.Logger
	bootID string

	// applyMu serialises everything that writes: Apply, ApplyBatch,
	// Snapshot's capture, Restore and Close. The current generation only
	// changes while it is held.
	applyMu sync.Mutex
	failed  error // sticky: a storage error stops all later applies

	// mu guards cur, closed and the reference counts of generations.
	mu       sync.Mutex
	idle     *sync.Cond // signalled when a reference is released
	cur      *generation
	closed   bool
	retiring sync.WaitGroup // retired generations being closed

	gc *ticker

	// Caches published after each commit, read without locks.
	applied atomic.Uint64
	count   atomic.Int64
	totals  atomic.Pointer[totalsMap]
	lastErr atomic.Pointer[error]
}

type totalsMap map[donation.Currency]donation.Totals

// generation is one Badger DB directory (dir/gen-NNNNNN). refs counts
// readers plus one for being current; the last release closes and deletes
// a retired generation.
type generation struct {
	num  int
	dir  string
	db   *badger.DB
	refs int
}

// OpenFSM opens the state machine in dir, creating it when empty. It
// follows dir/CURRENT to the live generation and deletes any other. If the
// machine rebooted while the FSM was open (power loss, kernel panic), the
// unsynced FSM DB cannot be trusted and OpenFSM starts from an empty state:
// call RestoreFromSnapshotStore next and let Raft replay the log.
func OpenFSM(dir string, logger *slog.Logger) (*FSM, error) {
	return openFSM(dir, logger, readBootID())
}

func openFSM(dir string, logger *slog.Logger, bootID string) (*FSM, error) {
	f := &FSM{dir: dir, logger: orDiscard(logger).With("store", "fsm"), bootID: bootID}
	f.idle = sync.NewCond(&f.mu)
	g, err := f.openCurrent()
	if err != nil {
		return nil, fmt.Errorf("open fsm %s: %w", dir, err)
	}
	st, err := readStats(g.db)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open fsm %s: %w", dir, err), g.db.Close())
	}
	f.cur = g
	f.publish(st)
	f.gc = startTicker(gcInterval, f.runGC)
	f.logger.Debug("fsm open", "generation", g.num, "applied_index", st.applied, "donations", st.count)
	return f, nil
}

// Close waits for outstanding snapshots and reads, flushes and closes the
// DB, and marks the shutdown clean. It is idempotent.
func (f *FSM) Close() error {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	for f.cur.refs > 1 {
		f.idle.Wait()
	}
	g := f.cur
	f.mu.Unlock()
	f.gc.stop()
	f.retiring.Wait()

	// Close flushes the memtables into synced tables, so a clean close
	// leaves nothing in the page cache alone.
	err := g.db.Close()
	if err == nil {
		err = syncDir(g.dir)
	}
	if err == nil {
		err = clearDirty(f.dir)
	}
	if err != nil {
		return fmt.Errorf("close fsm: %w", err)
	}
	return nil
}

func (f *FSM) acquire() (*generation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	f.cur.refs++
	return f.cur, nil
}

func (f *FSM) release(g *generation) {
	f.mu.Lock()
	g.refs--
	drop := g.refs == 0
	if drop {
		f.retiring.Add(1)
	}
	f.idle.Broadcast()
	f.mu.Unlock()
	if drop {
		defer f.retiring.Done()
		if err := g.db.Close(); err != nil {
			f.logger.Warn("close retired generation", "generation", g.num, "err", err)
		}
		if err := removeGeneration(g.dir); err != nil {
			f.logger.Warn("delete retired generation", "generation", g.num, "err", err)
		}
	}
}

func (f *FSM) runGC() {
	g, err := f.acquire()
	if err != nil {
		return
	}
	defer f.release(g)
	runValueLogGC(g.db, f.logger)
}

// stats is what the caches hold, read from a DB or a snapshot stream.
type stats struct {
	applied uint64
	count   int64
	totals  totalsMap
}

func (f *FSM) publish(st stats) {
	f.applied.Store(st.applied)
	f.count.Store(st.count)
	t := st.totals
	if t == nil {
		t = totalsMap{}
	}
	f.totals.Store(&t)
}

func readStats(db *badger.DB) (stats, error) {
	var st stats
	err := db.View(func(txn *badger.Txn) error {
		var err error
		if st, err = readStatsTxn(txn); err != nil {
			return err
		}
		if st.applied, err = getUint64(txn, appliedKey); err != nil {
			return err
		}
		n, err := getUint64(txn, countKey)
		st.count = int64(n)
		return err
	})
	if err != nil {
		return stats{}, fmt.Errorf("read fsm state: %w", err)
	}
	return st, nil
}

// Apply applies one committed entry. See ApplyBatch.
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries in one Badger transaction together
// with the new applied index, and returns one response per entry:
//   - nil for an entry at or below the applied index (a replay) and for
//     entries that are not commands;
//   - the bytes of donation.Result.Encode() for a command;
//   - an error value for a command that does not decode (the index still
//     advances: every replica refuses it the same way), or when storage
//     failed (the index does not advance and every later entry fails too,
//     see Err).
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	resp := make([]any, len(logs))
	if len(logs) == 0 {
		return resp
	}
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	fill := func(from int, err error) {
		for i := from; i < len(resp); i++ {
			resp[i] = err
		}
	}
	if f.closed {
		fill(0, ErrClosed)
		return resp
	}
	if f.failed != nil {
		fill(0, f.failed)
		return resp
	}
	done, err := f.applySplit(logs, resp)
	if err != nil {
		f.failed = fmt.Errorf("fsm stopped applying at index %d: %w", logs[done].Index, err)
		f.lastErr.Store(&f.failed)
		f.logger.Error("fsm apply failed; refusing further entries", "index", logs[done].Index, "err", err)
		fill(done, f.failed)
	}
	return resp
}

// Err returns the storage error that stopped the FSM, nil while healthy.
// A stopped FSM has not advanced its applied index past the failure, so a
// restart replays from there.
func (f *FSM) Err() error {
	if p := f.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// applySplit applies logs in one transaction, halving the batch only if
// Badger refuses it as too big. It returns how many entries were committed
// before an error.
func (f *FSM) applySplit(logs []*raft.Log, resp []any) (int, error) {
	err := f.applyChunk(logs, resp)
	if errors.Is(err, badger.ErrTxnTooBig) && len(logs) > 1 {
		f.logger.Debug("batch too big for one transaction; splitting", "entries", len(logs))
		half := len(logs) / 2
		n, err := f.applySplit(logs[:half], resp[:half])
		if err != nil {
			return n, err
		}
		n, err = f.applySplit(logs[half:], resp[half:])
		return half + n, err
	}
	if err != nil {
		return 0, err
	}
	return len(logs), nil
}

// applyChunk is one transaction: decide every entry against the state as
// this transaction sees it (its own earlier writes included), write the
// effects and the applied index, commit, then publish the caches.
func (f *FSM) applyChunk(logs []*raft.Log, resp []any) error {
	g := f.cur
	txn := g.db.NewTransaction(true)
	defer txn.Discard()
	st := txnState{txn: txn}

	applied := f.applied.Load()
	top := applied
	count := f.count.Load()
	totals := *f.totals.Load()
	var dirty []donation.Currency
	out := make([]any, len(logs))

	for i, l := range logs {
		if l.Index <= top {
			continue // replayed after a restart: its effects are stored
		}
		top = l.Index
		if l.Type != raft.LogCommand {
			continue // configuration, barrier, noop: only the index moves
		}
		cmd, err := donation.Decode(l.Data)
		if err != nil {
			out[i] = fmt.Errorf("apply log %d: %w", l.Index, err)
			continue
		}
		res, eff, err := donation.Decide(st, cmd)
		if err != nil {
			return fmt.Errorf("decide log %d: %w", l.Index, err)
		}
		if err := writeEffects(txn, eff); err != nil {
			return fmt.Errorf("write log %d: %w", l.Index, err)
		}
		if cmd.Kind == donation.KindCreate && res.Code == donation.CodeOK {
			count++
		}
		if d := eff.Delta; d.Raised != 0 || d.Donations != 0 {
			if !slices.Contains(dirty, d.Currency) {
				if dirty == nil {
					totals = maps.Clone(totals) // copy on write: readers hold the old map
				}
				dirty = append(dirty, d.Currency)
			}
			t := totals[d.Currency]
			t.Currency = d.Currency
			t.RaisedMinor += d.Raised
			t.Donations += d.Donations
			totals[d.Currency] = t
		}
		b, err := res.Encode()
		if err != nil {
			return fmt.Errorf("encode result of log %d: %w", l.Index, err)
		}
		out[i] = b
	}
	if top == applied {
		copy(resp, out)
		return nil
	}
	for _, c := range dirty {
		if err := txn.Set([]byte(totalsPrefix+string(c)), encodeTotals(totals[c])); err != nil {
			return fmt.Errorf("write totals: %w", err)
		}
	}
	if count != f.count.Load() {
		if err := txn.Set([]byte(countKey), binary.BigEndian.AppendUint64(nil, uint64(count))); err != nil {
			return fmt.Errorf("write count: %w", err)
		}
	}
	if err := txn.Set([]byte(appliedKey), binary.BigEndian.AppendUint64(nil, top)); err != nil {
		return fmt.Errorf("write applied index: %w", err)
	}
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("commit logs %d-%d: %w", applied+1, top, err)
	}
	f.applied.Store(top)
	f.count.Store(count)
	if dirty != nil {
		f.totals.Store(&totals)
	}
	copy(resp, out)
	return nil
}

func writeEffects(txn *badger.Txn, eff donation.Effects) error {
	if eff.Put != nil {
		if err := txn.Set(prefixed(donationPrefix, eff.Put.ID), encodeDonation(*eff.Put)); err != nil {
			return err
		}
	}
	if len(eff.Keys) == 0 {
		return nil
	}
	id := eff.KeyID
	if id == "" && eff.Put != nil {
		id = eff.Put.ID
	}
	if id == "" {
		return fmt.Errorf("%w: effects record keys without a donation id", ErrCorrupt)
	}
	for _, k := range eff.Keys {
		if err := txn.Set(prefixed(uniquePrefix, k), []byte(id)); err != nil {
			return err
		}
	}
	return nil
}

// txnState is donation.State over a Badger transaction.
type txnState struct{ txn *badger.Txn }

func (s txnState) Donation(id string) (donation.Donation, bool, error) {
	item, err := s.txn.Get(prefixed(donationPrefix, id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return donation.Donation{}, false, nil
	}
	if err != nil {
		return donation.Donation{}, false, fmt.Errorf("read donation %q: %w", id, err)
	}
	var d donation.Donation
	if err := item.Value(func(v []byte) error {
		var err error
		d, err = decodeDonation(v)
		return err
	}); err != nil {
		return donation.Donation{}, false, fmt.Errorf("read donation %q: %w", id, err)
	}
	return d, true, nil
}

func (s txnState) Key(key string) (string, bool, error) {
	item, err := s.txn.Get(prefixed(uniquePrefix, key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read key %q: %w", key, err)
	}
	var id string
	if err := item.Value(func(v []byte) error { id = string(v); return nil }); err != nil {
		return "", false, fmt.Errorf("read key %q: %w", key, err)
	}
	return id, true, nil
}

// prefixed builds a key in one allocation.
func prefixed(prefix, s string) []byte {
	return append(append(make([]byte, 0, len(prefix)+len(s)), prefix...), s...)
}

// AppliedIndex is the last Raft index whose effects are stored.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Count is the number of donations stored, in any state.
func (f *FSM) Count() int64 { return f.count.Load() }

// Totals is the public total of currency c (zero when nothing counts yet).
// It reads an in-memory copy published after each commit and takes no lock.
func (f *FSM) Totals(c donation.Currency) donation.Totals {
	t := (*f.totals.Load())[c]
	t.Currency = c
	return t
}

// AllTotals lists the totals of every currency seen, ordered by code.
func (f *FSM) AllTotals() []donation.Totals {
	m := *f.totals.Load()
	out := make([]donation.Totals, 0, len(m))
	for _, c := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[c])
	}
	return out
}

// Donation reads one donation by id.
func (f *FSM) Donation(id string) (donation.Donation, bool, error) {
	g, err := f.acquire()
	if err != nil {
		return donation.Donation{}, false, err
	}
	defer f.release(g)
	var (
		d  donation.Donation
		ok bool
	)
	err = g.db.View(func(txn *badger.Txn) error {
		d, ok, err = txnState{txn: txn}.Donation(id)
		return err
	})
	return d, ok, err
}

// Export calls fn for every donation in id order, from one consistent
// read view. It stops at the first error of fn or when ctx is done.
func (f *FSM) Export(ctx context.Context, fn func(donation.Donation) error) error {
	g, err := f.acquire()
	if err != nil {
		return err
	}
	defer f.release(g)
	return g.db.View(func(txn *badger.Txn) error {
		return eachDonation(ctx, txn, fn)
	})
}

func eachDonation(ctx context.Context, txn *badger.Txn, fn func(donation.Donation) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(donationPrefix)
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		var d donation.Donation
		if err := it.Item().Value(func(v []byte) error {
			var err error
			d, err = decodeDonation(v)
			return err
		}); err != nil {
			return fmt.Errorf("export %q: %w", it.Item().Key(), err)
		}
		if err := fn(d); err != nil {
			return err
		}
	}
	return nil
}

// Verify recomputes the totals and the count from the stored donations and
// checks them against the stored and cached figures: the invariant "sum of
// the ledger = reported total". It reads one consistent view.
func (f *FSM) Verify(ctx context.Context) error {
	g, err := f.acquire()
	if err != nil {
		return err
	}
	defer f.release(g)
	return g.db.View(func(txn *badger.Txn) error {
		sum := totalsMap{}
		var n int64
		err := eachDonation(ctx, txn, func(d donation.Donation) error {
			n++
			addCounted(sum, d)
			return nil
		})
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		stored, err := getUint64(txn, countKey)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if int64(stored) != n {
			return fmt.Errorf("verify: %w: %d donations stored, count says %d", ErrCorrupt, n, stored)
		}
		st, err := readStatsTxn(txn)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if err := sameTotals(sum, st.totals); err != nil {
			return fmt.Errorf("verify stored totals: %w", err)
		}
		return nil
	})
}

// readStatsTxn reads the totals records visible in txn (not the counters).
func readStatsTxn(txn *badger.Txn) (stats, error) {
	st := stats{totals: totalsMap{}}
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(totalsPrefix)
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		c := donation.Currency(strings.TrimPrefix(string(it.Item().Key()), totalsPrefix))
		err := it.Item().Value(func(v []byte) error {
			t, err := decodeTotals(c, v)
			st.totals[c] = t
			return err
		})
		if err != nil {
			return stats{}, err
		}
	}
	return st, nil
}

func addCounted(m totalsMap, d donation.Donation) {
	if v, ok := d.Counted(); ok {
		t := m[d.Amount.Currency]
		t.Currency = d.Amount.Currency
		t.RaisedMinor += v
		t.Donations++
		m[d.Amount.Currency] = t
	}
}

// sameTotals compares two totals maps, treating a missing currency as zero.
func sameTotals(want, got totalsMap) error {
	all := slices.Sorted(maps.Keys(want))
	for c := range got {
		if _, ok := want[c]; !ok {
			all = append(all, c)
		}
	}
	for _, c := range all {
		w, g := want[c], got[c]
		if w.RaisedMinor != g.RaisedMinor || w.Donations != g.Donations {
			return fmt.Errorf("%w: %s donations sum to %d in %d donations, totals say %d in %d",
				ErrCorrupt, c, w.RaisedMinor, w.Donations, g.RaisedMinor, g.Donations)
		}
	}
	return nil
}

// Size reports the on-disk size of the live generation (LSM and value log).
func (f *FSM) Size() (lsm, vlog int64) {
	g, err := f.acquire()
	if err != nil {
		return 0, 0
	}
	defer f.release(g)
	return g.db.Size()
}

func getUint64(txn *badger.Txn, key string) (uint64, error) {
	item, err := txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	var n uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("read %s: %w: %d bytes", key, ErrCorrupt, len(v))
		}
		n = binary.BigEndian.Uint64(v)
		return nil
	})
	return n, err
}

func encodeTotals(t donation.Totals) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(t.RaisedMinor))
	return binary.BigEndian.AppendUint64(b, uint64(t.Donations))
}

func decodeTotals(c donation.Currency, v []byte) (donation.Totals, error) {
	if len(v) != 16 {
		return donation.Totals{}, fmt.Errorf("decode totals %s: %w: %d bytes", c, ErrCorrupt, len(v))
	}
	return donation.Totals{
		Currency:    c,
		RaisedMinor: int64(binary.BigEndian.Uint64(v)),
		Donations:   int64(binary.BigEndian.Uint64(v[8:])),
	}, nil
}
