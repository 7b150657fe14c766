package storage

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/surgefund/surge/donation"
)

func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	if os.Getenv("SURGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func openTestLogStore(t testing.TB, dir string) *LogStore {
	t.Helper()
	s, err := OpenLogStore(dir, testLogger(t))
	if err != nil {
		t.Fatalf("open log store: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close log store: %v", err)
		}
	})
	return s
}

func openTestFSM(t testing.TB, dir string) *FSM {
	t.Helper()
	f, err := OpenFSM(dir, testLogger(t))
	if err != nil {
		t.Fatalf("open fsm: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("close fsm: %v", err)
		}
	})
	return f
}

func mustEncode(t testing.TB, c donation.Command) []byte {
	t.Helper()
	b, err := donation.Encode(c)
	if err != nil {
		t.Fatalf("encode %+v: %v", c, err)
	}
	return b
}

func createCmd(id string, minor int64, cur donation.Currency) donation.Command {
	return donation.Command{Kind: donation.KindCreate, Create: &donation.Create{
		ID: id, IdempotencyKey: "idem-" + id, RequestHash: "h-" + id,
		Amount: donation.Money{Minor: minor, Currency: cur}, Provider: "dev",
		Name: "Ada", Email: "ada@example.org", At: 1_700_000_000_000_000_000,
	}}
}

func paymentCmd(event, id string, outcome donation.Outcome) donation.Command {
	return donation.Command{Kind: donation.KindPayment, Payment: &donation.Payment{
		Provider: "dev", EventID: event, DonationID: id, Outcome: outcome, At: 1_700_000_001_000_000_000,
	}}
}

func refundCmd(refundID, id string, minor int64, cur donation.Currency) donation.Command {
	return donation.Command{Kind: donation.KindRefund, Refund: &donation.Refund{
		RefundID: refundID, DonationID: id, Amount: donation.Money{Minor: minor, Currency: cur},
		At: 1_700_000_002_000_000_000,
	}}
}

// entries turns commands into consecutive command logs starting at index.
func entries(t testing.TB, index uint64, cmds ...donation.Command) []*raft.Log {
	t.Helper()
	logs := make([]*raft.Log, len(cmds))
	for i, c := range cmds {
		logs[i] = &raft.Log{Index: index + uint64(i), Term: 1, Type: raft.LogCommand, Data: mustEncode(t, c)}
	}
	return logs
}

// applyAll applies logs one by one and returns the decoded results (a zero
// Result for nil responses); it fails the test on error responses.
func applyAll(t testing.TB, f *FSM, logs []*raft.Log) []donation.Result {
	t.Helper()
	out := make([]donation.Result, len(logs))
	for i, l := range logs {
		out[i] = decodeResp(t, f.Apply(l))
	}
	return out
}

func decodeResp(t testing.TB, resp any) donation.Result {
	t.Helper()
	switch r := resp.(type) {
	case nil:
		return donation.Result{}
	case []byte:
		res, err := donation.DecodeResult(r)
		if err != nil {
			t.Fatalf("decode result: %v", err)
		}
		return res
	case error:
		t.Fatalf("apply returned error: %v", r)
	default:
		t.Fatalf("apply returned %T", resp)
	}
	return donation.Result{}
}

func exportAll(t testing.TB, f *FSM) []donation.Donation {
	t.Helper()
	var out []donation.Donation
	if err := f.Export(context.Background(), func(d donation.Donation) error {
		out = append(out, d)
		return nil
	}); err != nil {
		t.Fatalf("export: %v", err)
	}
	return out
}

func snapshotBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("persist left sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

// memSink is a raft.SnapshotSink over memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func mustVerify(t testing.TB, f *FSM) {
	t.Helper()
	if err := f.Verify(context.Background()); err != nil {
		t.Fatalf("verify: %v", err)
	}
}
