package donation

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// memState is a map-backed State that applies Effects the way the storage
// package writes them in its Badger transaction: put the donation, point
// every key at KeyID (falling back to Put.ID), move the totals by Delta.
type memState struct {
	donations map[string]Donation
	keys      map[string]string
	totals    map[Currency]Totals

	// reads, when not nil, keeps a copy of each donation as Decide first
	// read it, so that step can tell whether Decide wrote through it.
	reads map[string]readCopy
}

// readCopy is a donation as it was read, with the whole backing array of
// its Events: stored Events have spare capacity, so an append that forgets
// to copy would write there without changing what the slice shows.
type readCopy struct {
	d     Donation
	spare []string
}

func eventsToCap(d Donation) []string { return slices.Clone(d.Events[:cap(d.Events)]) }

func newMemState() *memState {
	return &memState{
		donations: map[string]Donation{},
		keys:      map[string]string{},
		totals:    map[Currency]Totals{},
	}
}

func (s *memState) Donation(id string) (Donation, bool, error) {
	d, ok := s.donations[id]
	if _, seen := s.reads[id]; ok && s.reads != nil && !seen {
		s.reads[id] = readCopy{d: cloneDonation(d), spare: eventsToCap(d)}
	}
	return d, ok, nil // shares Events with the stored donation, as a cache would
}

func (s *memState) Key(key string) (string, bool, error) {
	id, ok := s.keys[key]
	return id, ok, nil
}

func (s *memState) apply(t *testing.T, eff Effects) {
	t.Helper()
	if eff.Put != nil {
		d := cloneDonation(*eff.Put)
		d.Events = slices.Grow(d.Events, 3) // spare capacity, see readCopy
		s.donations[eff.Put.ID] = d
	}
	id := eff.KeyID
	if id == "" && eff.Put != nil {
		id = eff.Put.ID
	}
	if len(eff.Keys) > 0 && id == "" {
		t.Fatalf("effects record keys %q without a donation id", eff.Keys)
	}
	for _, k := range eff.Keys {
		if prev, ok := s.keys[k]; ok {
			t.Fatalf("effects re-point key %q from %q to %q", k, prev, id)
		}
		s.keys[k] = id
	}
	if eff.Delta != (Delta{}) {
		tot := s.totals[eff.Delta.Currency]
		tot.Currency = eff.Delta.Currency
		tot.RaisedMinor += eff.Delta.Raised
		tot.Donations += eff.Delta.Donations
		s.totals[eff.Delta.Currency] = tot
	}
}

func cloneDonation(d Donation) Donation {
	d.Events = slices.Clone(d.Events)
	return d
}

func (s *memState) clone() *memState {
	c := &memState{
		donations: make(map[string]Donation, len(s.donations)),
		keys:      maps.Clone(s.keys),
		totals:    maps.Clone(s.totals),
	}
	for id, d := range s.donations {
		c.donations[id] = cloneDonation(d)
	}
	return c
}

// applied is one command run through Decide and applied.
type applied struct {
	cmd Command
	res Result
	eff Effects
}

// step decides cmd against st, checks that Decide left st alone and that
// its answer fits its Code, applies the effects, checks that the donation
// it changed only moved forward, and checks the totals invariant.
func step(t *testing.T, st *memState, cmd Command) applied {
	t.Helper()
	st.reads = map[string]readCopy{}
	res, eff, err := Decide(st, cmd)
	reads := st.reads
	st.reads = nil
	if err != nil {
		t.Fatalf("Decide(%s %s): %v", cmd.Kind, cmd.UniqueKey(), err)
	}
	for id, r := range reads {
		if d := st.donations[id]; !reflect.DeepEqual(d, r.d) || !slices.Equal(eventsToCap(d), r.spare) {
			t.Fatalf("Decide(%s %s) wrote into donation %q it read", cmd.Kind, cmd.UniqueKey(), id)
		}
	}
	checkEffects(t, st, cmd, res, eff)
	var old Donation
	var existed bool
	if eff.Put != nil {
		old, existed = st.donations[eff.Put.ID]
		old = cloneDonation(old)
	}
	st.apply(t, eff)
	if existed {
		checkForward(t, old, st.donations[old.ID])
	}
	checkTotals(t, st)
	return applied{cmd: cmd, res: res, eff: eff}
}

