package storage

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/surgefund/surge/donation"
)

// benchCreates returns n create commands as logs from index.
func benchCreates(b *testing.B, from uint64, n int) []*raft.Log {
	b.Helper()
	logs := make([]*raft.Log, n)
	for i := range logs {
		idx := from + uint64(i)
		logs[i] = &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand,
			Data: mustEncode(b, createCmd(fmt.Sprintf("bench-%012d", idx), 2500, "EUR"))}
	}
	return logs
}

// processCPU is the CPU time of the whole process so far, so that a
// benchmark can report CPU per entry (Badger's background flushes included),
// which holds up better than wall time on a shared machine.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// diskWritten is how many bytes this process has caused to be written to
// storage so far (write_bytes of /proc/self/io: counted when a page is
// dirtied, through write(2) or a shared mapping, so Badger's mmapped WAL
// and tables count; a page dirtied again after writeback counts again). It
// is 0 where /proc/self/io cannot be read.
func diskWritten() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// benchApplyBatches is the timed loop of the ApplyBatch benchmarks: b.N
// transactions of batch entries from logs, reported per entry in wall and
// process CPU time.
func benchApplyBatches(b *testing.B, f *FSM, logs []*raft.Log, batch int) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	cpu, disk := processCPU(), diskWritten()
	for i := range b.N {
		checkResp(b, f.ApplyBatch(logs[i*batch:(i+1)*batch]))
	}
	b.ReportMetric(float64((processCPU()-cpu).Nanoseconds())/float64(b.N*batch), "cpu-ns/entry")
	b.ReportMetric(float64(diskWritten()-disk)/float64(b.N*batch), "disk-B/entry")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/entry")
}

func checkResp(b *testing.B, resp []any) {
	for _, r := range resp {
		if _, ok := r.([]byte); !ok {
			b.Fatalf("response %v", r)
		}
	}
}

// BenchmarkFSMApply: one create per transaction (Raft's non-batched path).
func BenchmarkFSMApply(b *testing.B) {
	f := openTestFSM(b, b.TempDir())
	logs := benchCreates(b, 1, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		checkResp(b, []any{f.Apply(logs[i])})
	}
}

// BenchmarkFSMApplyBatch: 64 creates per transaction (MaxAppendEntries).
// ns/op is per batch; ns/entry is reported as well.
func BenchmarkFSMApplyBatch(b *testing.B) {
	const batch = 64
	f := openTestFSM(b, b.TempDir())
	logs := benchCreates(b, 1, b.N*batch)
	benchApplyBatches(b, f, logs, batch)
}

// BenchmarkStoreLogs: 64 entries of a realistic command size per call,
// fsynced before it returns.
func BenchmarkStoreLogs(b *testing.B) {
	const batch = 64
	s := openTestLogStore(b, b.TempDir())
	data := mustEncode(b, createCmd("bench-000000000001", 2500, "EUR"))
	logs := make([]*raft.Log, batch)
	b.SetBytes(int64(batch * len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for j := range logs {
			logs[j] = &raft.Log{Index: uint64(i*batch + j + 1), Term: 1, Type: raft.LogCommand, Data: data}
		}
		if err := s.StoreLogs(logs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/entry")
}

// BenchmarkTotals: the read behind every GET /api/v1/total.
func BenchmarkTotals(b *testing.B) {
	f := openTestFSM(b, b.TempDir())
	f.ApplyBatch(benchCreates(b, 1, 10))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if f.Totals("EUR").Currency != donation.Currency("EUR") {
				b.Fatal("wrong currency")
			}
		}
	})
}

// BenchmarkFSMApplyBatchMixed: 64 entries per transaction, half creates and
// half succeeded payments of the donations created in the previous batch
// (the HTTP path's create + confirm), so payments read stored donations.
func BenchmarkFSMApplyBatchMixed(b *testing.B) {
	const batch, half = 64, 32
	f := openTestFSM(b, b.TempDir())
	logs := make([]*raft.Log, 0, (b.N+1)*batch)
	idx := uint64(1)
	add := func(c donation.Command) {
		logs = append(logs, &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: mustEncode(b, c)})
		idx++
	}
	for i := range b.N + 1 {
		for j := range half {
			add(createCmd(fmt.Sprintf("bench-%08d-%03d", i, j), 2500, "EUR"))
			if i > 0 {
				add(paymentCmd(fmt.Sprintf("evt-%08d-%03d", i, j), fmt.Sprintf("bench-%08d-%03d", i-1, j), donation.OutcomeSucceeded))
			}
		}
	}
	f.ApplyBatch(logs[:half])
	logs = logs[half:]
	benchApplyBatches(b, f, logs, batch)
}
