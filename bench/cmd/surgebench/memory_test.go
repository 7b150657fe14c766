package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSmapsKind(t *testing.T) {
	dd := "/d/n1/"
	for path, want := range map[string]string{
		"":                                 "anon",
		"[heap]":                           "anon",
		"[stack]":                          "anon",
		"/d/n1/fsm/gen-000001/000012.sst":  "fsm .sst",
		"/d/n1/fsm/gen-000001/00003.mem":   "fsm .mem",
		"/d/n1/fsm/gen-000001/000001.vlog": "fsm .vlog",
		"/d/n1/raft/000007.sst":            "raft .sst",
		"/d/n1/raft/00009.mem":             "raft .mem",
		"/d/n1/raft/000001.vlog":           "raft .vlog",
		"/d/n1/fsm/MANIFEST":               "other file",
		"/d/n2/raft/000007.sst":            "other file",
		"/usr/lib/libc.so.6":               "other file",
	} {
		if got := smapsKind(path, dd); got != want {
			t.Errorf("smapsKind(%q) = %q, want %q", path, got, want)
		}
	}
}

// TestReadSmaps reads this test process's own smaps, with a file of ours
// mapped from a fake data dir, and checks the sums and that the file's
// pages are counted as "fsm .sst".
func TestReadSmaps(t *testing.T) {
	dd := t.TempDir()
	path := filepath.Join(dd, "fsm", "000001.sst")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	const size = 64 << 10
	if err := os.WriteFile(path, bytes.Repeat([]byte{1}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	var touched byte
	for i := 0; i < size; i += os.Getpagesize() {
		touched += mem[i] // fault every page in, so it counts in Rss
	}
	if touched == 0 {
		t.Fatal("mapped file reads as zeros")
	}

	m, err := readSmaps(os.Getpid(), dd)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, k := range memKinds {
		sum += m.kinds[k]
	}
	if m.rss <= 0 || m.kinds["anon"] <= 0 || sum != m.rss {
		t.Fatalf("rss %d, kinds %v (sum %d): want anon > 0 and the kinds to add up to the Rss", m.rss, m.kinds, sum)
	}
	if got := m.kinds["fsm .sst"]; got != size {
		t.Fatalf("fsm .sst Rss %d, want the mapped file's %d", got, size)
	}
}

func TestParseGoMem(t *testing.T) {
	in := `# HELP go_memstats_heap_alloc_bytes x
# TYPE go_memstats_heap_alloc_bytes gauge
go_memstats_heap_alloc_bytes 4.2e+07
go_memstats_next_gc_bytes 8.4e+07
go_gc_duration_seconds{quantile="0.5"} 0.0001
go_gc_duration_seconds_count 17
go_gc_gomemlimit_bytes 1.048576e+08
go_goroutines 96
surge_raft_term 3
surge_rss_limit_bytes 1.34217728e+08
surge_pager_rounds_total 12
`
	g, err := parseGoMem(strings.NewReader(in))
	if err != nil || !g.ok {
		t.Fatal(err, g.ok)
	}
	if g.heapAlloc != 42e6 || g.nextGC != 84e6 || g.gcCycles != 17 || g.memLimit != 100<<20 || g.goroutines != 96 ||
		g.rssLimit != 128<<20 || g.pagerRounds != 12 {
		t.Fatalf("%+v", g)
	}
}

// TestMemCgroup creates, reads and removes a memory cgroup below the
// test's own when the machine lets it (root, cgroup v1), and skips
// otherwise.
func TestMemCgroup(t *testing.T) {
	parent, err := ownMemCgroup()
	if err != nil {
		t.Skip(err)
	}
	cg, err := newMemCgroup(parent, "surgebench-test-"+filepath.Base(t.TempDir()), 64<<20)
	if err != nil {
		t.Skipf("cannot create a memory cgroup: %v", err)
	}
	defer cg.remove()
	if got := cg.read(); got.limit != 64<<20 || got.failcnt != 0 {
		t.Fatalf("%+v", got)
	}
	if err := cg.remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cg.dir); !os.IsNotExist(err) {
		t.Fatalf("%s still there: %v", cg.dir, err)
	}
}

// TestResetPeakRSS checks that the harness can set VmHWM back, so that
// catchup's "VmHWM under load" is the window's peak, not the start's.
func TestResetPeakRSS(t *testing.T) {
	buf := make([]byte, 96<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	buf = nil
	runtime.GC()
	debug.FreeOSMemory()
	before, err := readProcMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if before.hwm < before.rss+64<<20 {
		t.Skipf("VmHWM %d is not 64 MiB above VmRSS %d after freeing 96 MiB; nothing to tell apart", before.hwm, before.rss)
	}
	if err := resetPeakRSS(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	after, err := readProcMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.hwm > before.hwm-32<<20 {
		t.Fatalf("VmHWM %d after the reset, was %d (RSS %d): not reset", after.hwm, before.hwm, after.rss)
	}
}
