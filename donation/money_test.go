package donation

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestParseCurrency(t *testing.T) {
	tests := []struct {
		in      string
		want    Currency
		wantErr error
	}{
		{in: "EUR", want: "EUR"},
		{in: "eur", want: "EUR"},
		{in: "Eur", want: "EUR"},
		{in: " usd\t", want: "USD"},
		{in: "JPY", want: "JPY"},
		{in: "bhd", want: "BHD"},
		{in: "", wantErr: ErrUnknownCurrency},
		{in: "   ", wantErr: ErrUnknownCurrency},
		{in: "XXX", wantErr: ErrUnknownCurrency},
		{in: "EU", wantErr: ErrUnknownCurrency},
		{in: "EURO", wantErr: ErrUnknownCurrency},
		{in: "E UR", wantErr: ErrUnknownCurrency},
		{in: "€", wantErr: ErrUnknownCurrency},
		{in: "EUR\x00", wantErr: ErrUnknownCurrency},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCurrency(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseCurrency(%q) error = %v, want %v", tt.in, err, tt.wantErr)
				}
				if got != "" {
					t.Fatalf("ParseCurrency(%q) = %q on error, want empty", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCurrency(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseCurrency(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if !got.Valid() {
				t.Fatalf("ParseCurrency(%q) = %q, which is not Valid", tt.in, got)
			}
		})
	}
}

func TestCurrencyExponent(t *testing.T) {
	tests := []struct {
		c     Currency
		valid bool
		exp   int
	}{
		{"EUR", true, 2},
		{"USD", true, 2},
		{"JPY", true, 0},
		{"KRW", true, 0},
		{"BHD", true, 3},
		{"KWD", true, 3},
		{"eur", false, 0}, // not canonical
		{"XXX", false, 0},
		{"", false, 0},
	}
	for _, tt := range tests {
		if got := tt.c.Valid(); got != tt.valid {
			t.Errorf("%q.Valid() = %v, want %v", tt.c, got, tt.valid)
		}
		if got := tt.c.Exponent(); got != tt.exp {
			t.Errorf("%q.Exponent() = %d, want %d", tt.c, got, tt.exp)
		}
	}
}

func TestMoneyValidate(t *testing.T) {
	tests := []struct {
		name    string
		m       Money
		wantErr error
	}{
		{"one cent", Money{1, "EUR"}, nil},
		{"one yen", Money{1, "JPY"}, nil},
		{"max", Money{MaxMinor, "EUR"}, nil},
		{"zero", Money{0, "EUR"}, ErrInvalidAmount},
		{"negative", Money{-1, "EUR"}, ErrInvalidAmount},
		{"min int64", Money{math.MinInt64, "EUR"}, ErrInvalidAmount},
		{"over max", Money{MaxMinor + 1, "EUR"}, ErrInvalidAmount},
		{"max int64", Money{math.MaxInt64, "EUR"}, ErrInvalidAmount},
		{"unknown currency", Money{100, "XXX"}, ErrUnknownCurrency},
		{"lower-case currency", Money{100, "eur"}, ErrUnknownCurrency},
		{"empty currency", Money{100, ""}, ErrUnknownCurrency},
		{"zero and unknown", Money{}, ErrUnknownCurrency},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.m.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate(%+v): %v", tt.m, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Validate(%+v) = %v, want %v", tt.m, err, tt.wantErr)
			}
		})
	}
}

func TestFormatMinor(t *testing.T) {
	tests := []struct {
		minor int64
		c     Currency
		want  string
	}{
		// exponent 2
		{0, "EUR", "0.00"},
		{5, "EUR", "0.05"},
		{50, "EUR", "0.50"},
		{100, "EUR", "1.00"},
		{2500, "EUR", "25.00"},
		{99999, "EUR", "999.99"},
		{100000, "EUR", "1,000.00"},
		{1234567, "EUR", "12,345.67"},
		{123456789, "EUR", "1,234,567.89"},
		{MaxMinor, "EUR", "10,000,000,000.00"},
		{-5, "EUR", "-0.05"},
		{-100000, "EUR", "-1,000.00"},
		{-123456789, "EUR", "-1,234,567.89"},
		{math.MaxInt64, "EUR", "92,233,720,368,547,758.07"},
		{math.MinInt64, "EUR", "-92,233,720,368,547,758.08"},
		// exponent 0
		{0, "JPY", "0"},
		{7, "JPY", "7"},
		{999, "JPY", "999"},
		{1000, "JPY", "1,000"},
		{100000, "JPY", "100,000"},
		{1234567, "JPY", "1,234,567"},
		{-1, "JPY", "-1"},
		{-1000, "JPY", "-1,000"},
		{-1234567, "JPY", "-1,234,567"},
		// exponent 3
		{0, "BHD", "0.000"},
		{1, "BHD", "0.001"},
		{10, "BHD", "0.010"},
		{1000, "BHD", "1.000"},
		{1234567, "BHD", "1,234.567"},
		{-1, "BHD", "-0.001"},
		{-1234567, "BHD", "-1,234.567"},
	}
	for _, tt := range tests {
		if got := FormatMinor(tt.minor, tt.c); got != tt.want {
			t.Errorf("FormatMinor(%d, %s) = %q, want %q", tt.minor, tt.c, got, tt.want)
		}
	}
}