// checkEffects checks that what Decide wants to write matches its Code.
func checkEffects(t *testing.T, before *memState, cmd Command, res Result, eff Effects) {
	t.Helper()
	key := cmd.UniqueKey()
	where := fmt.Sprintf("%s %s -> %s", cmd.Kind, key, res.Code)
	keyID, keyKnown := before.keys[key]
	if keyKnown {
		// A recorded key answers duplicate for ever; only a create can
		// answer conflict instead, and exactly when the hash differs.
		want := CodeDuplicate
		if cmd.Kind == KindCreate && before.donations[keyID].RequestHash != cmd.Create.RequestHash {
			want = CodeIdempotencyConflict
		}
		if res.Code != want || res.Donation.ID != keyID {
			t.Fatalf("%s: recorded key for %q answered %s about %q, want %s", where, keyID, res.Code, res.Donation.ID, want)
		}
	}
	switch res.Code {
	case CodeOK, CodeIgnored:
		if res.Code == CodeIgnored && cmd.Kind != KindPayment {
			t.Fatalf("%s: only payment events are ignored", where)
		}
		if keyKnown {
			t.Fatalf("%s: key was already recorded", where)
		}
		if eff.Put == nil || !slices.Equal(eff.Keys, []string{key}) || eff.KeyID != eff.Put.ID {
			t.Fatalf("%s: effects %+v do not put the donation and record exactly its key", where, eff)
		}
		if !reflect.DeepEqual(res.Donation, *eff.Put) {
			t.Fatalf("%s: result donation %+v differs from the one put %+v", where, res.Donation, *eff.Put)
		}
		if cmd.Kind != KindCreate {
			// The key is appended, until the record lists MaxRecordedEvents.
			prev := before.donations[eff.Put.ID].Events
			want := append(slices.Clip(prev), key)
			if len(prev) >= MaxRecordedEvents {
				want = prev
			}
			if !slices.Equal(eff.Put.Events, want) {
				t.Fatalf("%s: events %q, want %q", where, eff.Put.Events, want)
			}
		}
		if res.Code == CodeIgnored {
			if eff.Delta != (Delta{}) {
				t.Fatalf("%s: ignored event moves the total by %+v", where, eff.Delta)
			}
			if prev := before.donations[eff.Put.ID]; prev.Status != eff.Put.Status {
				t.Fatalf("%s: ignored event moved status %s -> %s", where, prev.Status, eff.Put.Status)
			}
		}
		if eff.Delta != (Delta{}) && eff.Delta.Currency != eff.Put.Amount.Currency {
			t.Fatalf("%s: delta in %s for a donation in %s", where, eff.Delta.Currency, eff.Put.Amount.Currency)
		}
	case CodeDuplicate, CodeIdempotencyConflict, CodeNotFound, CodeAmountMismatch,
		CodeInvalidTransition, CodeRefundExceeds:
		if !eff.Empty() || eff.Delta != (Delta{}) || eff.KeyID != "" {
			t.Fatalf("%s: rule outcome has effects %+v", where, eff)
		}
		if res.Code == CodeNotFound && !reflect.DeepEqual(res.Donation, Donation{}) {
			t.Fatalf("%s: not_found carries donation %+v", where, res.Donation)
		}
		if res.Code != CodeNotFound {
			if stored, ok := before.donations[res.Donation.ID]; !ok || !reflect.DeepEqual(stored, res.Donation) {
				t.Fatalf("%s: result donation %+v is not the stored one", where, res.Donation)
			}
		}
		if res.Code == CodeDuplicate && !keyKnown && (cmd.Kind != KindCreate || res.Donation.ID != cmd.Create.ID) {
			t.Fatalf("%s: duplicate of a key never recorded", where)
		}
		if res.Code == CodeIdempotencyConflict && (!keyKnown || res.Donation.RequestHash == cmd.Create.RequestHash) {
			t.Fatalf("%s: conflict without a recorded key of another hash", where)
		}
	default:
		t.Fatalf("%s: unknown code", where)
	}
}

// checkForward checks that a stored donation that was put again only moved
// forward. (Nothing is ever deleted: Effects cannot express it, and apply
// refuses to re-point a key.)
func checkForward(t *testing.T, old, d Donation) {
	t.Helper()
	if d.Status != old.Status && !old.Status.CanMoveTo(d.Status) {
		t.Fatalf("donation %q moved backward: %s -> %s", old.ID, old.Status, d.Status)
	}
	if d.ID != old.ID || d.Amount != old.Amount || d.IdempotencyKey != old.IdempotencyKey ||
		d.RequestHash != old.RequestHash || d.CreatedAt != old.CreatedAt || d.Provider != old.Provider ||
		d.Name != old.Name || d.Email != old.Email || d.Message != old.Message || d.Anonymous != old.Anonymous {
		t.Fatalf("donation %q changed what the donor gave: %+v -> %+v", old.ID, old, d)
	}
	if d.RefundedMinor < old.RefundedMinor {
		t.Fatalf("donation %q refunded amount went down: %d -> %d", old.ID, old.RefundedMinor, d.RefundedMinor)
	}
	if len(d.Events) < len(old.Events) || !slices.Equal(d.Events[:len(old.Events)], old.Events) {
		t.Fatalf("donation %q rewrote its event history: %q -> %q", old.ID, old.Events, d.Events)
	}
	if old.ProviderRef != "" && d.ProviderRef != old.ProviderRef {
		t.Fatalf("donation %q provider ref changed %q -> %q", old.ID, old.ProviderRef, d.ProviderRef)
	}
}

