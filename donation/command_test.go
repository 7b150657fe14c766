package donation

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// Fixtures: one valid command of each kind with every optional field set.

func validCreate() Command {
	return Command{V: EnvelopeVersion, Kind: KindCreate, Create: &Create{
		ID:             "d-0001",
		IdempotencyKey: "idem-7f3a",
		RequestHash:    "sha256:9b2c",
		Amount:         Money{2500, "EUR"},
		Provider:       "dev",
		Name:           "Ada Lovelace — Zoë 日本",
		Email:          "ada@example.org",
		Message:        "For the \"roof\" fund <3\nline two",
		Anonymous:      true,
		At:             1_700_000_000_000_000_000,
	}}
}

func validPayment() Command {
	return Command{V: EnvelopeVersion, Kind: KindPayment, Payment: &Payment{
		Provider:    "dev",
		EventID:     "evt_1",
		DonationID:  "d-0001",
		Outcome:     OutcomeSucceeded,
		Amount:      &Money{2500, "EUR"},
		ProviderRef: "pi_42",
		At:          1_700_000_001_000_000_000,
	}}
}

func validRefund() Command {
	return Command{V: EnvelopeVersion, Kind: KindRefund, Refund: &Refund{
		RefundID:   "re_1",
		DonationID: "d-0001",
		Amount:     Money{1000, "EUR"},
		At:         1_700_000_002_000_000_000,
	}}
}

// marshalRaw encodes c as JSON without Encode's validation or version stamp.
func marshalRaw(t *testing.T, c Command) []byte {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("marshal %+v: %v", c, err)
	}
	return b
}

// mutateJSON encodes c, lets f edit it as a generic JSON object and
// re-encodes it, to build envelopes the Go types cannot express.
func mutateJSON(t *testing.T, c Command, f func(m map[string]any)) []byte {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(marshalRaw(t, c)))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode fixture: %v", err)
	}
	f(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("marshal mutated fixture: %v", err)
	}
	return b
}

func body(m map[string]any, name string) map[string]any { return m[name].(map[string]any) }

func TestEncodeDecodeRoundTrip(t *testing.T) {
	noAmount := validPayment()
	noAmount.Payment.Amount = nil
	noAmount.Payment.ProviderRef = ""
	minimalCreate := Command{Kind: KindCreate, Create: &Create{
		ID: "d", IdempotencyKey: "k", Amount: Money{1, "JPY"}, Provider: "dev",
	}}
	failed := validPayment()
	failed.Payment.Outcome = OutcomeFailed
	processing := validPayment()
	processing.Payment.Outcome = OutcomeProcessing
	negativeAt := validRefund()
	negativeAt.Refund.At = -1

	tests := []struct {
		name string
		cmd  Command
	}{
		{"create", validCreate()},
		{"create minimal", minimalCreate},
		{"payment succeeded", validPayment()},
		{"payment failed", failed},
		{"payment processing", processing},
		{"payment without amount", noAmount},
		{"refund", validRefund()},
		{"refund with negative time", negativeAt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Encode(tt.cmd)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode(%s): %v", b, err)
			}
			want := tt.cmd
			want.V = EnvelopeVersion
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
			}
			again, err := Encode(got)
			if err != nil {
				t.Fatalf("Encode again: %v", err)
			}
			if !bytes.Equal(again, b) {
				t.Fatalf("encoding is not stable:\n%s\n%s", b, again)
			}
		})
	}
}

