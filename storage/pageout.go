package storage

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// PagerInterval is how often a Pager compares the process's resident set
// with its limit while RSS is under half the limit, and PagerFastInterval
// how often above that, where a burst could take it over the limit before
// the next check. A check reads /proc/self/statm: 8–20 µs
// (BenchmarkPagerCheck on the VMs of BENCHMARKS.md §0e and §0d), at most
// 0.02 % of a core every 100 ms and 0.2 % every 10 ms.
// Between checks RSS can grow by what the node maps and allocates
// meanwhile; a node reading its tables through (a snapshot, a compaction)
// faulted them in at up to 8 MiB in 5 ms (DESIGN.md "Resident limit").
const (
	PagerInterval     = 100 * time.Millisecond
	PagerFastInterval = 10 * time.Millisecond
)

// tableSettle is how long after its last write a table may be paged out.
// Badger writes a new table through its mapping and then msyncs it; a page
// that MADV_PAGEOUT meets dirty is kept, and stays unreclaimable by later
// calls through that mapping even once it is clean (measured on Linux
// 6.18), so a table caught half-built would stay resident for as long as
// it is open. Building one, its msync included, takes milliseconds. The
// wait is short because a compaction's new tables stay resident until
// they settle: with 2 s, a compaction's output piled up in RSS and VmHWM
// under load reached 152.5 MiB under a 128-MiB limit, against at most
// 142.5 with 250 ms (DESIGN.md "Resident limit").
const tableSettle = 250 * time.Millisecond

// pagerHeadroom is the share of the limit (1/pagerHeadroom) a Pager keeps
// free: it pages out once RSS is over limit - limit/pagerHeadroom. A
// compaction writes its new tables through their mappings (which the pager
// must leave alone for tableSettle) and allocates its builders at once:
// sampled every 5 ms on a node with 1 M donations under load, RSS rose by
// up to 18 MiB in 40 ms, faster than any check, and a pager that waited
// for the limit itself let VmHWM reach 156 MiB under a 128-MiB limit
// (DESIGN.md "Resident limit").
const pagerHeadroom = 8

// Pager keeps the process's resident set size at or under a limit by
// asking the kernel to page out the mapped pages of Badger's tables (.sst)
// under one directory (madvise MADV_PAGEOUT), once RSS is within an eighth
// of the limit (pagerHeadroom).
//
// Badger v4 memory-maps every table and reads each one whole at open (the
// checksum check), and writes new tables through the mapping, so without
// memory pressure a node's RSS grows to the size of its databases. Those
// pages are clean page cache the process can read again at any time;
// MADV_PAGEOUT reclaims them now instead of when the machine runs short.
// It never changes memory's contents: a page it reclaims is read back on
// the next access (from the file; from swap for an anonymous page), which
// is why a range unmapped and reused between reading /proc/self/maps and
// the madvise call is harmless. DESIGN.md "Resident limit" has the policy
// and the measurements.
type Pager struct {
	dir     string
	limit   int64
	trigger int64 // page out above this: limit less the headroom
	logger  *slog.Logger

	rounds  atomic.Int64 // ticks that found RSS over the trigger
	advised atomic.Int64 // bytes of mappings passed to MADV_PAGEOUT
	lastRSS atomic.Int64 // RSS at the last tick, bytes

	lastWarn time.Time
	// quietUntil: no page-out before this. Set when a page-out freed
	// almost nothing (under 1/64 of the limit) and left RSS over the
	// trigger: the heap holds it there, and paging out again at every
	// fast check would only burn CPU. A page-out that frees something
	// is repeated at the next check even when RSS stays over the
	// trigger: on a busy node, pages read back in and tables that have
	// just come of age are worth it (measured: without that, VmHWM
	// reached 147 MiB under a 128-MiB limit).
	quietUntil time.Time
	t          *ticker
}

// PagerStats are a Pager's counters, for /metrics.
type PagerStats struct {
	Limit        int64 // bytes; the RSS the pager keeps to
	Rounds       int64 // times RSS was found over the trigger (limit less an eighth) and table pages were paged out
	AdvisedBytes int64 // total length of the mappings passed to MADV_PAGEOUT
	RSS          int64 // RSS at the last check
}

// StartPager starts a Pager for the Badger files under dir with the given
// RSS limit in bytes, checking every interval (PagerInterval when 0), or
// every PagerFastInterval (if shorter) while RSS is over half the limit.
// It returns nil when limit is 0 or less: no limit. Stop it with Stop.
func StartPager(dir string, limit int64, interval time.Duration, logger *slog.Logger) (*Pager, error) {
	if limit <= 0 {
		return nil, nil
	}
	if interval <= 0 {
		interval = PagerInterval
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("pager: %w", err)
	}
	// /proc/self/maps names files by their resolved path.
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	p := &Pager{
		dir:     abs + string(filepath.Separator),
		limit:   limit,
		trigger: limit - limit/pagerHeadroom,
		logger:  orDiscard(logger),
	}
	if _, err := processRSS(); err != nil {
		return nil, fmt.Errorf("pager: %w", err)
	}
	if err := probePageOut(); err != nil {
		return nil, err
	}
	fast := min(interval, PagerFastInterval)
	p.t = startLoop(fast, func() time.Duration {
		p.tick()
		if p.lastRSS.Load() > p.limit/2 {
			return fast
		}
		return interval
	})
	return p, nil
}

