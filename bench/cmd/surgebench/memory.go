package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// memKinds are the columns of the smaps breakdown, in report order: where
// a node's resident pages are. "anon" is every anonymous page (Go heap,
// stacks, runtime metadata, off-heap allocations); the others are file
// pages of Badger's files in the node's data dir ("other" = the binary,
// libraries and any other file).
var memKinds = []string{"anon", "fsm .sst", "fsm .mem", "fsm .vlog", "raft .sst", "raft .mem", "raft .vlog", "other file"}

// smapsMem is one reading of /proc/PID/smaps, summed by memKinds (bytes).
type smapsMem struct {
	rss   int64
	kinds map[string]int64
}

// readSmaps sums the Rss of every mapping of pid by kind: mappings without
// a file ([heap], [stack], [vdso], anonymous) are anon, and so are the
// anonymous (copy-on-write) pages inside file mappings.
func readSmaps(pid int, dataDir string) (smapsMem, error) {
	m := smapsMem{kinds: map[string]int64{}}
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return m, err
	}
	defer f.Close()
	dataDir = filepath.Clean(dataDir) + "/"
	kind := "anon"
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		l := sc.Text()
		fields := strings.Fields(l)
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") { // a mapping's header line
			path := ""
			if len(fields) >= 6 {
				path = strings.Join(fields[5:], " ")
			}
			kind = smapsKind(path, dataDir)
			continue
		}
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "Rss:":
			m.rss += v * 1024
			m.kinds[kind] += v * 1024
		case "Anonymous:":
			if kind != "anon" { // copy-on-write pages of a file mapping
				m.kinds["anon"] += v * 1024
				m.kinds[kind] -= v * 1024
			}
		}
	}
	return m, sc.Err()
}

func smapsKind(path, dataDir string) string {
	if path == "" || strings.HasPrefix(path, "[") {
		return "anon"
	}
	rel, ok := strings.CutPrefix(path, dataDir)
	if !ok {
		return "other file"
	}
	db := "fsm"
	if strings.HasPrefix(rel, "raft/") {
		db = "raft"
	}
	for _, ext := range []string{".sst", ".mem", ".vlog"} {
		if strings.HasSuffix(rel, ext) {
			return db + " " + ext
		}
	}
	return "other file"
}

// goMem is the Go runtime's view of a node, read from its /metrics
// (client_golang's Go collector), in bytes unless named otherwise.
type goMem struct {
	heapAlloc, heapInuse, heapIdle, heapReleased, nextGC, stack, sys, memLimit int64
	gcCycles, goroutines                                                       int64
	rssLimit, pagerRounds                                                      int64 // a node with --rss-limit
	ok                                                                         bool
}

var goMemNames = map[string]func(*goMem) *int64{
	"go_memstats_heap_alloc_bytes":    func(g *goMem) *int64 { return &g.heapAlloc },
	"go_memstats_heap_inuse_bytes":    func(g *goMem) *int64 { return &g.heapInuse },
	"go_memstats_heap_idle_bytes":     func(g *goMem) *int64 { return &g.heapIdle },
	"go_memstats_heap_released_bytes": func(g *goMem) *int64 { return &g.heapReleased },
	"go_memstats_next_gc_bytes":       func(g *goMem) *int64 { return &g.nextGC },
	"go_memstats_stack_inuse_bytes":   func(g *goMem) *int64 { return &g.stack },
	"go_memstats_sys_bytes":           func(g *goMem) *int64 { return &g.sys },
	"go_gc_gomemlimit_bytes":          func(g *goMem) *int64 { return &g.memLimit },
	"go_gc_duration_seconds_count":    func(g *goMem) *int64 { return &g.gcCycles },
	"go_goroutines":                   func(g *goMem) *int64 { return &g.goroutines },
	"surge_rss_limit_bytes":           func(g *goMem) *int64 { return &g.rssLimit },
	"surge_pager_rounds_total":        func(g *goMem) *int64 { return &g.pagerRounds },
}

// readGoMem scrapes base/metrics (the harness reaches it from loopback, so
// no admin token is needed).
func readGoMem(ctx context.Context, client *http.Client, base string) (goMem, error) {
	body, err := getOK(ctx, client, base+"/metrics")
	if err != nil {
		return goMem{}, err
	}
	defer body.Close()
	return parseGoMem(body)
}