// checkTotals is the ledger invariant: for each currency, the stored total
// equals the sum of Donation.Counted over the stored donations, and its
// count is the number of donations Counted includes. It also checks each
// donation is self-consistent and each key points at a donation.
func checkTotals(t *testing.T, st *memState) {
	t.Helper()
	want := map[Currency]Totals{}
	for id, d := range st.donations {
		if d.ID != id || !d.Status.Valid() {
			t.Fatalf("donation %q malformed: %+v", id, d)
		}
		if d.RefundedMinor < 0 || d.RefundedMinor > d.Amount.Minor {
			t.Fatalf("donation %q refunded %d of %d", id, d.RefundedMinor, d.Amount.Minor)
		}
		switch d.Status {
		case StatusPending, StatusFailed:
			if d.RefundedMinor != 0 {
				t.Fatalf("%s donation %q has refunds", d.Status, id)
			}
		case StatusSucceeded:
			if d.RefundedMinor == d.Amount.Minor {
				t.Fatalf("donation %q fully refunded but still succeeded", id)
			}
		case StatusRefunded:
			if d.RefundedMinor != d.Amount.Minor {
				t.Fatalf("donation %q refunded with %d of %d left", id, d.Amount.Minor-d.RefundedMinor, d.Amount.Minor)
			}
		}
		for _, k := range d.Events {
			if st.keys[k] != id {
				t.Fatalf("donation %q lists event %q recorded for %q", id, k, st.keys[k])
			}
		}
		if v, ok := d.Counted(); ok {
			tot := want[d.Amount.Currency]
			tot.Currency = d.Amount.Currency
			tot.RaisedMinor += v
			tot.Donations++
			want[d.Amount.Currency] = tot
		}
	}
	for k, id := range st.keys {
		if _, ok := st.donations[id]; !ok {
			t.Fatalf("key %q points at missing donation %q", k, id)
		}
	}
	for c, got := range st.totals {
		if got.Currency != c {
			t.Fatalf("totals under %s say %s", c, got.Currency)
		}
		if w := want[c]; got.RaisedMinor != w.RaisedMinor || got.Donations != w.Donations {
			t.Fatalf("totals %s = %d in %d donations, donations sum to %d in %d",
				c, got.RaisedMinor, got.Donations, w.RaisedMinor, w.Donations)
		}
	}
	for c, w := range want {
		if _, ok := st.totals[c]; !ok {
			t.Fatalf("no totals for %s, donations sum to %d in %d", c, w.RaisedMinor, w.Donations)
		}
	}
}

// Command builders for the tables. Times are fixed so the tables are exact.

func cCreate(id, key, hash string, minor int64, cur Currency) Command {
	return Command{V: EnvelopeVersion, Kind: KindCreate, Create: &Create{
		ID: id, IdempotencyKey: key, RequestHash: hash, Amount: Money{minor, cur},
		Provider: "dev", Name: "Donor " + id, Email: id + "@example.org", At: 100,
	}}
}

func cPay(provider, evt, id string, o Outcome, amount *Money) Command {
	return Command{V: EnvelopeVersion, Kind: KindPayment, Payment: &Payment{
		Provider: provider, EventID: evt, DonationID: id, Outcome: o, Amount: amount, At: 200,
	}}
}

func cPayDev(evt, id string, o Outcome) Command { return cPay("dev", evt, id, o, nil) }

func cRefund(rid, id string, minor int64, cur Currency) Command {
	return Command{V: EnvelopeVersion, Kind: KindRefund, Refund: &Refund{
		RefundID: rid, DonationID: id, Amount: Money{minor, cur}, At: 300,
	}}
}

type ledgerStep struct {
	cmd  Command
	want Code
}

// total is the expected public total of one currency: raised, donations.
type total struct{ raised, donations int64 }