func TestMoneyFormat(t *testing.T) {
	tests := []struct {
		m    Money
		want string
	}{
		{Money{2500, "EUR"}, "25.00 EUR"},
		{Money{1000, "JPY"}, "1,000 JPY"},
		{Money{1500, "KWD"}, "1.500 KWD"},
	}
	for _, tt := range tests {
		if got := tt.m.Format(); got != tt.want {
			t.Errorf("%+v.Format() = %q, want %q", tt.m, got, tt.want)
		}
	}
}

func TestParseMajor(t *testing.T) {
	good := []struct {
		in   string
		c    Currency
		want int64
	}{
		{"25", "EUR", 2500},
		{"25.5", "EUR", 2550},
		{"25.50", "EUR", 2550},
		{"0.01", "EUR", 1},
		{" 25 ", "EUR", 2500},
		{"007", "EUR", 700},
		{"0", "EUR", 0}, // syntactically fine; Money.Validate refuses zero
		{"10000000000", "EUR", MaxMinor},
		{"10000000000.00", "EUR", MaxMinor},
		{"1000", "JPY", 1000},
		{"1000000000000", "JPY", MaxMinor},
		{"1.234", "BHD", 1234},
		{"1.2", "BHD", 1200},
		{"1", "BHD", 1000},
	}
	for _, tt := range good {
		t.Run("good/"+string(tt.c)+"/"+tt.in, func(t *testing.T) {
			got, err := ParseMajor(tt.in, tt.c)
			if err != nil {
				t.Fatalf("ParseMajor(%q, %s): %v", tt.in, tt.c, err)
			}
			if got != tt.want {
				t.Fatalf("ParseMajor(%q, %s) = %d, want %d", tt.in, tt.c, got, tt.want)
			}
		})
	}

	bad := []struct {
		in      string
		c       Currency
		wantErr error
	}{
		{"", "EUR", ErrInvalidAmount},
		{" ", "EUR", ErrInvalidAmount},
		{"-1", "EUR", ErrInvalidAmount},
		{"+1", "EUR", ErrInvalidAmount},
		{"1e3", "EUR", ErrInvalidAmount},
		{"1E3", "EUR", ErrInvalidAmount},
		{"1,000", "EUR", ErrInvalidAmount},
		{"1 000", "EUR", ErrInvalidAmount},
		{"1_000", "EUR", ErrInvalidAmount},
		{"25.505", "EUR", ErrInvalidAmount},
		{"25,50", "EUR", ErrInvalidAmount},
		{"1.5", "JPY", ErrInvalidAmount},
		{"1.0", "JPY", ErrInvalidAmount},
		{"1.2345", "BHD", ErrInvalidAmount},
		{"..", "EUR", ErrInvalidAmount},
		{".", "EUR", ErrInvalidAmount},
		{".5", "EUR", ErrInvalidAmount},
		{"25.", "EUR", ErrInvalidAmount},
		{"1.2.3", "EUR", ErrInvalidAmount},
		{"0x10", "EUR", ErrInvalidAmount},
		{"NaN", "EUR", ErrInvalidAmount},
		{"Inf", "EUR", ErrInvalidAmount},
		{"25€", "EUR", ErrInvalidAmount},
		{"٢٥", "EUR", ErrInvalidAmount},             // Arabic-Indic digits
		{"２５", "EUR", ErrInvalidAmount},             // full-width digits
		{"10000000000.01", "EUR", ErrInvalidAmount}, // MaxMinor + 1
		{"9999999999999", "EUR", ErrInvalidAmount},  // 13 digits, above MaxMinor
		{"1000000000001", "JPY", ErrInvalidAmount},
		{"99999999999999", "EUR", ErrInvalidAmount},
		{"99999999999999999999999999999", "EUR", ErrInvalidAmount},
		{strings.Repeat("9", 10000), "EUR", ErrInvalidAmount},
		{"25", "XXX", ErrUnknownCurrency},
		{"25", "eur", ErrUnknownCurrency}, // not canonical: would change the exponent
		{"25", "", ErrUnknownCurrency},
	}
	for _, tt := range bad {
		name := tt.in
		if len(name) > 32 {
			name = name[:32] + "..."
		}
		t.Run("bad/"+string(tt.c)+"/"+name, func(t *testing.T) {
			got, err := ParseMajor(tt.in, tt.c)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ParseMajor(%q, %s) = %d, %v; want %v", name, tt.c, got, err, tt.wantErr)
			}
			if got != 0 {
				t.Fatalf("ParseMajor(%q, %s) = %d on error, want 0", name, tt.c, got)
			}
		})
	}
}

// TestParseMajorFormatRoundTrip checks that what FormatMinor prints (without
// the thousands separators a person would not type) parses back exactly.
func TestParseMajorFormatRoundTrip(t *testing.T) {
	values := []int64{0, 1, 9, 10, 99, 100, 101, 2500, 123456, 1_000_000, 987_654_321, MaxMinor - 1, MaxMinor}
	for _, c := range []Currency{"EUR", "JPY", "BHD"} {
		for _, v := range values {
			s := strings.ReplaceAll(FormatMinor(v, c), ",", "")
			got, err := ParseMajor(s, c)
			if err != nil {
				t.Errorf("ParseMajor(%q, %s) from FormatMinor(%d): %v", s, c, v, err)
				continue
			}
			if got != v {
				t.Errorf("ParseMajor(%q, %s) = %d, want %d", s, c, got, v)
			}
		}
	}
}
