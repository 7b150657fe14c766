package storage

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/surgefund/surge/donation"
)

func TestFSMApplySequences(t *testing.T) {
	type want struct {
		codes  []donation.Code
		status donation.Status
		totals donation.Totals
	}
	tests := []struct {
		name string
		cmds []donation.Command
		want want
	}{
		{
			name: "create stays pending and counts nothing",
			cmds: []donation.Command{createCmd("a", 2500, "EUR")},
			want: want{codes: []donation.Code{donation.CodeOK}, status: donation.StatusPending,
				totals: donation.Totals{Currency: "EUR"}},
		},
		{
			name: "create then payment counts",
			cmds: []donation.Command{createCmd("a", 2500, "EUR"), paymentCmd("e1", "a", donation.OutcomeSucceeded)},
			want: want{codes: []donation.Code{donation.CodeOK, donation.CodeOK}, status: donation.StatusSucceeded,
				totals: donation.Totals{Currency: "EUR", RaisedMinor: 2500, Donations: 1}},
		},
		{
			name: "same notification twice counts once",
			cmds: []donation.Command{createCmd("a", 2500, "EUR"),
				paymentCmd("e1", "a", donation.OutcomeSucceeded), paymentCmd("e1", "a", donation.OutcomeSucceeded)},
			want: want{codes: []donation.Code{donation.CodeOK, donation.CodeOK, donation.CodeDuplicate},
				status: donation.StatusSucceeded, totals: donation.Totals{Currency: "EUR", RaisedMinor: 2500, Donations: 1}},
		},
		{
			name: "two events for the same success count once",
			cmds: []donation.Command{createCmd("a", 2500, "EUR"),
				paymentCmd("e1", "a", donation.OutcomeSucceeded), paymentCmd("e2", "a", donation.OutcomeSucceeded)},
			want: want{codes: []donation.Code{donation.CodeOK, donation.CodeOK, donation.CodeIgnored},
				status: donation.StatusSucceeded, totals: donation.Totals{Currency: "EUR", RaisedMinor: 2500, Donations: 1}},
		},
		{
			name: "failed payment never counts",
			cmds: []donation.Command{createCmd("a", 2500, "EUR"),
				paymentCmd("e1", "a", donation.OutcomeFailed), paymentCmd("e2", "a", donation.OutcomeSucceeded)},
			want: want{codes: []donation.Code{donation.CodeOK, donation.CodeOK, donation.CodeIgnored},
				status: donation.StatusFailed, totals: donation.Totals{Currency: "EUR"}},
		},
		{
			name: "partial refund keeps the donation counted",
			cmds: []donation.Command{createCmd("a", 2500, "EUR"),
				paymentCmd("e1", "a", donation.OutcomeSucceeded), refundCmd("r1", "a", 500, "EUR")},
			want: want{codes: []donation.Code{donation.CodeOK, donation.CodeOK, donation.CodeOK},
				status: donation.StatusSucceeded, totals: donation.Totals{Currency: "EUR", RaisedMinor: 2000, Donations: 1}},
		},
		{
			name: "full refund in two parts uncounts it, a repeated refund id is a duplicate",
			cmds: []donation.Command{createCmd("a", 2500, "EUR"),
				paymentCmd("e1", "a", donation.OutcomeSucceeded), refundCmd("r1", "a", 500, "EUR"),
				refundCmd("r1", "a", 500, "EUR"), refundCmd("r2", "a", 2000, "EUR")},
			want: want{codes: []donation.Code{donation.CodeOK, donation.CodeOK, donation.CodeOK,
				donation.CodeDuplicate, donation.CodeOK},
				status: donation.StatusRefunded, totals: donation.Totals{Currency: "EUR"}},
		},
		{
			name: "refund above what is left changes nothing",
			cmds: []donation.Command{createCmd("a", 2500, "EUR"),
				paymentCmd("e1", "a", donation.OutcomeSucceeded), refundCmd("r1", "a", 2501, "EUR")},
			want: want{codes: []donation.Code{donation.CodeOK, donation.CodeOK, donation.CodeRefundExceeds},
				status: donation.StatusSucceeded, totals: donation.Totals{Currency: "EUR", RaisedMinor: 2500, Donations: 1}},
		},
		{
			name: "refund of a pending donation is refused",
			cmds: []donation.Command{createCmd("a", 2500, "EUR"), refundCmd("r1", "a", 100, "EUR")},
			want: want{codes: []donation.Code{donation.CodeOK, donation.CodeInvalidTransition},
				status: donation.StatusPending, totals: donation.Totals{Currency: "EUR"}},
		},
		{
			name: "same idempotency key is a duplicate",
			cmds: []donation.Command{createCmd("a", 2500, "EUR"), createCmd("a", 2500, "EUR")},
			want: want{codes: []donation.Code{donation.CodeOK, donation.CodeDuplicate},
				status: donation.StatusPending, totals: donation.Totals{Currency: "EUR"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := openTestFSM(t, t.TempDir())
			res := applyAll(t, f, entries(t, 1, tc.cmds...))
			var codes []donation.Code
			for _, r := range res {
				codes = append(codes, r.Code)
			}
			if !reflect.DeepEqual(codes, tc.want.codes) {
				t.Fatalf("codes = %v, want %v", codes, tc.want.codes)
			}
			d, ok, err := f.Donation("a")
			if err != nil || !ok {
				t.Fatalf("donation a: ok=%v err=%v", ok, err)
			}
			if d.Status != tc.want.status {
				t.Fatalf("status = %s, want %s", d.Status, tc.want.status)
			}
			if got := f.Totals("EUR"); got != tc.want.totals {
				t.Fatalf("totals = %+v, want %+v", got, tc.want.totals)
			}
			if got := f.AppliedIndex(); got != uint64(len(tc.cmds)) {
				t.Fatalf("applied index = %d, want %d", got, len(tc.cmds))
			}
			if f.Count() != 1 {
				t.Fatalf("count = %d", f.Count())
			}
			mustVerify(t, f)
		})
	}
}

func TestFSMResponses(t *testing.T) {
	f := openTestFSM(t, t.TempDir())
	logs := []*raft.Log{
		{Index: 1, Type: raft.LogConfiguration, Data: []byte("whatever raft puts here")},
		{Index: 2, Type: raft.LogCommand, Data: []byte(`{"v":1,"kind":"create"}`)},
		{Index: 3, Type: raft.LogCommand, Data: []byte("not json at all")},
		{Index: 4, Type: raft.LogCommand, Data: []byte(`{"v":99,"kind":"create","create":{}}`)},
		entries(t, 5, createCmd("a", 100, "EUR"))[0],
		{Index: 6, Type: raft.LogBarrier},
		{Index: 7, Type: raft.LogNoop},
	}
	resp := f.ApplyBatch(logs)
	if len(resp) != len(logs) {
		t.Fatalf("%d responses for %d logs", len(resp), len(logs))
	}
	if resp[0] != nil || resp[5] != nil || resp[6] != nil {
		t.Fatalf("non-command responses: %v %v %v", resp[0], resp[5], resp[6])
	}
	for i, want := range []error{donation.ErrInvalidCommand, donation.ErrInvalidCommand, donation.ErrUnknownVersion} {
		err, ok := resp[i+1].(error)
		if !ok || !errors.Is(err, want) {
			t.Fatalf("resp[%d] = %v, want error wrapping %v", i+1, resp[i+1], want)
		}
	}
	if r := decodeResp(t, resp[4]); r.Code != donation.CodeOK || r.Donation.ID != "a" {
		t.Fatalf("create result %+v", r)
	}
	if f.AppliedIndex() != 7 {
		t.Fatalf("applied = %d, bad commands and non-commands must still advance it", f.AppliedIndex())
	}
	// A lone non-command entry through Apply moves the index too.
	if r := f.Apply(&raft.Log{Index: 8, Type: raft.LogNoop}); r != nil {
		t.Fatalf("noop response %v", r)
	}
	if f.AppliedIndex() != 8 {
		t.Fatalf("applied = %d after noop", f.AppliedIndex())
	}
}

// Replaying the log after a restart (Raft does this from its last snapshot
// index) must change nothing.
func TestFSMReplayAfterReopen(t *testing.T) {
	dir := t.TempDir()
	var logs []*raft.Log
	for i := range 20 {
		id := fmt.Sprintf("d%02d", i)
		logs = append(logs, entries(t, uint64(len(logs)+1),
			createCmd(id, int64(100+i), "EUR"), paymentCmd("ev-"+id, id, donation.OutcomeSucceeded))...)
	}
	f, err := OpenFSM(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	applyAll(t, f, logs)
	wantTotals, wantDonations := f.Totals("EUR"), exportAll(t, f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	f = openTestFSM(t, dir)
	if f.AppliedIndex() != uint64(len(logs)) || f.Totals("EUR") != wantTotals {
		t.Fatalf("after reopen applied=%d totals=%+v", f.AppliedIndex(), f.Totals("EUR"))
	}
	for _, l := range logs {
		if r := f.Apply(l); r != nil {
			t.Fatalf("replayed log %d answered %v, want nil", l.Index, r)
		}
	}
	f.ApplyBatch(logs[10:]) // a batch entirely below the applied index
	mixed := append(append([]*raft.Log(nil), logs[30:]...),
		entries(t, uint64(len(logs)+1), createCmd("new", 5, "EUR"), paymentCmd("ev-new", "new", donation.OutcomeSucceeded))...)
	resp := f.ApplyBatch(mixed) // a batch straddling it
	for i, r := range resp {
		if (i < 10) != (r == nil) {
			t.Fatalf("mixed batch response %d = %v", i, r)
		}
	}
	want := donation.Totals{Currency: "EUR", RaisedMinor: wantTotals.RaisedMinor + 5, Donations: wantTotals.Donations + 1}
	if got := f.Totals("EUR"); got != want {
		t.Fatalf("totals %+v, want %+v", got, want)
	}
	if got := exportAll(t, f); len(got) != len(wantDonations)+1 {
		t.Fatalf("%d donations after replay, want %d", len(got), len(wantDonations)+1)
	}
	mustVerify(t, f)
}

// mixedWorkload returns a deterministic stream of every kind of entry,
// including duplicates, bad commands and non-command logs.
func mixedWorkload(t testing.TB, n int) []*raft.Log {
	t.Helper()
	var logs []*raft.Log
	add := func(c donation.Command) {
		logs = append(logs, entries(t, uint64(len(logs)+1), c)...)
	}
	curs := []donation.Currency{"EUR", "USD", "JPY"}
	for i := range n {
		id := fmt.Sprintf("don-%04d", i)
		cur := curs[i%len(curs)]
		amount := int64(1000 + 37*i)
		add(createCmd(id, amount, cur))
		switch i % 6 {
		case 0, 1, 2:
			add(paymentCmd("ok-"+id, id, donation.OutcomeSucceeded))
		case 3:
			add(paymentCmd("fail-"+id, id, donation.OutcomeFailed))
		case 4:
			add(paymentCmd("proc-"+id, id, donation.OutcomeProcessing))
		}
		if i%4 == 0 {
			add(paymentCmd("ok-"+id, id, donation.OutcomeSucceeded)) // redelivery
		}
		if i%5 == 0 && i > 0 {
			prev := fmt.Sprintf("don-%04d", i-5)
			add(refundCmd("ref-"+id, prev, 100, curs[(i-5)%len(curs)]))
		}
		if i%7 == 0 {
			logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Type: raft.LogNoop})
			logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Type: raft.LogCommand, Data: []byte("{bad")})
		}
	}
	return logs
}

