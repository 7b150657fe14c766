package storage

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"reflect"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"github.com/surgefund/surge/donation"
)

func sampleRecords() []donation.Donation {
	full := donation.Donation{
		ID: "d-1", IdempotencyKey: "idem", RequestHash: "sha256:ab", Amount: donation.Money{Minor: 2500, Currency: "EUR"},
		RefundedMinor: 100, Status: donation.StatusSucceeded, Provider: "dev", ProviderRef: "pi_1",
		Name: "Zoë 日本 <&>", Email: "a@example.org", Message: "line\none \"q\" \u2028", Anonymous: true,
		CreatedAt: 1_700_000_000_000_000_000, UpdatedAt: 1_700_000_001_000_000_000,
		Events: []string{"evt/dev/1", "refund/r1", ""},
	}
	extreme := full
	extreme.Amount.Minor, extreme.RefundedMinor, extreme.CreatedAt, extreme.UpdatedAt = math.MinInt64, math.MaxInt64, -1, 0
	extreme.Anonymous, extreme.Events = false, nil
	long := full
	long.Message = string(bytes.Repeat([]byte("x"), 1000))
	return []donation.Donation{{}, full, extreme, long}
}

func TestDonationRecordRoundTrip(t *testing.T) {
	for _, d := range sampleRecords() {
		v := encodeDonation(d)
		if v[0] != donationEncodingBinary {
			t.Fatalf("record starts with %#x", v[0])
		}
		got, err := decodeDonation(v)
		if err != nil || !reflect.DeepEqual(got, d) {
			t.Fatalf("round trip of %+v: %+v, %v", d, got, err)
		}
		// Every strict prefix is truncated, and trailing bytes are refused.
		for i := range len(v) {
			if _, err := decodeDonation(v[:i]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("prefix of %d/%d bytes: %v", i, len(v), err)
			}
		}
		if _, err := decodeDonation(append(v, 0)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("trailing byte: %v", err)
		}
	}
}

func TestDonationRecordRefusesBadBytes(t *testing.T) {
	for _, v := range [][]byte{
		nil, {0}, {3}, {'{'}, {donationEncodingJSON}, {donationEncodingJSON, '{'},
		{donationEncodingBinary, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02},    // varint overflow
		{donationEncodingBinary, 0x05, 'a'},                                                     // string longer than the record
		append([]byte{donationEncodingBinary}, append(bytes.Repeat([]byte{0}, 14), 0x02, 0)...), // unknown flag
		append([]byte{donationEncodingBinary}, append(bytes.Repeat([]byte{0}, 14), 0, 0x7f)...), // 127 events, no bytes
	} {
		if d, err := decodeDonation(v); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%x: %+v, %v", v, d, err)
		}
	}
}

// jsonRecord is a d/ record as the previous version wrote it.
func jsonRecord(t testing.TB, d donation.Donation) []byte {
	t.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{donationEncodingJSON}, b...)
}

func TestDonationRecordReadsJSON(t *testing.T) {
	for _, d := range sampleRecords() {
		got, err := decodeDonation(jsonRecord(t, d))
		if err != nil || !reflect.DeepEqual(got, d) {
			t.Fatalf("JSON record of %+v: %+v, %v", d, got, err)
		}
	}
	// A record exactly as version 1 stored it (bytes from a data dir).
	v := []byte("\x01" + `{"id":"d-9","idempotency_key":"k","request_hash":"h","amount":{"minor":2500,"currency":"EUR"},` +
		`"status":"succeeded","provider":"dev","name":"Ada","created_at":1,"updated_at":2,"events":["evt/dev/e1"]}`)
	want := donation.Donation{ID: "d-9", IdempotencyKey: "k", RequestHash: "h", Amount: donation.Money{Minor: 2500, Currency: "EUR"},
		Status: donation.StatusSucceeded, Provider: "dev", Name: "Ada", CreatedAt: 1, UpdatedAt: 2, Events: []string{"evt/dev/e1"}}
	if got, err := decodeDonation(v); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("stored JSON record: %+v, %v", got, err)
	}
}

