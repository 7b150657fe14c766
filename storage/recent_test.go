package storage

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/surgefund/surge/donation"
)

// TestRecentCacheFollowsRestore: after a restore to a state where the
// donation is still pending, a refund must see it pending, not the
// succeeded value the apply path cached before the restore.
func TestRecentCacheFollowsRestore(t *testing.T) {
	f := openTestFSM(t, t.TempDir())
	applyAll(t, f, entries(t, 1, createCmd("a", 2500, "EUR")))
	pending := snapshotBytes(t, f)
	res := applyAll(t, f, entries(t, 2, paymentCmd("e1", "a", donation.OutcomeSucceeded)))
	if res[0].Code != donation.CodeOK {
		t.Fatalf("payment: %+v", res[0])
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(pending))); err != nil {
		t.Fatal(err)
	}
	res = applyAll(t, f, entries(t, 3, refundCmd("r1", "a", 100, "EUR")))
	if res[0].Code != donation.CodeInvalidTransition || res[0].Donation.Status != donation.StatusPending {
		t.Fatalf("refund after restore: %+v", res[0])
	}
	mustVerify(t, f)
}

// TestRecentCacheEviction: more donations than the cache holds, each paid
// long after its create, still decide exactly as a fresh FSM does.
func TestRecentCacheEviction(t *testing.T) {
	n := recentSize + 100
	var creates, pays []donation.Command
	for i := range n {
		id := fmt.Sprintf("d%05d", i)
		creates = append(creates, createCmd(id, int64(100+i%7), "EUR"))
		pays = append(pays, paymentCmd("e"+id, id, donation.OutcomeSucceeded))
	}
	f := openTestFSM(t, t.TempDir())
	logs := entries(t, 1, append(creates, pays...)...)
	for i := 0; i < len(logs); i += 64 {
		for j, r := range f.ApplyBatch(logs[i:min(i+64, len(logs))]) {
			if res := decodeResp(t, r); res.Code != donation.CodeOK {
				t.Fatalf("log %d: %+v", i+j+1, res)
			}
		}
	}
	if got := f.Totals("EUR").Donations; got != int64(n) {
		t.Fatalf("%d donations counted, want %d", got, n)
	}
	if len(f.recent.m) != recentSize || len(f.recent.ring) != recentSize {
		t.Fatalf("cache holds %d (%d ids), want %d", len(f.recent.m), len(f.recent.ring), recentSize)
	}
	mustVerify(t, f)
}