func TestDecideTable(t *testing.T) {
	const eur, usd, jpy, bhd Currency = "EUR", "USD", "JPY", "BHD"
	create := cCreate("d1", "k1", "h1", 2500, eur)
	paid := cPayDev("e1", "d1", OutcomeSucceeded)

	tests := []struct {
		name       string
		steps      []ledgerStep
		wantTotals map[Currency]total
		wantStatus map[string]Status
		wantAbsent []string // donation ids that must not exist
	}{
		{
			name:       "create",
			steps:      []ledgerStep{{create, CodeOK}},
			wantStatus: map[string]Status{"d1": StatusPending},
		},
		{
			name:       "create twice same key same hash",
			steps:      []ledgerStep{{create, CodeOK}, {create, CodeDuplicate}},
			wantStatus: map[string]Status{"d1": StatusPending},
		},
		{
			name: "create twice same key, the second with another id",
			steps: []ledgerStep{
				{create, CodeOK},
				{cCreate("d2", "k1", "h1", 2500, eur), CodeDuplicate},
			},
			wantStatus: map[string]Status{"d1": StatusPending},
			wantAbsent: []string{"d2"},
		},
		{
			name: "same key other hash",
			steps: []ledgerStep{
				{create, CodeOK},
				{cCreate("d2", "k1", "h2", 9900, eur), CodeIdempotencyConflict},
				{cCreate("d2", "k1", "h2", 9900, eur), CodeIdempotencyConflict},
			},
			wantStatus: map[string]Status{"d1": StatusPending},
			wantAbsent: []string{"d2"},
		},
		{
			name: "same id under another key",
			steps: []ledgerStep{
				{create, CodeOK},
				{cCreate("d1", "k2", "h2", 100, usd), CodeDuplicate},
			},
			wantStatus: map[string]Status{"d1": StatusPending},
		},
		{
			name:       "payment succeeded counts once",
			steps:      []ledgerStep{{create, CodeOK}, {paid, CodeOK}},
			wantTotals: map[Currency]total{eur: {2500, 1}},
			wantStatus: map[string]Status{"d1": StatusSucceeded},
		},
		{
			name:       "same event twice",
			steps:      []ledgerStep{{create, CodeOK}, {paid, CodeOK}, {paid, CodeDuplicate}},
			wantTotals: map[Currency]total{eur: {2500, 1}},
			wantStatus: map[string]Status{"d1": StatusSucceeded},
		},
		{
			name: "same event redelivered with other details",
			steps: []ledgerStep{
				{create, CodeOK}, {paid, CodeOK},
				{cPay("dev", "e1", "d1", OutcomeFailed, &Money{1, usd}), CodeDuplicate},
			},
			wantTotals: map[Currency]total{eur: {2500, 1}},
			wantStatus: map[string]Status{"d1": StatusSucceeded},
		},
		{
			name: "different event ids both succeeded",
			steps: []ledgerStep{
				{create, CodeOK},
				{paid, CodeOK},
				{cPayDev("e2", "d1", OutcomeSucceeded), CodeIgnored},
				{cPayDev("e2", "d1", OutcomeSucceeded), CodeDuplicate},
			},
			wantTotals: map[Currency]total{eur: {2500, 1}},
			wantStatus: map[string]Status{"d1": StatusSucceeded},
		},
		{
			name: "same event id from two providers",
			steps: []ledgerStep{
				{create, CodeOK},
				{cPayDev("e1", "d1", OutcomeSucceeded), CodeOK},
				{cPay("stripe", "e1", "d1", OutcomeSucceeded, nil), CodeIgnored},
			},
			wantTotals: map[Currency]total{eur: {2500, 1}},
			wantStatus: map[string]Status{"d1": StatusSucceeded},
		},
		{
			name: "failed then succeeded",
			steps: []ledgerStep{
				{create, CodeOK},
				{cPayDev("e1", "d1", OutcomeFailed), CodeOK},
				{cPayDev("e2", "d1", OutcomeSucceeded), CodeIgnored},
			},
			wantStatus: map[string]Status{"d1": StatusFailed},
		},
		{
			name: "succeeded then failed",
			steps: []ledgerStep{
				{create, CodeOK},
				{paid, CodeOK},
				{cPayDev("e2", "d1", OutcomeFailed), CodeIgnored},
			},
			wantTotals: map[Currency]total{eur: {2500, 1}},
			wantStatus: map[string]Status{"d1": StatusSucceeded},
		},
		{
			name: "processing before and after final",
			steps: []ledgerStep{
				{create, CodeOK},
				{cPayDev("e0", "d1", OutcomeProcessing), CodeIgnored},
				{cPayDev("e0", "d1", OutcomeProcessing), CodeDuplicate},
				{paid, CodeOK},
				{cPayDev("e2", "d1", OutcomeProcessing), CodeIgnored},
			},
			wantTotals: map[Currency]total{eur: {2500, 1}},
			wantStatus: map[string]Status{"d1": StatusSucceeded},
		},
		{
			name: "processing after failed",
			steps: []ledgerStep{
				{create, CodeOK},
				{cPayDev("e1", "d1", OutcomeFailed), CodeOK},
				{cPayDev("e2", "d1", OutcomeProcessing), CodeIgnored},
			},
			wantStatus: map[string]Status{"d1": StatusFailed},
		},
		{
			name: "payment for unknown donation",
			steps: []ledgerStep{
				{cPayDev("e1", "d404", OutcomeSucceeded), CodeNotFound},
				{cPayDev("e1", "d404", OutcomeSucceeded), CodeNotFound}, // the key was not recorded
			},
			wantAbsent: []string{"d404"},
		},
		{
			name: "payment that arrives before its create is retried",
			steps: []ledgerStep{
				{paid, CodeNotFound},
				{create, CodeOK},
				{paid, CodeOK},
			},
			wantTotals: map[Currency]total{eur: {2500, 1}},
			wantStatus: map[string]Status{"d1": StatusSucceeded},
		},
		{
			name: "amount mismatch",
			steps: []ledgerStep{
				{create, CodeOK},
				{cPay("dev", "e1", "d1", OutcomeSucceeded, &Money{2400, eur}), CodeAmountMismatch},
				{cPay("dev", "e2", "d1", OutcomeSucceeded, &Money{2500, usd}), CodeAmountMismatch},
				{cPay("dev", "e3", "d1", OutcomeFailed, &Money{2501, eur}), CodeAmountMismatch},
				{cPay("dev", "e1", "d1", OutcomeSucceeded, &Money{2500, eur}), CodeOK},
			},
			wantTotals: map[Currency]total{eur: {2500, 1}},
			wantStatus: map[string]Status{"d1": StatusSucceeded},
		},
		{
			name: "refund partial keeps succeeded and count",
			steps: []ledgerStep{
				{create, CodeOK}, {paid, CodeOK},
				{cRefund("r1", "d1", 1000, eur), CodeOK},
			},
			wantTotals: map[Currency]total{eur: {1500, 1}},
			wantStatus: map[string]Status{"d1": StatusSucceeded},
		},
		{
			name: "full refund",
			steps: []ledgerStep{
				{create, CodeOK}, {paid, CodeOK},
				{cRefund("r1", "d1", 2500, eur), CodeOK},
			},
			wantTotals: map[Currency]total{eur: {0, 0}},
			wantStatus: map[string]Status{"d1": StatusRefunded},
		},
		{
			name: "partial refunds adding up to full",
			steps: []ledgerStep{
				{create, CodeOK}, {paid, CodeOK},
				{cRefund("r1", "d1", 1000, eur), CodeOK},
				{cRefund("r2", "d1", 1499, eur), CodeOK},
				{cRefund("r3", "d1", 1, eur), CodeOK},
			},
			wantTotals: map[Currency]total{eur: {0, 0}},
			wantStatus: map[string]Status{"d1": StatusRefunded},
		},
		{
			name: "refund exceeding",
			steps: []ledgerStep{
				{create, CodeOK}, {paid, CodeOK},
				{cRefund("r1", "d1", 2501, eur), CodeRefundExceeds},
				{cRefund("r2", "d1", 1000, eur), CodeOK},
				{cRefund("r3", "d1", 1501, eur), CodeRefundExceeds},
				{cRefund("r3", "d1", 1500, eur), CodeOK}, // the refused key was not recorded
			},
			wantTotals: map[Currency]total{eur: {0, 0}},
			wantStatus: map[string]Status{"d1": StatusRefunded},
		},
		{
			name: "refund of pending",
			steps: []ledgerStep{
				{create, CodeOK},
				{cRefund("r1", "d1", 100, eur), CodeInvalidTransition},
			},
			wantStatus: map[string]Status{"d1": StatusPending},
		},
		{
			name: "refund of failed",
			steps: []ledgerStep{
				{create, CodeOK},
				{cPayDev("e1", "d1", OutcomeFailed), CodeOK},
				{cRefund("r1", "d1", 100, eur), CodeInvalidTransition},
			},
			wantStatus: map[string]Status{"d1": StatusFailed},
		},
		{
			name: "refund of refunded",
			steps: []ledgerStep{
				{create, CodeOK}, {paid, CodeOK},
				{cRefund("r1", "d1", 2500, eur), CodeOK},
				{cRefund("r2", "d1", 1, eur), CodeInvalidTransition},
			},
			wantTotals: map[Currency]total{eur: {0, 0}},
			wantStatus: map[string]Status{"d1": StatusRefunded},
		},
		{
			name: "refund before payment is retried",
			steps: []ledgerStep{
				{create, CodeOK},
				{cRefund("r1", "d1", 500, eur), CodeInvalidTransition},
				{paid, CodeOK},
				{cRefund("r1", "d1", 500, eur), CodeOK},
			},
			wantTotals: map[Currency]total{eur: {2000, 1}},
			wantStatus: map[string]Status{"d1": StatusSucceeded},
		},
		{
			name: "refund currency mismatch",
			steps: []ledgerStep{
				{create, CodeOK}, {paid, CodeOK},
				{cRefund("r1", "d1", 1000, usd), CodeAmountMismatch},
			},
			wantTotals: map[Currency]total{eur: {2500, 1}},
			wantStatus: map[string]Status{"d1": StatusSucceeded},
		},
		{
			name: "duplicate refund id",
			steps: []ledgerStep{
				{create, CodeOK}, {paid, CodeOK},
				{cCreate("d2", "k2", "h2", 700, eur), CodeOK},
				{cPayDev("e2", "d2", OutcomeSucceeded), CodeOK},
				{cRefund("r1", "d1", 1000, eur), CodeOK},
				{cRefund("r1", "d1", 1000, eur), CodeDuplicate},
				{cRefund("r1", "d2", 700, eur), CodeDuplicate}, // same refund id, other donation
			},
			wantTotals: map[Currency]total{eur: {1500 + 700, 2}},
			wantStatus: map[string]Status{"d1": StatusSucceeded, "d2": StatusSucceeded},
		},
		{
			name:       "refund of unknown donation",
			steps:      []ledgerStep{{cRefund("r1", "d404", 1, eur), CodeNotFound}},
			wantAbsent: []string{"d404"},
		},
		{
			name: "payment after full refund",
			steps: []ledgerStep{
				{create, CodeOK}, {paid, CodeOK},
				{cRefund("r1", "d1", 2500, eur), CodeOK},
				{cPayDev("e2", "d1", OutcomeSucceeded), CodeIgnored},
				{cPayDev("e3", "d1", OutcomeFailed), CodeIgnored},
			},
			wantTotals: map[Currency]total{eur: {0, 0}},
			wantStatus: map[string]Status{"d1": StatusRefunded},
		},
		{
			name: "currencies are totalled apart",
			steps: []ledgerStep{
				{create, CodeOK}, {paid, CodeOK},
				{cCreate("d2", "k2", "h", 1000, jpy), CodeOK},
				{cPayDev("e2", "d2", OutcomeSucceeded), CodeOK},
				{cCreate("d3", "k3", "h", 1500, bhd), CodeOK},
				{cPayDev("e3", "d3", OutcomeSucceeded), CodeOK},
				{cRefund("r3", "d3", 500, bhd), CodeOK},
				{cCreate("d4", "k4", "h", 300, eur), CodeOK},
				{cPayDev("e4", "d4", OutcomeSucceeded), CodeOK},
				{cRefund("r4", "d4", 300, eur), CodeOK},
				{cCreate("d5", "k5", "h", 9, eur), CodeOK}, // pending: not counted
				{cCreate("d6", "k6", "h", 8, jpy), CodeOK},
				{cPayDev("e6", "d6", OutcomeFailed), CodeOK}, // failed: not counted
			},
			wantTotals: map[Currency]total{eur: {2500, 1}, jpy: {1000, 1}, bhd: {1000, 1}},
			wantStatus: map[string]Status{
				"d1": StatusSucceeded, "d2": StatusSucceeded, "d3": StatusSucceeded,
				"d4": StatusRefunded, "d5": StatusPending, "d6": StatusFailed,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemState()
			for i, s := range tt.steps {
				before := st.clone()
				got := step(t, st, s.cmd)
				if got.res.Code != s.want {
					t.Fatalf("step %d (%s %s): code %s, want %s", i, s.cmd.Kind, s.cmd.UniqueKey(), got.res.Code, s.want)
				}
				if s.want != CodeOK && s.want != CodeIgnored && !reflect.DeepEqual(st, before) {
					t.Fatalf("step %d (%s %s): %s changed the state", i, s.cmd.Kind, s.cmd.UniqueKey(), s.want)
				}
			}
			for c, tot := range st.totals {
				if w := tt.wantTotals[c]; tot.RaisedMinor != w.raised || tot.Donations != w.donations {
					t.Errorf("totals %s = %d in %d, want %d in %d", c, tot.RaisedMinor, tot.Donations, w.raised, w.donations)
				}
			}
			for c, w := range tt.wantTotals {
				if _, ok := st.totals[c]; !ok && w != (total{}) {
					t.Errorf("no totals for %s, want %d in %d", c, w.raised, w.donations)
				}
			}
			for id, want := range tt.wantStatus {
				if d, ok := st.donations[id]; !ok || d.Status != want {
					t.Errorf("donation %s: status %q (exists %v), want %s", id, d.Status, ok, want)
				}
			}
			if len(st.donations) != len(tt.wantStatus) {
				t.Errorf("%d donations stored, want %d", len(st.donations), len(tt.wantStatus))
			}
			for _, id := range tt.wantAbsent {
				if _, ok := st.donations[id]; ok {
					t.Errorf("donation %s exists", id)
				}
			}
		})
	}
}

