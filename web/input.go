package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/surgefund/surge/donation"
)

// Body limits.
const (
	maxAPIBody    = 16 << 10 // POST /api/v1/donations
	maxFormBody   = 16 << 10 // POST /donate
	maxNotifyBody = 64 << 10 // POST /payments/{p}/notify and hosted gateway pages
)

// donationInput is a validated request to give: the same for the JSON API
// and the HTML form.
type donationInput struct {
	Amount    int64
	Currency  donation.Currency
	Name      string
	Email     string
	Message   string
	Anonymous bool
}

// requestHash is the SHA-256 of a canonical encoding of the input, so that
// the same gift sent with other whitespace, key order or letter case of the
// currency hashes the same, and a different gift under a reused
// idempotency key does not.
func (in donationInput) requestHash() string {
	canon := struct {
		Amount    int64  `json:"amount_minor"`
		Currency  string `json:"currency"`
		Name      string `json:"name"`
		Email     string `json:"email"`
		Anonymous bool   `json:"anonymous"`
		Message   string `json:"message"`
	}{in.Amount, string(in.Currency), in.Name, in.Email, in.Anonymous, in.Message}
	b, _ := json.Marshal(canon) // cannot fail: strings and numbers only
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// readBody reads at most limit bytes of the request body; more is a 413.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, &Error{Code: CodeBodyTooLarge, Message: fmt.Sprintf("The request body is larger than %d bytes.", limit)}
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, &Error{Code: CodeBadRequest, Message: "The request body could not be read.", Err: err}
	}
	if int64(len(b)) > limit {
		return nil, &Error{Code: CodeBodyTooLarge, Message: fmt.Sprintf("The request body is larger than %d bytes.", limit)}
	}
	return b, nil
}

// requireMediaType checks the Content-Type against want (415 otherwise).
// A charset parameter, if present, must be UTF-8.
func requireMediaType(r *http.Request, want string) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return &Error{Code: CodeUnsupportedMediaType, Message: "Content-Type must be " + want + "."}
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != want {
		return &Error{Code: CodeUnsupportedMediaType, Message: "Content-Type must be " + want + "."}
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return &Error{Code: CodeUnsupportedMediaType, Message: "The body must be encoded in UTF-8."}
	}
	return nil
}

// idempotencyKey reads the optional Idempotency-Key header: 1 to 255
// printable ASCII characters.
func idempotencyKey(r *http.Request) (string, error) {
	vs := r.Header.Values("Idempotency-Key")
	if len(vs) == 0 {
		return "", nil
	}
	if len(vs) > 1 {
		return "", &Error{Code: CodeInvalidIdempotencyKey, Message: "Send at most one Idempotency-Key header."}
	}
	if !validKey(vs[0]) {
		return "", &Error{Code: CodeInvalidIdempotencyKey, Message: "Idempotency-Key must be 1 to 255 printable ASCII characters."}
	}
	return vs[0], nil
}

func validKey(k string) bool {
	if len(k) < 1 || len(k) > donation.MaxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// validID checks a donation id from a path or query: 1 to 64 of
// [A-Za-z0-9_-]. Anything else never reaches the ledger.
func validID(id string) bool {
	if len(id) < 1 || len(id) > donation.MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// apiFields are the keys POST /api/v1/donations accepts, matched exactly
// (encoding/json alone would match them case-insensitively).
var apiFields = map[string]bool{"amount_minor": true, "currency": true, "name": true, "email": true, "anonymous": true, "message": true}

// decodeDonationJSON decodes the body of POST /api/v1/donations strictly:
// one JSON object, no unknown or wrongly typed fields, no trailing data,
// required fields present and not null. It leaves the rules about values
// (range, currency, e-mail) to checkInput.
func decodeDonationJSON(body []byte) (donationInput, rawAmount, error) {
	var in donationInput
	if len(bytes.TrimSpace(body)) == 0 {
		return in, "", &Error{Code: CodeInvalidJSON, Message: "The request body is empty; send a JSON object."}
	}
	if !utf8.Valid(body) {
		return in, "", &Error{Code: CodeInvalidJSON, Message: "The request body is not valid UTF-8."}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var fields map[string]json.RawMessage
	if err := dec.Decode(&fields); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return in, "", &Error{Code: CodeInvalidJSON, Message: "The request body must be a JSON object."}
		}
		return in, "", &Error{Code: CodeInvalidJSON, Message: "The request body is not valid JSON: " + strings.TrimPrefix(err.Error(), "json: ") + "."}
	}
	if fields == nil {
		return in, "", &Error{Code: CodeInvalidJSON, Message: "The request body must be a JSON object."}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return in, "", &Error{Code: CodeInvalidJSON, Message: "The request body has data after the JSON object."}
	}
	for k := range fields {
		if !apiFields[k] {
			return in, "", &Error{Code: CodeInvalidField, Message: fmt.Sprintf("Unknown field %q.", truncate(k, 40))}
		}
	}
	amount, err := amountField(fields["amount_minor"])
	if err != nil {
		return in, "", err
	}
	cur, err := stringField(fields, "currency", true)
	if err != nil {
		return in, "", err
	}
	in.Currency = donation.Currency(cur)
	if in.Email, err = stringField(fields, "email", true); err != nil {
		return in, "", err
	}
	if in.Name, err = stringField(fields, "name", false); err != nil {
		return in, "", err
	}
	if in.Message, err = stringField(fields, "message", false); err != nil {
		return in, "", err
	}
	if raw, ok := fields["anonymous"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &in.Anonymous); err != nil {
			return in, "", &Error{Code: CodeInvalidField, Message: "anonymous must be true or false."}
		}
	}
	return in, amount, nil
}

