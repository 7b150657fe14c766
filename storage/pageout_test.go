package storage

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
	"time"
	"unsafe"

	"github.com/hashicorp/raft"
	"golang.org/x/sys/unix"

	"github.com/surgefund/surge/donation"
)

// mappedFile writes size bytes to path, fsyncs them (MADV_PAGEOUT keeps
// dirty pages), dates the file an hour back (a table written long ago: the
// pager leaves young tables alone), maps it shared and reads every page
// through the mapping, as Badger's checksum check at open does.
func mappedFile(t *testing.T, path string, size int) []byte {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i)
	}
	if _, err := f.Write(buf); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	ageFile(t, path)
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Munmap(m) })
	for i := 0; i < size; i += os.Getpagesize() {
		pageSink += m[i] // a load the compiler may not drop
	}
	return m
}

// ageFile sets path's modification time an hour back.
func ageFile(t *testing.T, path string) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
}

// pageSink keeps mappedFile's reads from being optimised away: a page that
// was never read through the mapping is not in the process's page tables,
// and MADV_PAGEOUT only reclaims mapped pages.
var pageSink byte

// residentPages counts the pages of [start, start+length) that are in
// memory (mincore).
func residentPages(t *testing.T, start, length uintptr) int {
	t.Helper()
	ps := uintptr(os.Getpagesize())
	vec := make([]byte, (length+ps-1)/ps)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, start, length, uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for _, v := range vec {
		if v&1 == 1 {
			n++
		}
	}
	return n
}

// residentShare is the fraction of m's pages in memory.
func residentShare(t *testing.T, m []byte) float64 {
	t.Helper()
	ps := os.Getpagesize()
	return float64(residentPages(t, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)))) / float64((len(m)+ps-1)/ps)
}

func TestPagerPagesOutTablesUnderItsDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "data")
	const size = 8 << 20
	table := mappedFile(t, filepath.Join(dir, "fsm", "000001.sst"), size)
	logTable := mappedFile(t, filepath.Join(dir, "raft", "000004.sst"), size)
	vlog := mappedFile(t, filepath.Join(dir, "raft", "000001.vlog"), size)
	wal := mappedFile(t, filepath.Join(dir, "fsm", "00002.mem"), size)
	// Same suffix, a directory whose name starts like the pager's.
	outside := mappedFile(t, filepath.Join(root, "data2", "000001.sst"), size)
	for name, m := range map[string][]byte{"table": table, "log table": logTable, "vlog": vlog, "wal": wal, "outside": outside} {
		if s := residentShare(t, m); s < 0.99 {
			t.Fatalf("%s: %.2f resident after reading it; the test cannot tell paged-out pages", name, s)
		}
	}

	// Any process is over one byte: the pager pages out at its first tick.
	p, err := StartPager(dir, 1, 10*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	waitForRounds(t, p, 1)
	st := p.Stats()
	if st.AdvisedBytes < 2*size {
		t.Errorf("advised %d bytes, want at least the two tables' %d", st.AdvisedBytes, 2*size)
	}
	if s := residentShare(t, table); s > 0.1 {
		t.Errorf("table under the directory: %.2f of its pages still resident", s)
	}
	if s := residentShare(t, logTable); s > 0.1 {
		t.Errorf("log table under the directory: %.2f of its pages still resident", s)
	}
	if s := residentShare(t, vlog); s < 0.99 {
		t.Errorf("value log: %.2f resident; the pager must leave .vlog files alone", s)
	}
	if s := residentShare(t, wal); s < 0.99 {
		t.Errorf("memtable WAL: %.2f resident; the pager must leave .mem files alone", s)
	}
	if s := residentShare(t, outside); s < 0.99 {
		t.Errorf("table outside the directory: %.2f resident; the pager must leave it alone", s)
	}
	// The contents are intact: a paged-out page reads back from the file.
	for i := 0; i < size; i += 4093 {
		if table[i] != byte(i) {
			t.Fatalf("table byte %d = %d after page-out, want %d", i, table[i], byte(i))
		}
	}
}

// TestPagerLeavesTablesBeingWritten maps a new table writable and dirties
// it, as Badger's CreateTable does before its msync. The pager must not
// touch it while it is young: a page MADV_PAGEOUT meets dirty is kept, and
// stays unreclaimable through that mapping after the msync too. Once the
// table is synced and old, it is paged out like any other.
func TestPagerLeavesTablesBeingWritten(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "000009.sst")
	const size = 4 << 20
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	for i := 0; i < size; i += os.Getpagesize() {
		m[i] = byte(i/os.Getpagesize()) | 1
	}
	// Young for the whole check, however slow the machine: tableSettle
	// is short, and a round that came after it would page out dirty pages
	// and spoil the rest of the test.
	young := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, young, young); err != nil {
		t.Fatal(err)
	}

	p, err := StartPager(dir, 1, 5*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	waitForRounds(t, p, 3)
	if p.Stats().AdvisedBytes != 0 {
		t.Errorf("advised %d bytes of a table written just now, want none", p.Stats().AdvisedBytes)
	}
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	ageFile(t, path)
	waitForRounds(t, p, p.Stats().Rounds+3)
	if s := residentShare(t, m); s > 0.1 {
		t.Errorf("%.2f of the synced, old table still resident; want it paged out", s)
	}
	for i := 0; i < size; i += os.Getpagesize() {
		if want := byte(i/os.Getpagesize()) | 1; m[i] != want {
			t.Fatalf("byte %d = %d after the page-out, want %d", i, m[i], want)
		}
	}
}

