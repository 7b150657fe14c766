package donation

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// Hand-written JSON for the hot path: the command envelope (decoded once
// per applied Raft entry), the stored donation (decoded and encoded on most
// applies) and the Result (encoded on every apply, decoded by the proposer).
//
// The encoders write exactly the bytes encoding/json.Marshal writes for the
// same value (same field order, omitempty rules and string escaping, HTML
// escaping included), so stored records, snapshots and responses do not
// change and nodes running the previous version agree byte for byte. The
// tests compare them with json.Marshal on fuzzed values.
//
// The decoders recognise only that canonical shape (fields in struct order,
// no white space, no duplicate or unknown fields, plain integers, simple
// escapes). Anything else, valid or not, goes to encoding/json, so every
// input decodes to what encoding/json would make of it and fails with the
// error it would give. The fast path only has to be right about what it
// accepts; the tests check that against encoding/json.

// appendJSONString appends s quoted as encoding/json does with HTML
// escaping on (its default for Marshal).
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default: // other control bytes and <, >, &
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case c == '\u2028' || c == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[c&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendMoneyJSON(dst []byte, m Money) []byte {
	dst = append(dst, `{"minor":`...)
	dst = strconv.AppendInt(dst, m.Minor, 10)
	dst = append(dst, `,"currency":`...)
	dst = appendJSONString(dst, string(m.Currency))
	return append(dst, '}')
}

// appendDonationJSON appends json.Marshal(d).
func appendDonationJSON(dst []byte, d *Donation) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendJSONString(dst, d.ID)
	dst = append(dst, `,"idempotency_key":`...)
	dst = appendJSONString(dst, d.IdempotencyKey)
	dst = append(dst, `,"request_hash":`...)
	dst = appendJSONString(dst, d.RequestHash)
	dst = append(dst, `,"amount":`...)
	dst = appendMoneyJSON(dst, d.Amount)
	if d.RefundedMinor != 0 {
		dst = append(dst, `,"refunded_minor":`...)
		dst = strconv.AppendInt(dst, d.RefundedMinor, 10)
	}
	dst = append(dst, `,"status":`...)
	dst = appendJSONString(dst, string(d.Status))
	dst = append(dst, `,"provider":`...)
	dst = appendJSONString(dst, d.Provider)
	dst = appendOptString(dst, `,"provider_ref":`, d.ProviderRef)
	dst = appendOptString(dst, `,"name":`, d.Name)
	dst = appendOptString(dst, `,"email":`, d.Email)
	dst = appendOptString(dst, `,"message":`, d.Message)
	if d.Anonymous {
		dst = append(dst, `,"anonymous":true`...)
	}
	dst = append(dst, `,"created_at":`...)
	dst = strconv.AppendInt(dst, d.CreatedAt, 10)
	dst = append(dst, `,"updated_at":`...)
	dst = strconv.AppendInt(dst, d.UpdatedAt, 10)
	if len(d.Events) > 0 {
		dst = append(dst, `,"events":[`...)
		for i, e := range d.Events {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, e)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

func appendOptString(dst []byte, key, s string) []byte {
	if s == "" {
		return dst
	}
	return appendJSONString(append(dst, key...), s)
}

// appendCommandJSON appends json.Marshal(c).
func appendCommandJSON(dst []byte, c *Command) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, int64(c.V), 10)
	dst = append(dst, `,"kind":`...)
	dst = appendJSONString(dst, string(c.Kind))
	if x := c.Create; x != nil {
		dst = append(dst, `,"create":{"id":`...)
		dst = appendJSONString(dst, x.ID)
		dst = append(dst, `,"idempotency_key":`...)
		dst = appendJSONString(dst, x.IdempotencyKey)
		dst = append(dst, `,"request_hash":`...)
		dst = appendJSONString(dst, x.RequestHash)
		dst = append(dst, `,"amount":`...)
		dst = appendMoneyJSON(dst, x.Amount)
		dst = append(dst, `,"provider":`...)
		dst = appendJSONString(dst, x.Provider)
		dst = appendOptString(dst, `,"name":`, x.Name)
		dst = appendOptString(dst, `,"email":`, x.Email)
		dst = appendOptString(dst, `,"message":`, x.Message)
		if x.Anonymous {
			dst = append(dst, `,"anonymous":true`...)
		}
		dst = append(dst, `,"at":`...)
		dst = strconv.AppendInt(dst, x.At, 10)
		dst = append(dst, '}')
	}
	if x := c.Payment; x != nil {
		dst = append(dst, `,"payment":{"provider":`...)
		dst = appendJSONString(dst, x.Provider)
		dst = append(dst, `,"event_id":`...)
		dst = appendJSONString(dst, x.EventID)
		dst = append(dst, `,"donation_id":`...)
		dst = appendJSONString(dst, x.DonationID)
		dst = append(dst, `,"outcome":`...)
		dst = appendJSONString(dst, string(x.Outcome))
		if x.Amount != nil {
			dst = append(dst, `,"amount":`...)
			dst = appendMoneyJSON(dst, *x.Amount)
		}
		dst = appendOptString(dst, `,"provider_ref":`, x.ProviderRef)
		dst = append(dst, `,"at":`...)
		dst = strconv.AppendInt(dst, x.At, 10)
		dst = append(dst, '}')
	}
	if x := c.Refund; x != nil {
		dst = append(dst, `,"refund":{"refund_id":`...)
		dst = appendJSONString(dst, x.RefundID)
		dst = append(dst, `,"donation_id":`...)
		dst = appendJSONString(dst, x.DonationID)
		dst = append(dst, `,"amount":`...)
		dst = appendMoneyJSON(dst, x.Amount)
		dst = append(dst, `,"at":`...)
		dst = strconv.AppendInt(dst, x.At, 10)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// appendResultJSON appends json.Marshal(r).
func appendResultJSON(dst []byte, r *Result) []byte {
	dst = append(dst, `{"code":`...)
	dst = appendJSONString(dst, string(r.Code))
	dst = append(dst, `,"donation":`...)
	dst = appendDonationJSON(dst, &r.Donation)
	return append(dst, '}')
}

// scanner reads the canonical shape. The first thing that is not exactly
// what it expects marks it failed; from then on every reader does nothing
// and returns a zero value, so a decoder lists the fields in order and asks
// once at the end (ok). A failed scan means "ask encoding/json". Strings
// are cut from src, one copy of the whole input, so a decoded value costs
// one allocation for all its strings.
type scanner struct {
	b      []byte
	src    string
	i      int
	failed bool
}

func newScanner(b []byte) scanner { return scanner{b: b, src: string(b)} }

// ok reports whether everything matched and all the input was read.
func (s *scanner) ok() bool { return !s.failed && s.i == len(s.b) }

// peek reports whether lit is next, without consuming it.
func (s *scanner) peek(lit string) bool {
	return !s.failed && len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit
}

// opt consumes lit if it is next and reports whether it was.
func (s *scanner) opt(lit string) bool {
	if !s.peek(lit) {
		return false
	}
	s.i += len(lit)
	return true
}

// lit consumes lit, which must be next.
func (s *scanner) lit(lit string) {
	if !s.opt(lit) {
		s.failed = true
	}
}

// str reads a string value (an array element: a key of its own is "").
func (s *scanner) str() string { return s.keyStr("") }

// keyStr reads a key, given with its leading '{' or ',' and trailing ':',
// and its string value.
func (s *scanner) keyStr(key string) string {
	if s.opt(key) {
		if v, ok := s.readStr(); ok {
			return v
		}
	}
	s.failed = true
	return ""
}

// keyInt reads a key and its integer value.
func (s *scanner) keyInt(key string) int64 {
	if s.opt(key) {
		if v, ok := s.readInt(); ok {
			return v
		}
	}
	s.failed = true
	return 0
}

// optStr reads an omitempty string field, absent meaning "".
func (s *scanner) optStr(key string) string {
	if !s.peek(key) {
		return ""
	}
	return s.keyStr(key)
}

// readStr reads a JSON string: plain bytes, valid UTF-8, and only the escapes
// \" \\ \/ \b \f \n \r \t and \uXXXX outside the surrogate range.
func (s *scanner) readStr() (string, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return "", false
	}
	s.i++
	start := s.i
	ascii := true
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			v := s.src[start:s.i]
			s.i++
			if !ascii && !utf8.ValidString(v) {
				return "", false
			}
			return v, true
		case c == '\\':
			return s.escaped(start)
		case c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		s.i++
	}
	return "", false
}

