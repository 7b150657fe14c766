package storage

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"github.com/surgefund/surge/donation"
)

// benchDonations is the number of confirmed donations in the snapshot
// benchmarks' FSM.
const benchDonations = 20000

// realisticLogs returns n create + payment pairs with random ids, keys and
// hashes (as web and the providers make them), so that compression is
// measured on data that does not repeat itself.
func realisticLogs(t testing.TB, n int) []*raft.Log {
	t.Helper()
	rnd := func(k int) string {
		b := make([]byte, k)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}
	names := []string{"Ada Lovelace", "Grace Hopper", "", "Marie Curie", "Alan Turing", "Émilie du Châtelet"}
	msgs := []string{"", "", "Good luck!", "For the kids", "Keep it up", ""}
	logs := make([]*raft.Log, 0, 2*n)
	for i := range n {
		id := "d_" + rnd(12)
		m := donation.Money{Minor: int64(500 + i%5000), Currency: "EUR"}
		c := donation.Command{Kind: donation.KindCreate, Create: &donation.Create{
			ID: id, IdempotencyKey: "k_" + rnd(16), RequestHash: rnd(32), Amount: m, Provider: "dev",
			Name: names[i%len(names)], Email: fmt.Sprintf("donor%d@example.org", i), Message: msgs[i%len(msgs)],
			At: 1_700_000_000_000_000_000 + int64(i)*1_000_000,
		}}
		p := donation.Command{Kind: donation.KindPayment, Payment: &donation.Payment{
			Provider: "dev", EventID: "evt_" + rnd(12), DonationID: id, Outcome: donation.OutcomeSucceeded,
			Amount: &m, ProviderRef: "dev_" + rnd(12), At: 1_700_000_001_000_000_000 + int64(i)*1_000_000,
		}}
		logs = append(logs, entries(t, uint64(len(logs)+1), c, p)...)
	}
	return logs
}

func realisticFSM(b *testing.B, n int) *FSM {
	b.Helper()
	f := openTestFSM(b, b.TempDir())
	logs := realisticLogs(b, n)
	for i := 0; i < len(logs); i += 64 {
		checkResp(b, f.ApplyBatch(logs[i:min(i+64, len(logs))]))
	}
	return f
}

// BenchmarkSnapshotPersist writes the whole FSM as a snapshot stream:
// "zstd" is what Persist writes (version 2), "plain" the same walk without
// compression (version 1, for comparison).
func BenchmarkSnapshotPersist(b *testing.B) {
	f := realisticFSM(b, benchDonations)
	for _, mode := range []string{"plain", "zstd"} {
		b.Run(mode, func(b *testing.B) {
			var size int64
			b.ReportAllocs()
			for b.Loop() {
				cw := &countWriter{}
				err := f.cur.db.View(func(txn *badger.Txn) error {
					if mode == "plain" {
						cw.Write([]byte("SURGEFSM\x00\x00\x00\x01"))
						return writeSnapshotBody(cw, crc32.New(castagnoli), txn)
					}
					return writeSnapshot(cw, txn)
				})
				if err != nil {
					b.Fatal(err)
				}
				size = cw.n
			}
			b.ReportMetric(float64(size)/benchDonations, "bytes/donation")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchDonations), "ns/donation")
		})
	}
}

// restoreDonations sets the size of BenchmarkSnapshotRestore's snapshot;
// a fresh node joining the cluster restores 1,000,000 or more, where the
// default run is quick:
//
//	go test -run x -bench SnapshotRestore -benchtime 1x ./storage/ -args -restore-donations 1000000
//
// With SURGE_BENCH_SNAP_DIR set, the snapshot is kept there as
// restore-<n>.snap and reused by later runs (building 1 M donations through
// ApplyBatch takes minutes).
var (
	restoreDonations = flag.Int("restore-donations", benchDonations, "donations in BenchmarkSnapshotRestore's snapshot")
	restoreProfile   = flag.String("restore-cpuprofile", "", "write a CPU profile of BenchmarkSnapshotRestore's restores only (not its set-up) to this file")
)

// restoreSnapshotFile returns a snapshot stream of n realistic confirmed
// donations in a file.
func restoreSnapshotFile(b *testing.B, n int) string {
	b.Helper()
	dir := os.Getenv("SURGE_BENCH_SNAP_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("restore-%d.snap", n))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	src := realisticFSM(b, n)
	fh, err := os.Create(path + ".tmp")
	if err != nil {
		b.Fatal(err)
	}
	err = src.WriteSnapshot(fh)
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(path+".tmp", path)
	}
	if err != nil {
		b.Fatal(err)
	}
	if err := src.Close(); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkSnapshotRestore restores a snapshot of n confirmed donations
// from a file into another FSM (decompress, verify, load the new
// generation, make it durable, switch), and reports per donation the wall
// time and the CPU of the whole process (Badger's goroutines included), and
// the peak RSS and anonymous memory of the process during the restore
// above what it held before (sampled every 2 ms, and VmHWM).
func BenchmarkSnapshotRestore(b *testing.B) {
	n := *restoreDonations
	path := restoreSnapshotFile(b, n)
	dst := openTestFSM(b, b.TempDir())
	runtime.GC()
	debug.FreeOSMemory()
	base := readMem(b)
	peak := base
	if *restoreProfile != "" {
		pf, err := os.Create(*restoreProfile)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			b.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); pf.Close() }()
	}
	b.ResetTimer()
	cpu := processCPU()
	for b.Loop() {
		fh, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		resetHWM()
		stop := sampleMem(b, &peak)
		err = dst.Restore(fh)
		stop()
		if err != nil {
			b.Fatal(err)
		}
		if dst.Count() != int64(n) {
			b.Fatalf("restored %d donations, want %d", dst.Count(), n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/donation")
	b.ReportMetric(float64((processCPU()-cpu).Nanoseconds())/float64(b.N*n), "cpu-ns/donation")
	b.ReportMetric(float64(peak.rss-base.rss)/1024, "peak-rss-MiB")
	b.ReportMetric(float64(peak.anon-base.anon)/1024, "peak-anon-MiB")
	b.ReportMetric(float64(peak.hwm-base.rss)/1024, "hwm-MiB")
}

// procMem is what /proc/self/status says about memory, in KiB.
type procMem struct{ rss, anon, hwm int64 }

// readProcMem reads /proc/self/status (rssKB, the idle-RSS test's reader,
// is this too).
func readProcMem() (procMem, error) {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return procMem{}, err
	}
	var m procMem
	for _, l := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(l, ":")
		var dst *int64
		switch {
		case !ok:
			continue
		case k == "VmRSS":
			dst = &m.rss
		case k == "RssAnon":
			dst = &m.anon
		case k == "VmHWM":
			dst = &m.hwm
		default:
			continue
		}
		if *dst, err = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err != nil {
			return procMem{}, fmt.Errorf("/proc/self/status %s: %w", k, err)
		}
	}
	if m.rss == 0 {
		return procMem{}, fmt.Errorf("no VmRSS in /proc/self/status")
	}
	return m, nil
}

func readMem(b *testing.B) procMem {
	b.Helper()
	m, err := readProcMem()
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	return m
}

// resetHWM resets VmHWM to the current RSS (Linux: clear_refs 5).
func resetHWM() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// sampleMem keeps the maximum of each figure in *peak until stop is called.
func sampleMem(b *testing.B, peak *procMem) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			m := readMem(b)
			peak.rss, peak.anon, peak.hwm = max(peak.rss, m.rss), max(peak.anon, m.anon), max(peak.hwm, m.hwm)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-finished }
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