func TestFSMApplyBatchEqualsSequential(t *testing.T) {
	logs := mixedWorkload(t, 120)
	seq := openTestFSM(t, t.TempDir())
	var seqResp []any
	for _, l := range logs {
		seqResp = append(seqResp, seq.Apply(l))
	}
	for _, size := range []int{1, 7, 64, len(logs)} {
		t.Run(fmt.Sprintf("batch %d", size), func(t *testing.T) {
			bat := openTestFSM(t, t.TempDir())
			var batResp []any
			for i := 0; i < len(logs); i += size {
				batResp = append(batResp, bat.ApplyBatch(logs[i:min(i+size, len(logs))])...)
			}
			if len(batResp) != len(seqResp) {
				t.Fatalf("%d responses, want %d", len(batResp), len(seqResp))
			}
			for i := range seqResp {
				if fmt.Sprint(seqResp[i]) != fmt.Sprint(batResp[i]) {
					t.Fatalf("response %d: sequential %v, batch %v", i, seqResp[i], batResp[i])
				}
			}
			if !reflect.DeepEqual(exportAll(t, seq), exportAll(t, bat)) {
				t.Fatal("donations differ")
			}
			if !reflect.DeepEqual(seq.AllTotals(), bat.AllTotals()) {
				t.Fatalf("totals differ: %v vs %v", seq.AllTotals(), bat.AllTotals())
			}
			if seq.AppliedIndex() != bat.AppliedIndex() || seq.Count() != bat.Count() {
				t.Fatal("applied index or count differ")
			}
			mustVerify(t, bat)
		})
	}
	if len(seq.AllTotals()) != 3 {
		t.Fatalf("want totals for 3 currencies, got %v", seq.AllTotals())
	}
}

