package storage

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"testing"

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

// BenchmarkSnapshotRestore restores the snapshot of the FSM into another
// FSM (decompress, verify, WriteBatch, close, reopen, switch generation).
func BenchmarkSnapshotRestore(b *testing.B) {
	src := realisticFSM(b, benchDonations)
	var buf bytes.Buffer
	if err := src.WriteSnapshot(&buf); err != nil {
		b.Fatal(err)
	}
	dst := openTestFSM(b, b.TempDir())
	b.ResetTimer()
	for b.Loop() {
		if err := dst.Restore(io.NopCloser(bytes.NewReader(buf.Bytes()))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchDonations), "ns/donation")
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
