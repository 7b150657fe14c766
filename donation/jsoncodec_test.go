package donation

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"testing"
)

// trickyStrings exercise every branch of encoding/json's string escaping.
var trickyStrings = []string{
	"", "plain", `q"uote`, `back\slash`, "<b>&amp;</b>", "\x00\x01\x1f\x7f", "\b\f\n\r\t",
	"Zoë 日本 😀", "\u2028\u2029", "bad \xff utf8 \xc3", "\xed\xa0\x80", "a/b", "é\u0000",
}

func sampleDonations() []Donation {
	base := Donation{
		ID: "d-1", IdempotencyKey: "idem", RequestHash: "h", Amount: Money{2500, "EUR"},
		Status: StatusPending, Provider: "dev", CreatedAt: 1_700_000_000_000_000_000, UpdatedAt: 1,
	}
	full := base
	full.RefundedMinor = 100
	full.Status = StatusSucceeded
	full.ProviderRef, full.Name, full.Email, full.Message = "pi_1", "Ada", "ada@example.org", "hi\nthere"
	full.Anonymous = true
	full.Events = []string{"evt/dev/1", "refund/r1"}
	neg := base
	neg.Amount.Minor, neg.RefundedMinor, neg.CreatedAt, neg.UpdatedAt = math.MinInt64, math.MaxInt64, -1, 0
	empty := base
	empty.Events = []string{}
	out := []Donation{{}, base, full, neg, empty}
	for _, s := range trickyStrings {
		d := full
		d.ID, d.Name, d.Message, d.Events = s, s, s+s, []string{s, ""}
		out = append(out, d)
	}
	return out
}

func sampleCommands() []Command {
	noAmount := validPayment()
	noAmount.Payment.Amount = nil
	out := []Command{{}, validCreate(), validPayment(), noAmount, validRefund(),
		{V: 7, Kind: "x", Create: &Create{}, Payment: &Payment{Amount: &Money{}}, Refund: &Refund{}}}
	for _, s := range trickyStrings {
		c := validCreate()
		c.Create.Name, c.Create.Message, c.Create.Anonymous = s, s, false
		out = append(out, c)
	}
	return out
}

func TestEncodersMatchEncodingJSON(t *testing.T) {
	for _, d := range sampleDonations() {
		want, _ := json.Marshal(d)
		if got := AppendDonationJSON(nil, &d); !bytes.Equal(got, want) {
			t.Errorf("donation:\n got %s\nwant %s", got, want)
		}
		r := Result{Code: CodeIgnored, Donation: d}
		want, _ = json.Marshal(r)
		if got, _ := r.Encode(); !bytes.Equal(got, want) {
			t.Errorf("result:\n got %s\nwant %s", got, want)
		}
	}
	for _, c := range sampleCommands() {
		want, _ := json.Marshal(c)
		if got := appendCommandJSON(nil, &c); !bytes.Equal(got, want) {
			t.Errorf("command:\n got %s\nwant %s", got, want)
		}
	}
}

// TestFastDecodersAgree: every sample decodes to what encoding/json makes
// of it, and the canonical ones take the fast path.
func TestFastDecodersAgree(t *testing.T) {
	for _, d := range sampleDonations() {
		// Every encoded donation and result is canonical: exactly one fast
		// decoder takes it.
		b := AppendDonationJSON(nil, &d)
		if n := checkDifferential(t, b); n != 1 {
			t.Errorf("donation %s: %d fast decoders took it, want 1", b, n)
		}
		r := Result{Code: CodeOK, Donation: d}
		rb, _ := r.Encode()
		if n := checkDifferential(t, rb); n != 1 {
			t.Errorf("result %s: %d fast decoders took it, want 1", rb, n)
		}
	}
	fast := 0
	for _, c := range sampleCommands() {
		fast += checkDifferential(t, appendCommandJSON(nil, &c))
	}
	for _, c := range []Command{validCreate(), validPayment(), validRefund()} {
		b, _ := Encode(c)
		if _, ok := fastCommand(b); !ok {
			t.Errorf("canonical command %s missed the fast path", b)
		}
	}
	if fast == 0 {
		t.Fatal("nothing took the fast path")
	}
}

