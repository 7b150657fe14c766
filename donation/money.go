package donation

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxMinor bounds any single amount in minor units. It keeps sums of many
// donations far away from int64 overflow (10^12 minor units is ten billion
// euros; a total of 9.2*10^18 would need nine million such donations).
const MaxMinor int64 = 1_000_000_000_000

// Currency is an upper-case ISO 4217 alphabetic code.
type Currency string

// currencies lists the ISO 4217 codes Surge accepts with their minor-unit
// exponent (ISO 4217 table A.1). The list is deliberately closed: an unknown
// code is a client mistake, not something to guess about.
var currencies = map[Currency]int{
	"AED": 2, "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0,
	"CZK": 2, "DKK": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "IDR": 2,
	"ILS": 2, "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KES": 2, "KRW": 0,
	"KWD": 3, "MAD": 2, "MXN": 2, "MYR": 2, "NGN": 2, "NOK": 2, "NZD": 2,
	"OMR": 3, "PHP": 2, "PLN": 2, "QAR": 2, "RON": 2, "SAR": 2, "SEK": 2,
	"SGD": 2, "THB": 2, "TND": 3, "TRY": 2, "UAH": 2, "USD": 2, "VND": 0,
	"ZAR": 2,
}

// ParseCurrency validates an ISO 4217 code. It accepts lower case input and
// returns the canonical upper-case form.
func ParseCurrency(s string) (Currency, error) {
	c := Currency(strings.ToUpper(strings.TrimSpace(s)))
	if _, ok := currencies[c]; !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknownCurrency, s)
	}
	return c, nil
}

// Valid reports whether c is a supported ISO 4217 code.
func (c Currency) Valid() bool {
	_, ok := currencies[c]
	return ok
}

// Exponent is the number of minor-unit digits of c (2 for EUR, 0 for JPY).
func (c Currency) Exponent() int { return currencies[c] }

// Money is an amount in integer minor units of one currency. Never a float.
type Money struct {
	Minor    int64    `json:"minor"`
	Currency Currency `json:"currency"`
}

// Validate checks that m is a positive amount of a known currency within MaxMinor.
func (m Money) Validate() error {
	if !m.Currency.Valid() {
		return fmt.Errorf("%w: %q", ErrUnknownCurrency, m.Currency)
	}
	if m.Minor <= 0 {
		return fmt.Errorf("%w: amount must be positive", ErrInvalidAmount)
	}
	if m.Minor > MaxMinor {
		return fmt.Errorf("%w: amount exceeds %d minor units", ErrInvalidAmount, MaxMinor)
	}
	return nil
}

// Format renders m for people: "25.00 EUR", "1000 JPY". It is exact: it
// never goes through a float.
func (m Money) Format() string {
	return FormatMinor(m.Minor, m.Currency) + " " + string(m.Currency)
}

// FormatMinor renders minor units as a decimal string with the currency's
// exponent and thousands separators: 1234567 EUR -> "12,345.67".
func FormatMinor(minor int64, c Currency) string {
	neg := minor < 0
	mag := uint64(minor)
	if neg {
		mag = -mag // two's complement: exact even for math.MinInt64
	}
	exp := c.Exponent()
	s := strconv.FormatUint(mag, 10)
	for len(s) <= exp {
		s = "0" + s
	}
	whole, frac := s[:len(s)-exp], s[len(s)-exp:]
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, r := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if exp > 0 {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	return b.String()
}

// ParseMajor parses a decimal amount typed by a person in major units
// ("25", "25.5", "25.50") into minor units of c, exactly. It rejects more
// fraction digits than the currency has, signs, exponents, separators and
// amounts above MaxMinor. c must be a canonical supported code (see
// ParseCurrency): an unknown one would silently change the exponent.
func ParseMajor(s string, c Currency) (int64, error) {
	if !c.Valid() {
		return 0, fmt.Errorf("%w: %q", ErrUnknownCurrency, c)
	}
	s = strings.TrimSpace(s)
	exp := c.Exponent()
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || len(whole) > 13 || !allDigits(whole) || (hasDot && (frac == "" || len(frac) > exp || !allDigits(frac))) {
		return 0, fmt.Errorf("%w: %q is not an amount", ErrInvalidAmount, s)
	}
	for len(frac) < exp {
		frac += "0"
	}
	v, err := strconv.ParseInt(whole+frac, 10, 64)
	if err != nil || v > MaxMinor {
		return 0, fmt.Errorf("%w: %q is not an amount", ErrInvalidAmount, s)
	}
	return v, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