func TestDecideCreateRecord(t *testing.T) {
	cmd := validCreate()
	st := newMemState()
	got := step(t, st, cmd)
	c := cmd.Create
	want := Donation{
		ID: c.ID, IdempotencyKey: c.IdempotencyKey, RequestHash: c.RequestHash, Amount: c.Amount,
		Status: StatusPending, Provider: c.Provider, Name: c.Name, Email: c.Email, Message: c.Message,
		Anonymous: c.Anonymous, CreatedAt: c.At, UpdatedAt: c.At,
	}
	if got.res.Code != CodeOK || !reflect.DeepEqual(got.res.Donation, want) {
		t.Fatalf("create = %s %+v\nwant ok %+v", got.res.Code, got.res.Donation, want)
	}
	if id := st.keys[cmd.UniqueKey()]; id != c.ID {
		t.Fatalf("key %q points at %q, want %q", cmd.UniqueKey(), id, c.ID)
	}
	if got.eff.Delta != (Delta{}) {
		t.Fatalf("create moves the total: %+v", got.eff.Delta)
	}
}

// TestDecideHistory follows one donation through its life and checks the
// fields the ledger keeps besides the status: events in log order, the
// first provider reference, the time of the last change.
func TestDecideHistory(t *testing.T) {
	st := newMemState()
	steps := []Command{
		cCreate("d1", "k1", "h1", 2500, "EUR"),
		cPayDev("e0", "d1", OutcomeProcessing),
		cPay("dev", "e1", "d1", OutcomeSucceeded, &Money{2500, "EUR"}),
		cPayDev("e1", "d1", OutcomeSucceeded), // duplicate: no trace
		cRefund("r1", "d1", 100, "EUR"),
		cRefund("r2", "d1", 5000, "EUR"), // exceeds: no trace
	}
	steps[1].Payment.ProviderRef = "pi_first"
	steps[1].Payment.At = 150
	steps[2].Payment.ProviderRef = "pi_second"
	steps[2].Payment.At = 250
	steps[4].Refund.At = 350
	for _, c := range steps {
		step(t, st, c)
	}
	d := st.donations["d1"]
	wantEvents := []string{"evt/dev/e0", "evt/dev/e1", "refund/r1"}
	if !slices.Equal(d.Events, wantEvents) {
		t.Errorf("events %q, want %q", d.Events, wantEvents)
	}
	if d.ProviderRef != "pi_first" {
		t.Errorf("provider ref %q, want the first one reported", d.ProviderRef)
	}
	if d.CreatedAt != 100 || d.UpdatedAt != 350 {
		t.Errorf("created %d updated %d, want 100 and 350", d.CreatedAt, d.UpdatedAt)
	}
	if d.Status != StatusSucceeded || d.RefundedMinor != 100 {
		t.Errorf("status %s refunded %d, want succeeded with 100", d.Status, d.RefundedMinor)
	}
}