func TestEncodeStampsVersion(t *testing.T) {
	for _, v := range []int{0, -3, EnvelopeVersion + 5} {
		c := validRefund()
		c.V = v
		b, err := Encode(c)
		if err != nil {
			t.Fatalf("Encode with V=%d: %v", v, err)
		}
		var env struct {
			V int `json:"v"`
		}
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatal(err)
		}
		if env.V != EnvelopeVersion {
			t.Errorf("Encode with V=%d wrote v=%d, want %d", v, env.V, EnvelopeVersion)
		}
		if c.V != v {
			t.Errorf("Encode changed its argument's V to %d", c.V)
		}
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	badName := validCreate()
	badName.Create.Name = "bad \xff"
	zero := validRefund()
	zero.Refund.Amount.Minor = 0
	tests := []struct {
		name    string
		cmd     Command
		wantErr error
	}{
		{"empty", Command{}, ErrInvalidCommand},
		{"kind without body", Command{Kind: KindCreate}, ErrInvalidCommand},
		{"invalid UTF-8", badName, ErrInvalidCommand},
		{"zero refund", zero, ErrInvalidAmount},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Encode(tt.cmd)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Encode = %s, %v; want %v", b, err, tt.wantErr)
			}
			if b != nil {
				t.Fatalf("Encode returned bytes with an error: %s", b)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	good, err := Encode(validCreate())
	if err != nil {
		t.Fatal(err)
	}
	withCreate := func(f func(c *Create)) []byte {
		c := validCreate()
		f(c.Create)
		return marshalRaw(t, c)
	}
	withPayment := func(f func(p *Payment)) []byte {
		c := validPayment()
		f(c.Payment)
		return marshalRaw(t, c)
	}
	withRefund := func(f func(r *Refund)) []byte {
		c := validRefund()
		f(c.Refund)
		return marshalRaw(t, c)
	}
	// invalidUTF8 places a raw 0xff byte in the named field of the encoding
	// (json.Marshal itself would have replaced it with U+FFFD).
	invalidUTF8 := func(raw []byte, field string) []byte {
		old := []byte(`"` + field + `":"`)
		i := bytes.Index(raw, old)
		if i < 0 {
			t.Fatalf("field %q not in %s", field, raw)
		}
		i += len(old)
		return append(append(append([]byte(nil), raw[:i]...), 0xff), raw[i:]...)
	}
	long := func(n int) string { return strings.Repeat("x", n) }

	tests := []struct {
		name    string
		in      []byte
		wantErr error
	}{
		// Not an envelope at all.
		{"empty", nil, ErrInvalidCommand},
		{"whitespace", []byte(" \n"), ErrInvalidCommand},
		{"not JSON", []byte("create d-0001"), ErrInvalidCommand},
		{"array", []byte(`[1]`), ErrInvalidCommand},
		{"string", []byte(`"create"`), ErrInvalidCommand},
		{"null", []byte(`null`), ErrUnknownVersion},
		{"empty object", []byte(`{}`), ErrUnknownVersion},
		{"truncated", good[:len(good)-1], ErrInvalidCommand},

		// Unknown fields, at every level.
		{"unknown top-level field", mutateJSON(t, validCreate(), func(m map[string]any) { m["extra"] = 1 }), ErrInvalidCommand},
		{"unknown body field", mutateJSON(t, validCreate(), func(m map[string]any) { body(m, "create")["admin"] = true }), ErrInvalidCommand},
		{"unknown amount field", mutateJSON(t, validRefund(), func(m map[string]any) {
			body(body(m, "refund"), "amount")["major"] = 10
		}), ErrInvalidCommand},

		// Trailing data after the envelope.
		{"trailing word", append(bytes.Clone(good), " x"...), ErrInvalidCommand},
		{"trailing object", append(bytes.Clone(good), "{}"...), ErrInvalidCommand},
		{"second envelope", append(append(bytes.Clone(good), '\n'), good...), ErrInvalidCommand},
		{"trailing brace", append(bytes.Clone(good), '}'), ErrInvalidCommand},
		{"trailing bracket", append(bytes.Clone(good), ']'), ErrInvalidCommand},
		{"trailing comma", append(bytes.Clone(good), ',', ' '), ErrInvalidCommand},

		// Versions.
		{"version 0", mutateJSON(t, validCreate(), func(m map[string]any) { m["v"] = 0 }), ErrUnknownVersion},
		{"version missing", mutateJSON(t, validCreate(), func(m map[string]any) { delete(m, "v") }), ErrUnknownVersion},
		{"version negative", mutateJSON(t, validCreate(), func(m map[string]any) { m["v"] = -1 }), ErrUnknownVersion},
		{"version next", mutateJSON(t, validCreate(), func(m map[string]any) { m["v"] = EnvelopeVersion + 1 }), ErrUnknownVersion},
		{"version huge", mutateJSON(t, validCreate(), func(m map[string]any) { m["v"] = json.Number("1e400") }), ErrInvalidCommand},
		{"version fraction", mutateJSON(t, validCreate(), func(m map[string]any) { m["v"] = 1.5 }), ErrInvalidCommand},
		{"version string", mutateJSON(t, validCreate(), func(m map[string]any) { m["v"] = "1" }), ErrInvalidCommand},

		// Bodies and kinds.
		{"no body", mutateJSON(t, validCreate(), func(m map[string]any) { delete(m, "create") }), ErrInvalidCommand},
		{"null body", mutateJSON(t, validCreate(), func(m map[string]any) { m["create"] = nil }), ErrInvalidCommand},
		{"two bodies", mutateJSON(t, validCreate(), func(m map[string]any) {
			m["payment"] = body(mutateMap(t, validPayment()), "payment")
		}), ErrInvalidCommand},
		{"three bodies", mutateJSON(t, validCreate(), func(m map[string]any) {
			m["payment"] = body(mutateMap(t, validPayment()), "payment")
			m["refund"] = body(mutateMap(t, validRefund()), "refund")
		}), ErrInvalidCommand},
		{"kind payment with create body", mutateJSON(t, validCreate(), func(m map[string]any) { m["kind"] = "payment" }), ErrInvalidCommand},
		{"kind refund with payment body", mutateJSON(t, validPayment(), func(m map[string]any) { m["kind"] = "refund" }), ErrInvalidCommand},
		{"kind create with refund body", mutateJSON(t, validRefund(), func(m map[string]any) { m["kind"] = "create" }), ErrInvalidCommand},
		{"unknown kind", mutateJSON(t, validCreate(), func(m map[string]any) { m["kind"] = "delete" }), ErrInvalidCommand},
		{"upper-case kind", mutateJSON(t, validCreate(), func(m map[string]any) { m["kind"] = "CREATE" }), ErrInvalidCommand},
		{"kind missing", mutateJSON(t, validCreate(), func(m map[string]any) { delete(m, "kind") }), ErrInvalidCommand},
		{"body wrong type", mutateJSON(t, validCreate(), func(m map[string]any) { m["create"] = "d-0001" }), ErrInvalidCommand},

		// Invalid UTF-8 in any text field.
		{"invalid UTF-8 in name", invalidUTF8(marshalRaw(t, validCreate()), "name"), ErrInvalidCommand},
		{"invalid UTF-8 in message", invalidUTF8(marshalRaw(t, validCreate()), "message"), ErrInvalidCommand},
		{"invalid UTF-8 in event_id", invalidUTF8(marshalRaw(t, validPayment()), "event_id"), ErrInvalidCommand},
		{"invalid UTF-8 in refund_id", invalidUTF8(marshalRaw(t, validRefund()), "refund_id"), ErrInvalidCommand},
		{"invalid UTF-8 in a key", []byte("{\"v\":1,\"\xff\":1}"), ErrInvalidCommand},

		// Field lengths, one past each limit, and empty required fields.
		{"create id too long", withCreate(func(c *Create) { c.ID = long(MaxIDLen + 1) }), ErrInvalidCommand},
		{"create id empty", withCreate(func(c *Create) { c.ID = "" }), ErrInvalidCommand},
		{"idempotency key too long", withCreate(func(c *Create) { c.IdempotencyKey = long(MaxKeyLen + 1) }), ErrInvalidCommand},
		{"idempotency key empty", withCreate(func(c *Create) { c.IdempotencyKey = "" }), ErrInvalidCommand},
		{"request hash too long", withCreate(func(c *Create) { c.RequestHash = long(129) }), ErrInvalidCommand},
		{"create provider too long", withCreate(func(c *Create) { c.Provider = long(33) }), ErrInvalidCommand},
		{"create provider empty", withCreate(func(c *Create) { c.Provider = "" }), ErrInvalidCommand},
		{"name too long", withCreate(func(c *Create) { c.Name = long(MaxNameLen + 1) }), ErrInvalidCommand},
		{"name too long in bytes", withCreate(func(c *Create) { c.Name = strings.Repeat("é", MaxNameLen/2+1) }), ErrInvalidCommand},
		{"email too long", withCreate(func(c *Create) { c.Email = long(MaxEmailLen + 1) }), ErrInvalidCommand},
		{"message too long", withCreate(func(c *Create) { c.Message = long(MaxMessageLen + 1) }), ErrInvalidCommand},
		{"payment provider empty", withPayment(func(p *Payment) { p.Provider = "" }), ErrInvalidCommand},
		{"payment provider too long", withPayment(func(p *Payment) { p.Provider = long(33) }), ErrInvalidCommand},
		{"event id too long", withPayment(func(p *Payment) { p.EventID = long(MaxKeyLen + 1) }), ErrInvalidCommand},
		{"event id empty", withPayment(func(p *Payment) { p.EventID = "" }), ErrInvalidCommand},
		{"payment donation id too long", withPayment(func(p *Payment) { p.DonationID = long(MaxIDLen + 1) }), ErrInvalidCommand},
		{"payment donation id empty", withPayment(func(p *Payment) { p.DonationID = "" }), ErrInvalidCommand},
		{"provider ref too long", withPayment(func(p *Payment) { p.ProviderRef = long(MaxKeyLen + 1) }), ErrInvalidCommand},
		{"refund id too long", withRefund(func(r *Refund) { r.RefundID = long(MaxKeyLen + 1) }), ErrInvalidCommand},
		{"refund id empty", withRefund(func(r *Refund) { r.RefundID = "" }), ErrInvalidCommand},
		{"refund donation id too long", withRefund(func(r *Refund) { r.DonationID = long(MaxIDLen + 1) }), ErrInvalidCommand},
		{"refund donation id empty", withRefund(func(r *Refund) { r.DonationID = "" }), ErrInvalidCommand},

		// Outcomes.
		{"unknown outcome", withPayment(func(p *Payment) { p.Outcome = "refunded" }), ErrInvalidCommand},
		{"empty outcome", withPayment(func(p *Payment) { p.Outcome = "" }), ErrInvalidCommand},
		{"upper-case outcome", withPayment(func(p *Payment) { p.Outcome = "SUCCEEDED" }), ErrInvalidCommand},

		// Amounts.
		{"create zero amount", withCreate(func(c *Create) { c.Amount.Minor = 0 }), ErrInvalidAmount},
		{"create negative amount", withCreate(func(c *Create) { c.Amount.Minor = -2500 }), ErrInvalidAmount},
		{"create amount over max", withCreate(func(c *Create) { c.Amount.Minor = MaxMinor + 1 }), ErrInvalidAmount},
		{"create unknown currency", withCreate(func(c *Create) { c.Amount.Currency = "XXX" }), ErrUnknownCurrency},
		{"create lower-case currency", withCreate(func(c *Create) { c.Amount.Currency = "eur" }), ErrUnknownCurrency},
		{"create missing amount", mutateJSON(t, validCreate(), func(m map[string]any) { delete(body(m, "create"), "amount") }), ErrUnknownCurrency},
		{"create fractional minor", mutateJSON(t, validCreate(), func(m map[string]any) {
			body(body(m, "create"), "amount")["minor"] = 25.5
		}), ErrInvalidCommand},
		{"create minor as string", mutateJSON(t, validCreate(), func(m map[string]any) {
			body(body(m, "create"), "amount")["minor"] = "2500"
		}), ErrInvalidCommand},
		{"create minor overflows int64", mutateJSON(t, validCreate(), func(m map[string]any) {
			body(body(m, "create"), "amount")["minor"] = json.Number("9223372036854775808")
		}), ErrInvalidCommand},
		{"payment zero amount", withPayment(func(p *Payment) { p.Amount = &Money{0, "EUR"} }), ErrInvalidAmount},
		{"payment amount unknown currency", withPayment(func(p *Payment) { p.Amount = &Money{2500, "ABC"} }), ErrUnknownCurrency},
		{"refund negative amount", withRefund(func(r *Refund) { r.Amount.Minor = -1 }), ErrInvalidAmount},
		{"refund amount over max", withRefund(func(r *Refund) { r.Amount.Minor = MaxMinor + 1 }), ErrInvalidAmount},
		{"refund empty currency", withRefund(func(r *Refund) { r.Amount.Currency = "" }), ErrUnknownCurrency},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Decode(%.200q) = %+v, %v; want %v", tt.in, got, err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, Command{}) {
				t.Fatalf("Decode returned %+v with an error, want the zero Command", got)
			}
		})
	}
}

