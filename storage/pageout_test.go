package storage

import (
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mappedFile writes size bytes to path, fsyncs them (MADV_PAGEOUT keeps
// dirty pages), maps the file shared and reads every page through the
// mapping, as Badger's checksum check at open does.
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

// pageSink keeps mappedFile's reads from being optimised away: a page that
// was never read through the mapping is not in the process's page tables,
// and MADV_PAGEOUT only reclaims mapped pages.
var pageSink byte

// residentShare is the fraction of m's pages in memory (mincore).
func residentShare(t *testing.T, m []byte) float64 {
	t.Helper()
	ps := os.Getpagesize()
	vec := make([]byte, (len(m)+ps-1)/ps)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for _, v := range vec {
		if v&1 == 1 {
			n++
		}
	}
	return float64(n) / float64(len(vec))
}

func TestPagerPagesOutTablesUnderItsDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "data")
	const size = 8 << 20
	table := mappedFile(t, filepath.Join(dir, "fsm", "000001.sst"), size)
	vlog := mappedFile(t, filepath.Join(dir, "raft", "000001.vlog"), size)
	wal := mappedFile(t, filepath.Join(dir, "fsm", "00002.mem"), size)
	// Same suffix, a directory whose name starts like the pager's.
	outside := mappedFile(t, filepath.Join(root, "data2", "000001.sst"), size)
	for name, m := range map[string][]byte{"table": table, "vlog": vlog, "wal": wal, "outside": outside} {
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
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Rounds == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := p.Stats()
	if st.Rounds == 0 {
		t.Fatal("no page-out round within 5 s with a limit of one byte")
	}
	if st.AdvisedBytes < 2*size {
		t.Errorf("advised %d bytes, want at least the two files' %d", st.AdvisedBytes, 2*size)
	}
	if s := residentShare(t, table); s > 0.1 {
		t.Errorf("table under the directory: %.2f of its pages still resident", s)
	}
	if s := residentShare(t, vlog); s > 0.1 {
		t.Errorf("value log under the directory: %.2f of its pages still resident", s)
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
7f0000400000-7f0000500000 rw-s 00000000 fd:01 14 /d/data/raft/00005.mem
7f0000500000-7f0000600000 r--s 00000000 fd:01 15 /d/data2/000001.sst
7f0000600000-7f0000700000 rw-p 00000000 00:00 0 
7f0000700000-7f0000800000 r--s 00000000 fd:01 16 /d/data/fsm/a b.sst
`)
	got := p.tableMappings(maps)
	want := []mapping{
		{0x7f0000000000, 0x7f0000200000, "/d/data/fsm/000007.sst"},
		{0x7f0000200000, 0x7f0000300000, "/d/data/fsm/000003.sst"},
		{0x7f0000300000, 0x7f0000400000, "/d/data/raft/000001.vlog"},
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
// /proc/self/statm (the pager does it every PagerInterval).
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