// TestDecideEventsAreBounded: a donation sent more distinct notices than
// MaxRecordedEvents lists only the first ones, still answers each
// redelivery as a duplicate, and still moves to its final state once.
func TestDecideEventsAreBounded(t *testing.T) {
	st := newMemState()
	step(t, st, cCreate("d1", "k1", "h1", 2500, "EUR"))
	const notices = MaxRecordedEvents + 36
	for i := range notices {
		if got := step(t, st, cPayDev(fmt.Sprintf("e%d", i), "d1", OutcomeProcessing)).res.Code; got != CodeIgnored {
			t.Fatalf("notice %d answered %s", i, got)
		}
	}
	for _, i := range []int{0, MaxRecordedEvents - 1, notices - 1} {
		if got := step(t, st, cPayDev(fmt.Sprintf("e%d", i), "d1", OutcomeProcessing)).res.Code; got != CodeDuplicate {
			t.Fatalf("redelivered notice %d answered %s, want a duplicate", i, got)
		}
	}
	if got := step(t, st, cPayDev("final", "d1", OutcomeSucceeded)).res.Code; got != CodeOK {
		t.Fatalf("the success after the bound answered %s", got)
	}
	if got := step(t, st, cPayDev("final", "d1", OutcomeSucceeded)).res.Code; got != CodeDuplicate {
		t.Fatalf("the success again answered %s", got)
	}
	d := st.donations["d1"]
	if len(d.Events) != MaxRecordedEvents || d.Events[0] != "evt/dev/e0" || d.Status != StatusSucceeded {
		t.Fatalf("%d events (first %q), status %s; want %d events from evt/dev/e0 and succeeded", len(d.Events), d.Events[0], d.Status, MaxRecordedEvents)
	}
	if tot := st.totals["EUR"]; tot.RaisedMinor != 2500 || tot.Donations != 1 {
		t.Fatalf("totals %+v", tot)
	}
}