func TestPagerUnderItsLimitLeavesPagesAlone(t *testing.T) {
	dir := t.TempDir()
	table := mappedFile(t, filepath.Join(dir, "000001.sst"), 4<<20)
	p, err := StartPager(dir, 1<<50, 5*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	p.Stop()
	st := p.Stats()
	if st.Rounds != 0 || st.AdvisedBytes != 0 {
		t.Errorf("stats %+v under a 1 PiB limit, want no round", st)
	}
	if st.RSS <= 0 {
		t.Errorf("RSS %d, want the process's resident set", st.RSS)
	}
	if s := residentShare(t, table); s < 0.99 {
		t.Errorf("%.2f of the table resident, want all of it", s)
	}
}

// TestPagerKeepsHeadroom: the pager acts before RSS reaches the limit, once
// it is within an eighth of it, so that what a compaction maps and
// allocates between two checks still fits under the limit.
func TestPagerKeepsHeadroom(t *testing.T) {
	dir := t.TempDir()
	// A large resident table, so that the margins below are MiBs, more
	// than the test itself can allocate meanwhile.
	table := mappedFile(t, filepath.Join(dir, "000001.sst"), 48<<20)
	// Earlier tests' garbage, returned to the kernel now rather than by
	// the scavenger while this test runs, which could take RSS back under
	// the trigger.
	debug.FreeOSMemory()
	rss, err := processRSS()
	if err != nil {
		t.Fatal(err)
	}
	// RSS is under this limit by 1/17 of it (RSS is at least the table's
	// 48 MiB), and over its trigger by 7 %.
	limit := rss + rss/16
	p, err := StartPager(dir, limit, 5*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	waitForRounds(t, p, 1) // RSS was under the limit, over the trigger
	if s := residentShare(t, table); s > 0.1 {
		t.Errorf("%.2f of the table still resident after the page-out", s)
	}
}

// TestPagerChecksOftenNearItsLimit: over half its limit the pager checks
// every PagerFastInterval, whatever its normal interval.
func TestPagerChecksOftenNearItsLimit(t *testing.T) {
	dir := t.TempDir()
	mappedFile(t, filepath.Join(dir, "000001.sst"), 1<<20)
	// Over any process's RSS: a round at each check.
	p, err := StartPager(dir, 1, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	waitForRounds(t, p, 3) // with an interval of an hour
}

// waitForRounds waits up to 5 s for the pager's n-th page-out round, and
// fails the test without it.
func waitForRounds(t *testing.T, p *Pager, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Rounds < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st := p.Stats(); st.Rounds < n {
		t.Fatalf("%d page-out rounds within 5 s, want %d (limit %d, last RSS seen %d)", st.Rounds, n, st.Limit, st.RSS)
	}
}

// TestPagerBacksOffWhenPagingOutDoesNotHelp: when a page-out frees almost
// nothing and leaves RSS over the trigger (here always: the limit, 4 MiB,
// is under what the test process holds besides the table), the pager
// waits PagerInterval before the next, whatever its fast checks see.
func TestPagerBacksOffWhenPagingOutDoesNotHelp(t *testing.T) {
	dir := t.TempDir()
	mappedFile(t, filepath.Join(dir, "000001.sst"), 1<<20)
	p, err := StartPager(dir, 4<<20, time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	waitForRounds(t, p, 1)
	start := time.Now()
	first := p.Stats().Rounds
	time.Sleep(5 * PagerInterval / 2)
	p.Stop()
	elapsed := time.Since(start)
	// At most one round per PagerInterval, one more for the edges, and
	// one that still freed something (the table's pages read back in).
	if got, max := p.Stats().Rounds-first, int64(elapsed/PagerInterval)+2; got > max {
		t.Errorf("%d page-out rounds in %v with checks every 1 ms; want at most %d (one per %v)", got, elapsed, max, PagerInterval)
	}
}

func TestPagerOffWithoutALimit(t *testing.T) {
	p, err := StartPager(t.TempDir(), 0, 0, nil)
	if err != nil || p != nil {
		t.Fatalf("StartPager with limit 0 = %v, %v; want nil, nil", p, err)
	}
	p.Stop() // safe on nil
	if st := p.Stats(); st != (PagerStats{}) {
		t.Errorf("nil pager stats %+v", st)
	}
}

func TestPagerTableMappings(t *testing.T) {
	p := &Pager{dir: "/d/data/"}
	maps := []byte(`55d0c0000000-55d0c0100000 r-xp 00000000 fd:01 123 /usr/bin/node
7f0000000000-7f0000200000 rw-s 00000000 fd:01 11 /d/data/fsm/000007.sst
7f0000200000-7f0000300000 r--s 00000000 fd:01 12 /d/data/fsm/000003.sst (deleted)
7f0000300000-7f0000400000 rw-s 00000000 fd:01 13 /d/data/raft/000001.vlog
7f0000380000-7f0000390000 rw-s 00000000 fd:01 17 /d/data/raft/000002.sst
7f0000400000-7f0000500000 rw-s 00000000 fd:01 14 /d/data/raft/00005.mem
7f0000500000-7f0000600000 r--s 00000000 fd:01 15 /d/data2/000001.sst
7f0000600000-7f0000700000 rw-p 00000000 00:00 0 
7f0000700000-7f0000800000 r--s 00000000 fd:01 16 /d/data/fsm/a b.sst
`)
	got := p.tableMappings(maps)
	want := []mapping{
		{0x7f0000000000, 0x7f0000200000, "/d/data/fsm/000007.sst"},
		{0x7f0000200000, 0x7f0000300000, "/d/data/fsm/000003.sst"},
		{0x7f0000380000, 0x7f0000390000, "/d/data/raft/000002.sst"},
		{0x7f0000700000, 0x7f0000800000, "/d/data/fsm/a b.sst"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mappings %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// BenchmarkPagerCheck is the cost of one check under the limit: reading
// /proc/self/statm (the pager does it every PagerInterval, or every
// PagerFastInterval over half the limit).
func BenchmarkPagerCheck(b *testing.B) {
	p, err := StartPager(b.TempDir(), 1<<50, time.Hour, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Stop()
	for b.Loop() {
		p.tick()
	}
}

// tableResident is how many bytes of the table mappings under dir are in
// memory: the mappings the pager itself would pick.
func tableResident(t *testing.T, dir string) int64 {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, m := range (&Pager{dir: dir + "/"}).tableMappings(maps) {
		sum += int64(residentPages(t, m.start, m.end-m.start)) * int64(os.Getpagesize())
	}
	return sum
}

// TestPagerWithBadger pages out a real FSM's tables while it is open and
// reads every donation back: Badger reads paged-out table pages from the
// file again (with their checksums checked), and the totals and records
// are the same as before.
func TestPagerWithBadger(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := OpenFSM(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	var logs []*raft.Log
	for i := range n {
		id := fmt.Sprintf("don-%06d", i)
		logs = append(logs, entries(t, uint64(len(logs)+1),
			createCmd(id, int64(100+i), "EUR"), paymentCmd("ev-"+id, id, donation.OutcomeSucceeded))...)
	}
	for i := 0; i < len(logs); i += 64 {
		for _, r := range f.ApplyBatch(logs[i:min(i+64, len(logs))]) {
			if err, ok := r.(error); ok {
				t.Fatal(err)
			}
		}
	}
	wantTotals, want := f.Totals("EUR"), exportAll(t, f)
	if len(want) != n {
		t.Fatalf("%d donations stored, want %d", len(want), n)
	}
	// Closing flushes the memtable into a table; opening reads every
	// table whole (its checksum): the tables' pages are resident now.
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = openTestFSM(t, dir)
	// As on a node that has run a while: the pager leaves young tables alone.
	tables, err := filepath.Glob(filepath.Join(dir, "*", "*.sst"))
	if err != nil || len(tables) == 0 {
		t.Fatalf("no tables in %s (%v)", dir, err)
	}
	for _, tbl := range tables {
		ageFile(t, tbl)
	}
	before := tableResident(t, dir)
	if before < 1<<20 {
		t.Fatalf("tables hold %d resident bytes after a full read; the test cannot tell a page-out", before)
	}

	p, err := StartPager(dir, 1, 10*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	waitForRounds(t, p, 1)
	p.Stop() // no page-out while the records are read back
	if after := tableResident(t, dir); after > before/10 {
		t.Fatalf("tables hold %d resident bytes after the page-out, %d before", after, before)
	}
	if got := f.Totals("EUR"); got != wantTotals {
		t.Fatalf("totals %+v after the page-out, want %+v", got, wantTotals)
	}
	got := exportAll(t, f)
	if len(got) != len(want) {
		t.Fatalf("%d donations after the page-out, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].ID != want[i].ID || got[i].Status != want[i].Status || got[i].Amount != want[i].Amount {
			t.Fatalf("donation %d after the page-out %+v, want %+v", i, got[i], want[i])
		}
	}
	mustVerify(t, f)
}