// escaped finishes a string that has an escape at s.i, building a copy.
func (s *scanner) escaped(start int) (string, bool) {
	out := make([]byte, 0, s.i-start+16)
	out = append(out, s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			if !utf8.Valid(out) {
				return "", false
			}
			return string(out), true
		case c < 0x20:
			return "", false
		case c != '\\':
			out = append(out, c)
			s.i++
			continue
		}
		if s.i+1 >= len(s.b) {
			return "", false
		}
		e := s.b[s.i+1]
		s.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if len(s.b)-s.i < 4 {
				return "", false
			}
			var r rune
			for _, h := range s.b[s.i : s.i+4] {
				switch {
				case h >= '0' && h <= '9':
					r = r<<4 | rune(h-'0')
				case h >= 'a' && h <= 'f':
					r = r<<4 | rune(h-'a'+10)
				case h >= 'A' && h <= 'F':
					r = r<<4 | rune(h-'A'+10)
				default:
					return "", false
				}
			}
			if r >= 0xD800 && r <= 0xDFFF {
				return "", false // surrogates: leave the pairing rules to encoding/json
			}
			out = utf8.AppendRune(out, r)
			s.i += 4
		default:
			return "", false
		}
	}
	return "", false
}

// readInt reads an integer as json.Marshal writes it: "0", or an optional '-'
// and up to 19 digits not starting with 0, within the int64 range.
func (s *scanner) readInt() (int64, bool) {
	neg := s.i < len(s.b) && s.b[s.i] == '-'
	if neg {
		s.i++
	}
	start := s.i
	var v uint64
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		v = v*10 + uint64(s.b[s.i]-'0') // 19 digits fit in a uint64
		s.i++
	}
	n := s.i - start
	switch {
	case n == 0 || n > 19:
		return 0, false
	case s.b[start] == '0' && (n > 1 || neg):
		return 0, false
	case neg && v > 1<<63, !neg && v > 1<<63-1:
		return 0, false
	}
	if neg {
		return int64(-v), true // two's complement: exact for -1<<63 too
	}
	return int64(v), true
}

