package web

import (
	"math/bits"
	"strings"

	"github.com/surgefund/surge/donation"
)

// currencySymbols are prefixes that read unambiguously; other currencies
// are shown with their ISO code ("AED 25").
var currencySymbols = map[donation.Currency]string{
	"EUR": "€", "GBP": "£", "USD": "$", "JPY": "¥", "INR": "₹", "KRW": "₩",
	"ILS": "₪", "NGN": "₦", "PHP": "₱", "TRY": "₺", "UAH": "₴", "VND": "₫",
}

// currencyPrefix is what goes before an amount: a symbol, or the code and a
// no-break space.
func currencyPrefix(c donation.Currency) string {
	if s, ok := currencySymbols[c]; ok {
		return s
	}
	return string(c) + "\u00a0"
}

// formatMoney renders minor units for people: "€1,234.50", and whole
// amounts without the zero fraction: "€25". Exact, never a float.
func formatMoney(minor int64, c donation.Currency) string {
	s := donation.FormatMinor(minor, c)
	if exp := c.Exponent(); exp > 0 {
		if frac := s[len(s)-exp:]; strings.Trim(frac, "0") == "" {
			s = s[:len(s)-exp-1]
		}
	}
	if strings.HasPrefix(s, "-") {
		return "-" + currencyPrefix(c) + s[1:]
	}
	return currencyPrefix(c) + s
}

// percentOf is floor(part*100/whole), clamped at 0, computed in 128 bits so
// that it cannot overflow.
func percentOf(part, whole int64) int64 {
	if part <= 0 || whole <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(part), 100)
	if hi >= uint64(whole) {
		return 1 << 62 // absurdly over the goal; never reached with MaxMinor-bounded totals
	}
	q, _ := bits.Div64(hi, lo, uint64(whole))
	return int64(q)
}