func TestFSMExportListsEachOnce(t *testing.T) {
	f := openTestFSM(t, t.TempDir())
	logs := mixedWorkload(t, 50)
	f.ApplyBatch(logs)
	got := exportAll(t, f)
	if len(got) != 50 || int64(len(got)) != f.Count() {
		t.Fatalf("exported %d, count %d, want 50", len(got), f.Count())
	}
	seen := map[string]bool{}
	for i, d := range got {
		if seen[d.ID] {
			t.Fatalf("%s exported twice", d.ID)
		}
		seen[d.ID] = true
		if i > 0 && got[i-1].ID >= d.ID {
			t.Fatalf("export not in id order at %d: %s then %s", i, got[i-1].ID, d.ID)
		}
	}

	stop := errors.New("stop")
	n := 0
	err := f.Export(context.Background(), func(donation.Donation) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Fatalf("export did not stop at the callback error: n=%d err=%v", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.Export(ctx, func(donation.Donation) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("export with cancelled ctx: %v", err)
	}
}

func TestFSMReadsAndClose(t *testing.T) {
	dir := t.TempDir()
	f, err := OpenFSM(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := f.Donation("nope"); ok || err != nil {
		t.Fatalf("missing donation: ok=%v err=%v", ok, err)
	}
	if got := f.Totals("GBP"); got != (donation.Totals{Currency: "GBP"}) {
		t.Fatalf("empty totals %+v", got)
	}
	applyAll(t, f, entries(t, 1, createCmd("a", 100, "EUR")))
	if lsm, vlog := f.Size(); lsm < 0 || vlog < 0 {
		t.Fatalf("size %d %d", lsm, vlog)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, _, err := f.Donation("a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if r, ok := f.Apply(entries(t, 2, createCmd("b", 1, "EUR"))[0]).(error); !ok || !errors.Is(r, ErrClosed) {
		t.Fatalf("apply after close: %v", r)
	}
	if _, err := f.Snapshot(); !errors.Is(err, ErrClosed) {
		t.Fatalf("snapshot after close: %v", err)
	}
	if err := f.Export(context.Background(), func(donation.Donation) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("export after close: %v", err)
	}
}

// A batch whose writes exceed one Badger transaction (1.2 MB with these
// options) is split and still gives the same state and responses.
func TestFSMApplyBatchSplitsHugeBatch(t *testing.T) {
	var cmds []donation.Command
	for i := range 600 {
		c := createCmd(fmt.Sprintf("big-%04d", i), int64(100+i), "EUR")
		c.Create.Message = fmt.Sprintf("%0*d", donation.MaxMessageLen, i) // ~1.3 KB per record
		cmds = append(cmds, c, paymentCmd(fmt.Sprintf("ev-%d", i), c.Create.ID, donation.OutcomeSucceeded))
	}
	logs := entries(t, 1, cmds...)
	bat := openTestFSM(t, t.TempDir())
	resp := bat.ApplyBatch(logs)
	seq := openTestFSM(t, t.TempDir())
	for i, l := range logs {
		if want := seq.Apply(l); fmt.Sprint(want) != fmt.Sprint(resp[i]) {
			t.Fatalf("response %d differs", i)
		}
	}
	if bat.AppliedIndex() != uint64(len(logs)) || bat.Count() != 600 || bat.Totals("EUR") != seq.Totals("EUR") {
		t.Fatalf("applied %d count %d totals %+v vs %+v", bat.AppliedIndex(), bat.Count(), bat.Totals("EUR"), seq.Totals("EUR"))
	}
	if bat.Err() != nil {
		t.Fatal(bat.Err())
	}
	mustVerify(t, bat)
}