func (s *scanner) money(m *Money) {
	m.Minor = s.keyInt(`{"minor":`)
	m.Currency = Currency(s.keyStr(`,"currency":`))
	s.lit("}")
}

// donation reads the canonical form of a Donation.
func (s *scanner) donation(d *Donation) {
	d.ID = s.keyStr(`{"id":`)
	d.IdempotencyKey = s.keyStr(`,"idempotency_key":`)
	d.RequestHash = s.keyStr(`,"request_hash":`)
	s.lit(`,"amount":`)
	s.money(&d.Amount)
	if s.peek(`,"refunded_minor":`) {
		d.RefundedMinor = s.keyInt(`,"refunded_minor":`)
	}
	d.Status = Status(s.keyStr(`,"status":`))
	d.Provider = s.keyStr(`,"provider":`)
	d.ProviderRef = s.optStr(`,"provider_ref":`)
	d.Name = s.optStr(`,"name":`)
	d.Email = s.optStr(`,"email":`)
	d.Message = s.optStr(`,"message":`)
	d.Anonymous = s.opt(`,"anonymous":true`)
	d.CreatedAt = s.keyInt(`,"created_at":`)
	d.UpdatedAt = s.keyInt(`,"updated_at":`)
	if s.opt(`,"events":[`) {
		for {
			d.Events = append(d.Events, s.str())
			if !s.opt(",") {
				break
			}
		}
		s.lit("]")
	}
	s.lit("}")
}