// rawAmount is amount_minor as the client wrote it: an integer literal,
// not yet checked against int64 or the campaign's limits.
type rawAmount string

func amountField(raw json.RawMessage) (rawAmount, error) {
	if raw == nil || isNull(raw) {
		return "", &Error{Code: CodeInvalidField, Message: "amount_minor is required: an integer number of minor units (cents)."}
	}
	s := string(raw)
	if s[0] != '-' && (s[0] < '0' || s[0] > '9') {
		return "", &Error{Code: CodeInvalidField, Message: "amount_minor must be a number, not " + jsonType(s) + "."}
	}
	digits := strings.TrimPrefix(s, "-")
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return "", &Error{Code: CodeInvalidField, Message: "amount_minor must be an integer number of minor units (cents), not a fraction or exponent."}
		}
	}
	return rawAmount(s), nil
}

func stringField(fields map[string]json.RawMessage, name string, required bool) (string, error) {
	raw, ok := fields[name]
	if !ok || isNull(raw) {
		if required {
			return "", &Error{Code: CodeInvalidField, Message: name + " is required."}
		}
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", &Error{Code: CodeInvalidField, Message: name + " must be a string, not " + jsonType(string(raw)) + "."}
	}
	return s, nil
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

func jsonType(s string) string {
	switch {
	case s == "":
		return "empty"
	case s[0] == '"':
		return "a string"
	case s == "true" || s == "false":
		return "a boolean"
	case s[0] == '{':
		return "an object"
	case s[0] == '[':
		return "an array"
	case s == "null":
		return "null"
	}
	return "a number"
}

// checkInput applies the campaign's rules to a decoded request. amount is
// the raw integer literal (JSON) or the already parsed minor units (form).
func (c *Campaign) checkInput(in *donationInput, amount rawAmount) error {
	if amount != "" {
		v, err := strconv.ParseInt(string(amount), 10, 64)
		if err != nil {
			return &Error{Code: CodeInvalidAmount, Message: c.amountRange("The amount is out of range.")}
		}
		in.Amount = v
	}
	if in.Currency == "" {
		in.Currency = c.Currency
	}
	cur, err := donation.ParseCurrency(string(in.Currency))
	if err != nil {
		return &Error{Code: CodeUnknownCurrency, Message: fmt.Sprintf("%q is not an ISO 4217 currency code we know.", truncate(string(in.Currency), 12))}
	}
	if cur != c.Currency {
		return &Error{Code: CodeCurrencyNotAccepted, Message: fmt.Sprintf("This campaign accepts %s only.", c.Currency)}
	}
	in.Currency = cur
	if in.Amount < c.MinMinor || in.Amount > c.MaxMinor {
		return &Error{Code: CodeInvalidAmount, Message: c.amountRange("")}
	}
	in.Email = strings.TrimSpace(in.Email)
	if in.Email == "" {
		return &Error{Code: CodeInvalidEmail, Message: "Please enter your e-mail address, for your receipt."}
	}
	if err := checkEmail(in.Email); err != nil {
		return &Error{Code: CodeInvalidEmail, Message: "Please enter a valid e-mail address, such as name@example.org."}
	}
	in.Name = strings.TrimSpace(in.Name)
	if err := checkFreeText(in.Name, donation.MaxNameLen, false); err != nil {
		return &Error{Code: CodeInvalidName, Message: "Name " + err.Error() + "."}
	}
	in.Message = strings.TrimSpace(in.Message)
	if err := checkFreeText(in.Message, donation.MaxMessageLen, true); err != nil {
		return &Error{Code: CodeInvalidMessage, Message: "Message " + err.Error() + "."}
	}
	return nil
}

func (c *Campaign) amountRange(prefix string) string {
	msg := fmt.Sprintf("Please give between %s and %s.", formatMoney(c.MinMinor, c.Currency), formatMoney(c.MaxMinor, c.Currency))
	if prefix != "" {
		return prefix + " " + msg
	}
	return msg
}

// checkFreeText bounds a donor's text in bytes (the ledger's limit), and
// refuses invalid UTF-8 and control characters (newlines only where
// multiline is allowed).
func checkFreeText(s string, maxBytes int, multiline bool) error {
	if len(s) > maxBytes {
		return fmt.Errorf("must be at most %d bytes", maxBytes)
	}
	if !utf8.ValidString(s) {
		return errors.New("is not valid UTF-8")
	}
	for _, r := range s {
		if r == utf8.RuneError {
			return errors.New("is not valid UTF-8")
		}
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\r' || r == '\t')) {
			return errors.New("must not contain control characters")
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