func parseGoMem(r io.Reader) (goMem, error) {
	var g goMem
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if p := goMemNames[name]; p != nil {
			f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err == nil {
				*p(&g) = int64(f)
				g.ok = true
			}
		}
	}
	return g, sc.Err()
}

// memCgroup is a cgroup v1 memory cgroup holding one node process.
type memCgroup struct{ dir string }

const cgroupMemRoot = "/sys/fs/cgroup/memory"

// ownMemCgroup is the memory cgroup this process is in, as a directory.
// The nodes' cgroups are created below it, so they stay inside whatever
// limits and accounting the harness itself runs under.
func ownMemCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) == 3 && parts[1] == "memory" {
			return filepath.Join(cgroupMemRoot, parts[2]), nil
		}
	}
	return "", errors.New("no cgroup v1 memory controller in /proc/self/cgroup")
}

// newMemCgroup creates parent/name with memory.limit_in_bytes = limit.
func newMemCgroup(parent, name string, limit int64) (*memCgroup, error) {
	dir := filepath.Join(parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	cg := &memCgroup{dir: dir}
	if err := cg.write("memory.limit_in_bytes", strconv.FormatInt(limit, 10)); err != nil {
		cg.remove()
		return nil, err
	}
	return cg, nil
}

func (cg *memCgroup) write(file, v string) error {
	return os.WriteFile(filepath.Join(cg.dir, file), []byte(v), 0o644)
}

func (cg *memCgroup) readInt(file string) int64 {
	b, err := os.ReadFile(filepath.Join(cg.dir, file))
	if err != nil {
		return -1
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v
}

// keyed reads a "key value" file (memory.stat, memory.oom_control).
func (cg *memCgroup) keyed(file string) map[string]int64 {
	out := map[string]int64{}
	b, err := os.ReadFile(filepath.Join(cg.dir, file))
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			out[k] = n
		}
	}
	return out
}

// cgroupMem is what the kernel says about a node's cgroup.
type cgroupMem struct {
	limit, maxUsage, failcnt, oomKills, rss, cache, mappedFile int64
}

func (cg *memCgroup) read() cgroupMem {
	st := cg.keyed("memory.stat")
	return cgroupMem{
		limit:      cg.readInt("memory.limit_in_bytes"),
		maxUsage:   cg.readInt("memory.max_usage_in_bytes"),
		failcnt:    cg.readInt("memory.failcnt"),
		oomKills:   cg.keyed("memory.oom_control")["oom_kill"],
		rss:        st["rss"],
		cache:      st["cache"],
		mappedFile: st["mapped_file"],
	}
}

// remove moves any process left in the cgroup to its parent and removes
// the directory (the kernel moves the remaining page-cache charges to the
// parent).
func (cg *memCgroup) remove() error {
	if cg == nil {
		return nil
	}
	if b, err := os.ReadFile(filepath.Join(cg.dir, "cgroup.procs")); err == nil {
		for _, pid := range strings.Fields(string(b)) {
			os.WriteFile(filepath.Join(filepath.Dir(cg.dir), "cgroup.procs"), []byte(pid), 0o644)
		}
	}
	var err error
	for range 50 { // a process that just exited may still be listed a moment
		if err = syscall.Rmdir(cg.dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", cg.dir, err)
}

// removeStaleCgroups removes surgebench-PID-* cgroups below parent left by
// a harness process that no longer exists (killed before its cleanup ran).
func removeStaleCgroups(parent string) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "surgebench-")
		if !ok || !e.IsDir() {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil {
			continue // its harness still runs
		}
		(&memCgroup{dir: filepath.Join(parent, e.Name())}).remove()
	}
}

// dropFileCache writes back and evicts the page cache of every file under
// dir, so the node started on it faults its pages in itself: in cgroup v1
// a page is charged to the cgroup that first brought it in, and pages the
// harness's cp left in memory would not count against a node's limit.
func dropFileCache(dir string) error {
	return filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return fmt.Errorf("fdatasync %s: %w", path, err)
		}
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
}