// failState fails the read named by failOn, after the embedded state.
type failState struct {
	*memState
	failOn string // "donation" or "key"
}

var errRead = errors.New("disk on fire")

func (s failState) Donation(id string) (Donation, bool, error) {
	if s.failOn == "donation" {
		return Donation{}, false, errRead
	}
	return s.memState.Donation(id)
}

func (s failState) Key(key string) (string, bool, error) {
	if s.failOn == "key" {
		return "", false, errRead
	}
	return s.memState.Key(key)
}

func TestDecideStateErrors(t *testing.T) {
	cmds := []Command{
		cCreate("d2", "k2", "h", 100, "EUR"),
		cCreate("d1", "k1", "h1", 2500, "EUR"), // key known: reads the donation
		cPayDev("e1", "d1", OutcomeSucceeded),
		cRefund("r1", "d1", 100, "EUR"),
	}
	for _, failOn := range []string{"donation", "key"} {
		for _, cmd := range cmds {
			t.Run(failOn+"/"+cmd.UniqueKey(), func(t *testing.T) {
				st := newMemState()
				step(t, st, cCreate("d1", "k1", "h1", 2500, "EUR"))
				step(t, st, cPayDev("e0", "d1", OutcomeSucceeded))
				res, eff, err := Decide(failState{st, failOn}, cmd)
				if !errors.Is(err, errRead) {
					t.Fatalf("Decide = %+v, %v; want %v", res, err, errRead)
				}
				if !eff.Empty() || eff.Delta != (Delta{}) {
					t.Fatalf("Decide returned effects %+v with an error", eff)
				}
			})
		}
	}

	// A key that points at a donation that is not there is corruption, not a rule outcome.
	st := newMemState()
	st.keys["refund/r1"] = "ghost"
	if _, _, err := Decide(st, cRefund("r1", "d1", 100, "EUR")); err == nil {
		t.Fatal("Decide accepted a key pointing at a missing donation")
	}
}

func TestDecideRejectsMalformed(t *testing.T) {
	tests := []struct {
		name    string
		cmd     Command
		wantErr error
	}{
		{"zero command", Command{}, ErrInvalidCommand},
		{"create without body", Command{V: 1, Kind: KindCreate}, ErrInvalidCommand},
		{"payment without body", Command{V: 1, Kind: KindPayment}, ErrInvalidCommand},
		{"refund without body", Command{V: 1, Kind: KindRefund}, ErrInvalidCommand},
		{"kind and body disagree", Command{V: 1, Kind: KindRefund, Payment: validPayment().Payment}, ErrInvalidCommand},
		{"unknown kind", Command{V: 1, Kind: "gift", Create: validCreate().Create}, ErrInvalidCommand},
		{"zero refund", cRefund("r1", "d1", 0, "EUR"), ErrInvalidAmount},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemState()
			step(t, st, cCreate("d1", "k1", "h1", 2500, "EUR"))
			before := st.clone()
			_, eff, err := Decide(st, tt.cmd)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decide = %v, want %v", err, tt.wantErr)
			}
			if !eff.Empty() || !reflect.DeepEqual(st, before) {
				t.Fatalf("malformed command changed something: %+v", eff)
			}
		})
	}
}

// gen makes random command sequences over a world that grows as it goes:
// new donations keep arriving, events and refunds aim mostly at recent
// ones, and ids, keys, event ids and refund ids are drawn from pools small
// enough to collide often.
type gen struct {
	r      *rand.Rand
	nextID int // donations d0..d(nextID-1) have been proposed
	issued []Command
}

var genCurrencies = []Currency{"EUR", "JPY", "BHD"}

// target picks the donation an event or refund is about.
func (g *gen) target() string {
	if g.nextID == 0 || g.r.IntN(20) == 0 {
		return fmt.Sprintf("x%d", g.r.IntN(5)) // never created
	}
	return fmt.Sprintf("d%d", g.nextID-1-g.r.IntN(min(g.nextID, 12)))
}