func (s *scanner) command(c *Command) {
	v := s.keyInt(`{"v":`)
	if v < -1<<31 || v > 1<<31-1 {
		s.failed = true // leave int overflow to encoding/json
	}
	c.V = int(v)
	c.Kind = Kind(s.keyStr(`,"kind":`))
	switch {
	case s.opt(`,"create":`):
		c.Create = new(Create)
		s.create(c.Create)
	case s.opt(`,"payment":`):
		c.Payment = new(Payment)
		s.payment(c.Payment)
	case s.opt(`,"refund":`):
		c.Refund = new(Refund)
		s.refund(c.Refund)
	default:
		s.failed = true
	}
	s.lit("}")
}

func (s *scanner) create(x *Create) {
	x.ID = s.keyStr(`{"id":`)
	x.IdempotencyKey = s.keyStr(`,"idempotency_key":`)
	x.RequestHash = s.keyStr(`,"request_hash":`)
	s.lit(`,"amount":`)
	s.money(&x.Amount)
	x.Provider = s.keyStr(`,"provider":`)
	x.Name = s.optStr(`,"name":`)
	x.Email = s.optStr(`,"email":`)
	x.Message = s.optStr(`,"message":`)
	x.Anonymous = s.opt(`,"anonymous":true`)
	x.At = s.keyInt(`,"at":`)
	s.lit("}")
}

func (s *scanner) payment(x *Payment) {
	x.Provider = s.keyStr(`{"provider":`)
	x.EventID = s.keyStr(`,"event_id":`)
	x.DonationID = s.keyStr(`,"donation_id":`)
	x.Outcome = Outcome(s.keyStr(`,"outcome":`))
	if s.opt(`,"amount":`) {
		x.Amount = new(Money)
		s.money(x.Amount)
	}
	x.ProviderRef = s.optStr(`,"provider_ref":`)
	x.At = s.keyInt(`,"at":`)
	s.lit("}")
}

func (s *scanner) refund(x *Refund) {
	x.RefundID = s.keyStr(`{"refund_id":`)
	x.DonationID = s.keyStr(`,"donation_id":`)
	s.lit(`,"amount":`)
	s.money(&x.Amount)
	x.At = s.keyInt(`,"at":`)
	s.lit("}")
}

func (s *scanner) result(r *Result) {
	r.Code = Code(s.keyStr(`{"code":`))
	s.lit(`,"donation":`)
	s.donation(&r.Donation)
	s.lit("}")
}

// fastCommand decodes the canonical envelope; ok=false means "not
// canonical, ask encoding/json".
func fastCommand(b []byte) (Command, bool) {
	s := newScanner(b)
	var c Command
	if s.command(&c); !s.ok() {
		return Command{}, false
	}
	return c, true
}

func fastDonation(b []byte) (Donation, bool) {
	s := newScanner(b)
	var d Donation
	if s.donation(&d); !s.ok() {
		return Donation{}, false
	}
	return d, true
}

func fastResult(b []byte) (Result, bool) {
	s := newScanner(b)
	var r Result
	if s.result(&r); !s.ok() {
		return Result{}, false
	}
	return r, true
}

// AppendDonationJSON appends d encoded exactly as json.Marshal(d) would.
func AppendDonationJSON(dst []byte, d *Donation) []byte { return appendDonationJSON(dst, d) }

// DecodeDonationJSON decodes b as json.Unmarshal into a Donation would,
// with the same result and, for input it refuses, the same error.
func DecodeDonationJSON(b []byte) (Donation, error) {
	if d, ok := fastDonation(b); ok {
		return d, nil
	}
	var d Donation
	if err := json.Unmarshal(b, &d); err != nil {
		return Donation{}, err
	}
	return d, nil
}