// checkDifferential compares the fast decoders with encoding/json on b and
// returns how many of them accepted it.
func checkDifferential(t *testing.T, b []byte) int {
	t.Helper()
	n := 0
	if d, ok := fastDonation(b); ok {
		n++
		var want Donation
		if err := json.Unmarshal(b, &want); err != nil || !reflect.DeepEqual(d, want) {
			t.Fatalf("donation %q: fast %+v, encoding/json %+v (%v)", b, d, want, err)
		}
	}
	if r, ok := fastResult(b); ok {
		n++
		var want Result
		if err := json.Unmarshal(b, &want); err != nil || !reflect.DeepEqual(r, want) {
			t.Fatalf("result %q: fast %+v, encoding/json %+v (%v)", b, r, want, err)
		}
	}
	if c, ok := fastCommand(b); ok {
		n++
		want, err := decodeStrict(b)
		if err != nil || !reflect.DeepEqual(c, want) {
			t.Fatalf("command %q: fast %+v, encoding/json %+v (%v)", b, c, want, err)
		}
	}
	return n
}

func TestDecodeDonationJSONFallsBack(t *testing.T) {
	for _, s := range []string{
		`{"ID":"x","status":"pending"}`,             // case-insensitive field
		`{"id":"x","extra":1,"amount":{"minor":5}}`, // unknown field, any order
		` {"id":"x"} `,                                     // white space
		`{"id":"\ud83d\ude00","events":[]}`,                // surrogate pair, empty list
		`{"id":"x","anonymous":false,"refunded_minor":-0}`, // non-canonical values
	} {
		var want Donation
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatal(err)
		}
		got, err := DecodeDonationJSON([]byte(s))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, %v; want %+v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "{", `{"id":1}`, `{"id":"x"}x`, "null x"} {
		if _, err := DecodeDonationJSON([]byte(s)); err == nil {
			t.Errorf("%q: no error", s)
		}
	}
}

// FuzzFastJSON: on any input the fast decoders either decline or agree
// exactly with encoding/json, and never panic.
func FuzzFastJSON(f *testing.F) {
	for _, d := range sampleDonations() {
		b := AppendDonationJSON(nil, &d)
		f.Add(b)
		f.Add(b[:len(b)-3])
		r, _ := Result{Code: CodeOK, Donation: d}.Encode()
		f.Add(r)
	}
	for _, c := range sampleCommands() {
		f.Add(appendCommandJSON(nil, &c))
	}
	for _, s := range []string{
		`{"v":1,"kind":"create","create":{"id":"a\u00e9\/\"","idempotency_key":"\uD800","request_hash":"","amount":{"minor":-0,"currency":"EUR"},"provider":"p","at":01}}`,
		`{"id":"x","idempotency_key":"","request_hash":"","amount":{"minor":123456789012345678,"currency":""},"status":"","provider":"","created_at":1234567890123456789,"updated_at":0}`,
		`{"code":"ok","donation":{"id":"\u12","idempotency_key":""}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDifferential(t, b)
	})
}

// FuzzAppendJSON: the encoders write json.Marshal's bytes for any strings
// and numbers, and the fast decoders read them back.
func FuzzAppendJSON(f *testing.F) {
	for i, s := range trickyStrings {
		f.Add(s, trickyStrings[(i+1)%len(trickyStrings)], int64(i)-3, true)
	}
	f.Fuzz(func(t *testing.T, s1, s2 string, n int64, flag bool) {
		d := Donation{ID: s1, IdempotencyKey: s2, RequestHash: s1 + s2, Amount: Money{n, Currency(s2)},
			RefundedMinor: -n, Status: Status(s1), Provider: s2, ProviderRef: s1, Name: s2,
			Email: s1, Message: s2, Anonymous: flag, CreatedAt: n, UpdatedAt: n / 3}
		if flag {
			d.Events = []string{s1, s2}
		}
		want, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		got := AppendDonationJSON(nil, &d)
		if !bytes.Equal(got, want) {
			t.Fatalf("donation:\n got %s\nwant %s", got, want)
		}
		checkDifferential(t, got)
		c := Command{V: int(n), Kind: Kind(s1), Payment: &Payment{Provider: s1, EventID: s2,
			DonationID: s1, Outcome: Outcome(s2), ProviderRef: s2, At: n}}
		if flag {
			c.Payment.Amount = &Money{n, Currency(s1)}
			c.Create = &Create{ID: s1, Name: s2, Anonymous: flag, At: -n}
		}
		want, err = json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		got = appendCommandJSON(nil, &c)
		if !bytes.Equal(got, want) {
			t.Fatalf("command:\n got %s\nwant %s", got, want)
		}
		checkDifferential(t, got)
	})
}

// The hot-path decoders against the encoding/json path they replace.
func BenchmarkDecodeCommand(b *testing.B) {
	enc, err := Encode(validCreate())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := Decode(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := decodeStrict(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkEncodeResult(b *testing.B) {
	r := Result{Code: CodeOK, Donation: sampleDonations()[2]}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			_, _ = r.Encode()
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			_, _ = json.Marshal(r)
		}
	})
}