// probePageOut checks that the kernel knows MADV_PAGEOUT (Linux 5.4) on a
// page of its own, so that a node asked for a limit it cannot keep says so
// at start instead of warning once a minute.
func probePageOut() error {
	b, err := unix.Mmap(-1, 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("pager: probe: %w", err)
	}
	defer unix.Munmap(b)
	if err := unix.Madvise(b, unix.MADV_PAGEOUT); err != nil {
		return fmt.Errorf("pager: this kernel does not page out on request (madvise MADV_PAGEOUT needs Linux 5.4 or later): %w", err)
	}
	return nil
}

// Stop ends the pager's goroutine. Safe on a nil Pager and more than once.
func (p *Pager) Stop() {
	if p != nil {
		p.t.stop()
	}
}

// Stats returns the counters; zero for a nil Pager.
func (p *Pager) Stats() PagerStats {
	if p == nil {
		return PagerStats{}
	}
	return PagerStats{Limit: p.limit, Rounds: p.rounds.Load(), AdvisedBytes: p.advised.Load(), RSS: p.lastRSS.Load()}
}

func (p *Pager) tick() {
	rss, err := processRSS()
	if err != nil {
		p.warn("pager: read RSS", "err", err)
		return
	}
	p.lastRSS.Store(rss)
	if rss <= p.trigger || time.Now().Before(p.quietUntil) {
		return
	}
	n, err := p.pageOut()
	p.advised.Add(n)
	p.rounds.Add(1) // after advised: a reader that sees the round sees its bytes
	if err != nil {
		p.warn("pager: page out", "err", err)
		return
	}
	after, err := processRSS()
	if err != nil {
		return
	}
	p.lastRSS.Store(after)
	if after > p.trigger && rss-after < p.limit/64 {
		p.quietUntil = time.Now().Add(PagerInterval)
	}
	if after > p.limit {
		// What is left is the heap and the binary: paging out tables
		// cannot bring it under the limit.
		p.warn("resident memory stays above the RSS limit after paging out the tables; the rest is the Go heap (lower --memory-limit or raise --rss-limit)",
			"rss", after, "rss_limit", p.limit)
	}
}

// warn logs at most once a minute: the condition repeats every tick.
func (p *Pager) warn(msg string, args ...any) {
	if time.Since(p.lastWarn) < time.Minute {
		return
	}
	p.lastWarn = time.Now()
	p.logger.Warn(msg, args...)
}

// processRSS reads the process's resident set size from /proc/self/statm (its
// second field, in pages).
func processRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/self/statm: %q", b)
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/self/statm: %w", err)
	}
	return n * int64(os.Getpagesize()), nil
}

// pageOut passes every mapping of a table under the pager's directory that
// was last written tableSettle ago or more (or is deleted) to
// madvise(MADV_PAGEOUT) and returns their total length. Memtable WALs
// (.mem) and value logs (.vlog) are left alone: Badger writes them through
// their mappings while they are open (and with values under the 1 MB
// threshold a value log holds little more than its header).
func (p *Pager) pageOut() (int64, error) {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	var total int64
	for _, m := range p.tableMappings(maps) {
		if fi, err := os.Stat(m.path); err == nil && time.Since(fi.ModTime()) < tableSettle {
			continue // perhaps still being written (a deleted table fails Stat: old)
		}
		_, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_PAGEOUT)
		// ENOMEM: the range was unmapped meanwhile (a table deleted
		// after a compaction); nothing to do.
		if errno != 0 && errno != unix.ENOMEM {
			return total, fmt.Errorf("madvise %s: %w", m.path, errno)
		}
		total += int64(m.end - m.start)
	}
	return total, nil
}

type mapping struct {
	start, end uintptr
	path       string
}

// tableMappings picks from /proc/self/maps the mappings of .sst files
// under the pager's directory (also of files deleted while still mapped).
func (p *Pager) tableMappings(maps []byte) []mapping {
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(maps))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// start-end perms offset dev inode path
		line := sc.Text()
		f := strings.SplitN(line, " ", 6)
		if len(f) < 6 {
			continue
		}
		path := strings.TrimSuffix(strings.TrimLeft(f[5], " "), " (deleted)")
		if !strings.HasPrefix(path, p.dir) || !strings.HasSuffix(path, ".sst") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		out = append(out, mapping{start: uintptr(start), end: uintptr(end), path: path})
	}
	return out
}