// mutateMap is the generic JSON object of c (for splicing bodies together).
func mutateMap(t *testing.T, c Command) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(marshalRaw(t, c), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDecodeAcceptsLimits checks the other side of every limit: a field of
// exactly the maximum length (and the optional ones left empty) decodes.
func TestDecodeAcceptsLimits(t *testing.T) {
	c := validCreate()
	c.Create.ID = strings.Repeat("i", MaxIDLen)
	c.Create.IdempotencyKey = strings.Repeat("k", MaxKeyLen)
	c.Create.RequestHash = strings.Repeat("h", 128)
	c.Create.Provider = strings.Repeat("p", 32)
	c.Create.Name = strings.Repeat("é", MaxNameLen/2) // 2 bytes each
	c.Create.Email = strings.Repeat("e", MaxEmailLen)
	c.Create.Message = strings.Repeat("m", MaxMessageLen)
	c.Create.Amount = Money{MaxMinor, "BHD"}

	p := validPayment()
	p.Payment.Provider = strings.Repeat("p", 32)
	p.Payment.EventID = strings.Repeat("e", MaxKeyLen)
	p.Payment.DonationID = strings.Repeat("d", MaxIDLen)
	p.Payment.ProviderRef = strings.Repeat("r", MaxKeyLen)

	r := validRefund()
	r.Refund.RefundID = strings.Repeat("r", MaxKeyLen)
	r.Refund.DonationID = strings.Repeat("d", MaxIDLen)
	r.Refund.Amount = Money{1, "JPY"}

	emptyOptional := validCreate()
	emptyOptional.Create.RequestHash = ""
	emptyOptional.Create.Name = ""
	emptyOptional.Create.Email = ""
	emptyOptional.Create.Message = ""

	for _, cmd := range []Command{c, p, r, emptyOptional} {
		b, err := Encode(cmd)
		if err != nil {
			t.Fatalf("Encode %s at the limits: %v", cmd.Kind, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode %s at the limits: %v", cmd.Kind, err)
		}
		if !reflect.DeepEqual(got, cmd) {
			t.Fatalf("Decode %s at the limits:\n got %+v\nwant %+v", cmd.Kind, got, cmd)
		}
	}
}

func TestDecodeAcceptsSurroundingWhitespace(t *testing.T) {
	b, err := Encode(validPayment())
	if err != nil {
		t.Fatal(err)
	}
	in := append(append([]byte(" \n\t"), b...), " \r\n"...)
	got, err := Decode(in)
	if err != nil {
		t.Fatalf("Decode with whitespace: %v", err)
	}
	if !reflect.DeepEqual(got, validPayment()) {
		t.Fatalf("Decode with whitespace = %+v", got)
	}
}

func TestUniqueKey(t *testing.T) {
	sameText := func(k Kind) Command {
		switch k {
		case KindCreate:
			c := validCreate()
			c.Create.IdempotencyKey = "x"
			return c
		case KindPayment:
			c := validPayment()
			c.Payment.EventID = "x"
			return c
		}
		c := validRefund()
		c.Refund.RefundID = "x"
		return c
	}
	otherProvider := validPayment()
	otherProvider.Payment.Provider = "stripe"

	tests := []struct {
		name string
		cmd  Command
		want string
	}{
		{"create", validCreate(), "idem/idem-7f3a"},
		{"payment", validPayment(), "evt/dev/evt_1"},
		{"payment other provider", otherProvider, "evt/stripe/evt_1"},
		{"refund", validRefund(), "refund/re_1"},
		{"create x", sameText(KindCreate), "idem/x"},
		{"payment x", sameText(KindPayment), "evt/dev/x"},
		{"refund x", sameText(KindRefund), "refund/x"},
		{"zero command", Command{}, ""},
		{"kind without body", Command{Kind: KindRefund}, ""},
		{"kind and body disagree", Command{Kind: KindPayment, Create: validCreate().Create}, ""},
		{"unknown kind", Command{Kind: "other", Refund: validRefund().Refund}, ""},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		got := tt.cmd.UniqueKey()
		if got != tt.want {
			t.Errorf("%s: UniqueKey() = %q, want %q", tt.name, got, tt.want)
		}
		if got == "" {
			continue
		}
		if prev, ok := seen[got]; ok {
			t.Errorf("%s and %s share unique key %q", prev, tt.name, got)
		}
		seen[got] = tt.name
	}
	// The key does not depend on anything but the identifying fields.
	later := validPayment()
	later.Payment.Outcome = OutcomeFailed
	later.Payment.At++
	later.Payment.Amount = nil
	if later.UniqueKey() != validPayment().UniqueKey() {
		t.Errorf("a redelivered event with other details has another key: %q", later.UniqueKey())
	}
}

func TestResultEncodeDecode(t *testing.T) {
	d := Donation{
		ID: "d-1", IdempotencyKey: "k", RequestHash: "h", Amount: Money{2500, "EUR"},
		RefundedMinor: 500, Status: StatusSucceeded, Provider: "dev", ProviderRef: "pi",
		Name: "Ada", Email: "ada@example.org", Message: "hi", Anonymous: true,
		CreatedAt: 1, UpdatedAt: 2, Events: []string{"evt/dev/1", "refund/r"},
	}
	for _, r := range []Result{
		{Code: CodeOK, Donation: d},
		{Code: CodeNotFound},
		{Code: CodeRefundExceeds, Donation: Donation{ID: "x", Status: StatusPending}},
	} {
		b, err := r.Encode()
		if err != nil {
			t.Fatalf("Encode %+v: %v", r, err)
		}
		got, err := DecodeResult(b)
		if err != nil {
			t.Fatalf("DecodeResult(%s): %v", b, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("result round trip:\n got %+v\nwant %+v", got, r)
		}
	}
	for _, bad := range []string{"", "{", "[]", `{"code":1}`} {
		if _, err := DecodeResult([]byte(bad)); err == nil {
			t.Errorf("DecodeResult(%q) succeeded", bad)
		}
	}
}