func (g *gen) next(st *memState) Command {
	if len(g.issued) > 0 && g.r.IntN(8) == 0 {
		return g.issued[len(g.issued)-1-g.r.IntN(min(len(g.issued), 50))] // a redelivery
	}
	switch n := g.r.IntN(100); {
	case n < 25:
		var id string
		if g.nextID > 0 && g.r.IntN(8) == 0 {
			id = fmt.Sprintf("d%d", g.r.IntN(g.nextID)) // the proposer reuses an id
		} else {
			id = fmt.Sprintf("d%d", g.nextID)
			g.nextID++
		}
		key := "k" + id
		if g.r.IntN(8) == 0 {
			key = fmt.Sprintf("kd%d", g.r.IntN(g.nextID+3)) // another donation's key, or a fresh one
		}
		hash := "h1"
		if g.r.IntN(4) == 0 {
			hash = "h2"
		}
		return cCreate(id, key, hash, 1+g.r.Int64N(10_000), genCurrencies[g.r.IntN(len(genCurrencies))])
	case n < 70:
		id := g.target()
		outcomes := []Outcome{OutcomeSucceeded, OutcomeSucceeded, OutcomeFailed, OutcomeProcessing}
		provider := "dev"
		if g.r.IntN(10) == 0 {
			provider = "stripe"
		}
		var amount *Money
		if d, ok := st.donations[id]; ok && g.r.IntN(3) == 0 {
			m := d.Amount
			if g.r.IntN(4) == 0 {
				m.Minor++ // the provider disagrees
			}
			amount = &m
		}
		evt := fmt.Sprintf("e%d", g.r.IntN(3*g.nextID+10))
		return cPay(provider, evt, id, outcomes[g.r.IntN(len(outcomes))], amount)
	default:
		id := g.target()
		m := Money{1 + g.r.Int64N(10_000), genCurrencies[g.r.IntN(len(genCurrencies))]}
		if d, ok := st.donations[id]; ok && g.r.IntN(5) != 0 {
			m.Currency = d.Amount.Currency
			left := d.Amount.Minor - d.RefundedMinor
			if left > 0 {
				m.Minor = 1 + g.r.Int64N(left+left/4) // sometimes more than is left
			}
			if g.r.IntN(3) == 0 {
				m.Minor = max(left, 1) // all that is left
			}
		}
		return cRefund(fmt.Sprintf("r%d", g.r.IntN(2*g.nextID+10)), id, m.Minor, m.Currency)
	}
}

// runRandom applies n random commands in shuffled batches (reorders) to a
// fresh state, checking every invariant after every step through step. It
// returns what was applied, in order.
func runRandom(t *testing.T, seed uint64, n int) ([]applied, *memState) {
	t.Helper()
	g := &gen{r: rand.New(rand.NewPCG(seed, seed^0x5eed))}
	st := newMemState()
	var out []applied
	for len(out) < n {
		batch := make([]Command, 1+g.r.IntN(8))
		for i := range batch {
			batch[i] = g.next(st)
		}
		g.r.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		for _, cmd := range batch {
			a := step(t, st, cmd)
			g.issued = append(g.issued, cmd)
			out = append(out, a)
		}
	}
	return out, st
}

// TestLedgerRandomSequences is a property test: thousands of random
// commands with redeliveries and reorders never break the totals invariant
// and never move a status backward (both checked after every step).
func TestLedgerRandomSequences(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 500
	}
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			steps, st := runRandom(t, seed, n)
			codes := map[Code]int{}
			for _, a := range steps {
				codes[a.res.Code]++
			}
			t.Logf("seed %d: %d commands, %d donations, %d keys, codes %v", seed, len(steps), len(st.donations), len(st.keys), codes)
			// The generator must reach every rule, or the property says little.
			for _, c := range []Code{CodeOK, CodeDuplicate, CodeIgnored, CodeIdempotencyConflict, CodeNotFound,
				CodeAmountMismatch, CodeInvalidTransition, CodeRefundExceeds} {
				if codes[c] == 0 {
					t.Errorf("seed %d never produced %s", seed, c)
				}
			}
			statuses := map[Status]int{}
			for _, d := range st.donations {
				statuses[d.Status]++
			}
			for _, s := range allStatuses {
				if statuses[s] == 0 {
					t.Errorf("seed %d ended with no %s donation: %v", seed, s, statuses)
				}
			}
		})
	}
}

// TestDecideDeterministic replays one random sequence on two independent
// states: every Result and Effects must be identical, and so must the end states.
func TestDecideDeterministic(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 300
	}
	ref, refState := runRandom(t, 42, n)
	a, b := newMemState(), newMemState()
	for i, want := range ref {
		ra, ea, errA := Decide(a, want.cmd)
		rb, eb, errB := Decide(b, want.cmd)
		if errA != nil || errB != nil {
			t.Fatalf("step %d: %v / %v", i, errA, errB)
		}
		if !reflect.DeepEqual(ra, rb) || !reflect.DeepEqual(ea, eb) {
			t.Fatalf("step %d: two runs disagree:\n%+v %+v\n%+v %+v", i, ra, ea, rb, eb)
		}
		if !reflect.DeepEqual(ra, want.res) || !reflect.DeepEqual(ea, want.eff) {
			t.Fatalf("step %d: replay disagrees with the first run:\n%+v %+v\n%+v %+v", i, ra, ea, want.res, want.eff)
		}
		a.apply(t, ea)
		b.apply(t, eb)
	}
	if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(a, refState) {
		t.Fatal("end states differ")
	}
}