// TestFSMUpgradesJSONRecords: a data dir written by the previous version
// (JSON d/ records) keeps working: reads, payments and refunds on its
// donations decide as before, rewritten records use the binary encoding,
// and Verify and snapshots accept the mix.
func TestFSMUpgradesJSONRecords(t *testing.T) {
	dir := t.TempDir()
	f := openTestFSM(t, dir)
	var idx uint64
	apply := func(c donation.Command) donation.Result {
		t.Helper()
		idx++
		r := f.Apply(&raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: mustEncode(t, c)})
		b, ok := r.([]byte)
		if !ok {
			t.Fatalf("apply %d: %v", idx, r)
		}
		res, err := donation.DecodeResult(b)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	apply(createCmd("a", 2500, "EUR"))
	apply(createCmd("b", 700, "EUR"))
	// Turn both records into what version 1 wrote.
	err := f.cur.db.Update(func(txn *badger.Txn) error {
		for _, id := range []string{"a", "b"} {
			d, ok, err := txnState{txn: txn}.Donation(id)
			if err != nil || !ok {
				t.Fatalf("read %s: %v %v", id, ok, err)
			}
			if err := txn.Set([]byte(donationPrefix+id), jsonRecord(t, d)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Reopen, as the new version would open the old data dir.
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = openTestFSM(t, dir)
	if d, ok, err := f.Donation("b"); err != nil || !ok || d.Amount.Minor != 700 {
		t.Fatalf("read JSON record: %+v %v %v", d, ok, err)
	}
	if r := apply(createCmd("a", 2500, "EUR")); r.Code != donation.CodeDuplicate {
		t.Fatalf("retried create over a JSON record: %s", r.Code)
	}
	if r := apply(paymentCmd("e1", "a", donation.OutcomeSucceeded)); r.Code != donation.CodeOK || r.Donation.Status != donation.StatusSucceeded {
		t.Fatalf("payment on a JSON record: %+v", r)
	}
	if r := apply(refundCmd("r1", "a", 500, "EUR")); r.Code != donation.CodeOK {
		t.Fatalf("refund: %+v", r)
	}
	err = f.cur.db.View(func(txn *badger.Txn) error {
		for id, enc := range map[string]byte{"a": donationEncodingBinary, "b": donationEncodingJSON} {
			item, err := txn.Get([]byte(donationPrefix + id))
			if err != nil {
				return err
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if v[0] != enc {
				t.Errorf("record %s has encoding %#x, want %#x", id, v[0], enc)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Totals("EUR"); got.RaisedMinor != 2000 || got.Donations != 1 {
		t.Fatalf("totals %+v", got)
	}
	if err := f.Verify(t.Context()); err != nil {
		t.Fatal(err)
	}
	g := openTestFSM(t, t.TempDir())
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, f)))); err != nil {
		t.Fatalf("restore a snapshot with both encodings: %v", err)
	}
	if digest(t, g) != digest(t, f) {
		t.Fatal("restored FSM differs")
	}
}

// FuzzDecodeDonationRecord: decodeDonation never panics, fails only with
// ErrCorrupt, and what it accepts encodes to a record that decodes to the
// same donation.
func FuzzDecodeDonationRecord(f *testing.F) {
	for _, d := range sampleRecords() {
		v := encodeDonation(d)
		f.Add(v)
		f.Add(v[:len(v)/2])
		f.Add(jsonRecord(f, d))
	}
	f.Add([]byte{})
	f.Add([]byte{donationEncodingBinary, 0x80, 0x00})
	f.Fuzz(func(t *testing.T, v []byte) {
		d, err := decodeDonation(v)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		d2, err := decodeDonation(encodeDonation(d))
		if err != nil {
			t.Fatalf("re-encoded record: %v", err)
		}
		if len(d.Events) == 0 {
			d.Events = nil // the binary encoding does not tell nil from empty
		}
		if !reflect.DeepEqual(d, d2) {
			t.Fatalf("round trip changed the donation:\n%+v\n%+v", d, d2)
		}
	})
}

func BenchmarkDonationRecord(b *testing.B) {
	d := sampleRecords()[1]
	bin := encodeDonation(d)
	js := jsonRecord(b, d)
	b.Logf("record bytes: binary %d, JSON %d", len(bin), len(js))
	for _, c := range []struct {
		name string
		v    []byte
	}{{"decode_binary", bin}, {"decode_json", js}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if _, err := decodeDonation(c.v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("encode_binary", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			_ = encodeDonation(d)
		}
	})
}
