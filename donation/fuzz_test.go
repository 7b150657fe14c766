package donation

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// FuzzDecode: Decode never panics and fails only with a sentinel error; what
// it accepts is valid, encodes again, decodes back to the same Command with
// the same bytes, and is something the ledger can decide without error.
func FuzzDecode(f *testing.F) {
	noAmount := validPayment()
	noAmount.Payment.Amount = nil
	for _, c := range []Command{validCreate(), validPayment(), noAmount, validRefund()} {
		b, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(append(bytes.Clone(b), '}'))
		f.Add(append(bytes.Clone(b), " \n"...))
		f.Add(b[:len(b)/2])
		f.Add(bytes.Replace(b, []byte(`"v":1`), []byte(`"v":2`), 1))
		f.Add(bytes.Replace(b, []byte(`"v":1`), []byte(`"V":1`), 1))
		f.Add(bytes.Replace(b, []byte(`"minor":`), []byte(`"minor":-`), 1))
	}
	for _, s := range []string{
		"", "{}", "null", "[]", `"x"`, "0", `{"v":1}`, `{"v":1,"kind":"create"}`,
		`{"v":1,"kind":"create","create":{},"payment":{}}`,
		`{"v":1,"kind":"refund","refund":{"refund_id":"r","donation_id":"d","amount":{"minor":1,"currency":"EUR"},"at":0},"x":1}`,
		`{"v":1,"kind":"refund","refund":{"refund_id":"\ud800","donation_id":"d","amount":{"minor":1,"currency":"EUR"},"at":0}}`,
		"{\"v\":1,\"kind\":\"refund\",\"refund\":{\"refund_id\":\"\xff\"}}",
		strings.Repeat("[", 10000),
		`{"v":1e400}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidCommand) && !errors.Is(err, ErrUnknownVersion) &&
				!errors.Is(err, ErrInvalidAmount) && !errors.Is(err, ErrUnknownCurrency) {
				t.Fatalf("Decode error %v is none of the sentinels", err)
			}
			if !reflect.DeepEqual(c, Command{}) {
				t.Fatalf("Decode returned %+v with error %v", c, err)
			}
			return
		}
		if c.V != EnvelopeVersion {
			t.Fatalf("Decode accepted version %d", c.V)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Decode accepted an invalid command: %v", err)
		}
		if c.UniqueKey() == "" {
			t.Fatalf("decoded command %+v has no unique key", c)
		}
		b2, err := Encode(c)
		if err != nil {
			t.Fatalf("Encode(Decode(%q)): %v", b, err)
		}
		c2, err := Decode(b2)
		if err != nil {
			t.Fatalf("Decode(Encode(Decode(%q))) = %v", b, err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the command:\n%+v\n%+v", c, c2)
		}
		b3, err := Encode(c2)
		if err != nil || !bytes.Equal(b2, b3) {
			t.Fatalf("encoding is not stable: %q vs %q (%v)", b2, b3, err)
		}

		res, eff, err := Decide(newMemState(), c)
		if err != nil {
			t.Fatalf("Decide of a decoded command: %v", err)
		}
		want := CodeNotFound // nothing exists yet for a payment or refund
		if c.Kind == KindCreate {
			want = CodeOK
		}
		if res.Code != want || (want == CodeOK) == eff.Empty() {
			t.Fatalf("Decide on an empty ledger = %s %+v, want %s", res.Code, eff, want)
		}
	})
}

var fuzzCurrencies = []Currency{"EUR", "JPY", "BHD", "XXX", "eur"}

// FuzzParseMajor: ParseMajor never panics and fails only with a sentinel;
// what it accepts is within [0, MaxMinor] and is the same number FormatMinor
// prints for the result, which parses back to the same value.
func FuzzParseMajor(f *testing.F) {
	for _, s := range []string{
		"25", "25.5", "25.50", "0.01", "0", "007", " 1.234 ", "10000000000", "10000000000.01",
		"", " ", "..", ".5", "5.", "-1", "+1", "1e3", "1,000", "25.505", "٢٥", "99999999999999999999",
	} {
		for i := range fuzzCurrencies {
			f.Add(s, uint8(i))
		}
	}
	f.Fuzz(func(t *testing.T, s string, ci uint8) {
		c := fuzzCurrencies[int(ci)%len(fuzzCurrencies)]
		v, err := ParseMajor(s, c)
		if err != nil {
			if !errors.Is(err, ErrInvalidAmount) && !(errors.Is(err, ErrUnknownCurrency) && !c.Valid()) {
				t.Fatalf("ParseMajor(%q, %s) error %v is not the right sentinel", s, c, err)
			}
			if v != 0 {
				t.Fatalf("ParseMajor(%q, %s) = %d with an error", s, c, v)
			}
			return
		}
		if !c.Valid() {
			t.Fatalf("ParseMajor(%q, %q) accepted an unknown currency", s, c)
		}
		if v < 0 || v > MaxMinor {
			t.Fatalf("ParseMajor(%q, %s) = %d, out of [0, MaxMinor]", s, c, v)
		}
		formatted := strings.ReplaceAll(FormatMinor(v, c), ",", "")
		if canon := canonicalDecimal(s, c.Exponent()); canon != formatted {
			t.Fatalf("ParseMajor(%q, %s) = %d, formatted %q, but the input reads %q", s, c, v, formatted, canon)
		}
		back, err := ParseMajor(formatted, c)
		if err != nil || back != v {
			t.Fatalf("ParseMajor(FormatMinor(%d)) = %d, %v", v, back, err)
		}
	})
}

// canonicalDecimal writes an accepted ParseMajor input the way FormatMinor
// does (less separators): no leading zeros, exactly exp fraction digits.
func canonicalDecimal(s string, exp int) string {
	whole, frac, _ := strings.Cut(strings.TrimSpace(s), ".")
	whole = strings.TrimLeft(whole, "0")
	if whole == "" {
		whole = "0"
	}
	if exp == 0 {
		return whole
	}
	return whole + "." + frac + strings.Repeat("0", exp-len(frac))
}

var formatPattern = map[int]*regexp.Regexp{
	0: regexp.MustCompile(`^-?[0-9]{1,3}(,[0-9]{3})*$`),
	2: regexp.MustCompile(`^-?[0-9]{1,3}(,[0-9]{3})*\.[0-9]{2}$`),
	3: regexp.MustCompile(`^-?[0-9]{1,3}(,[0-9]{3})*\.[0-9]{3}$`),
}

// FuzzFormatMinor: FormatMinor never panics, always prints the grouped
// shape for the currency's exponent, is symmetric around zero, and what it
// prints for an amount in range parses back exactly.
func FuzzFormatMinor(f *testing.F) {
	for _, v := range []int64{0, 1, -1, 999, 1000, -1000, 123456789, MaxMinor, math.MaxInt64, math.MinInt64} {
		f.Add(v, uint8(0))
		f.Add(v, uint8(1))
		f.Add(v, uint8(2))
	}
	f.Fuzz(func(t *testing.T, v int64, ci uint8) {
		c := fuzzCurrencies[int(ci)%3] // the known ones
		s := FormatMinor(v, c)
		if !formatPattern[c.Exponent()].MatchString(s) {
			t.Fatalf("FormatMinor(%d, %s) = %q, not grouped decimal", v, c, s)
		}
		if (v < 0) != strings.HasPrefix(s, "-") {
			t.Fatalf("FormatMinor(%d, %s) = %q: wrong sign", v, c, s)
		}
		if v < 0 && v != math.MinInt64 && FormatMinor(-v, c) != s[1:] {
			t.Fatalf("FormatMinor(%d) = %q but FormatMinor(%d) = %q", v, s, -v, FormatMinor(-v, c))
		}
		if v >= 0 && v <= MaxMinor {
			back, err := ParseMajor(strings.ReplaceAll(s, ",", ""), c)
			if err != nil || back != v {
				t.Fatalf("ParseMajor(FormatMinor(%d, %s) = %q) = %d, %v", v, c, s, back, err)
			}
		}
	})
}
