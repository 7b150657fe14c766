package payment

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/surgefund/surge/donation"
)

// Limits on what a signature header may hold.
const (
	maxSignatureHeader = 1024 // bytes
	maxSignatures      = 8    // v1= values, for key rotation
)

// Sign returns the Surge-Signature header value for body signed at t with
// secret: "t=<unix seconds>,v1=<hex hmac-sha256(secret, "<t>.<body>")>".
// It is Stripe's webhook scheme; exported so that tests of other packages
// can forge and verify notifications.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(signature(secret, ts, body))
}

func signature(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// verifySignature checks the header against body on the raw bytes, before
// any parsing of the body. The signature is checked before the timestamp,
// so ErrStale always means "authentic but outside the window".
func verifySignature(secret []byte, h http.Header, body []byte, now time.Time, window time.Duration) error {
	vals := h.Values(SignatureHeader)
	switch {
	case len(vals) == 0 || vals[0] == "":
		return fmt.Errorf("%w: missing %s header", ErrBadSignature, SignatureHeader)
	case len(vals) > 1:
		return fmt.Errorf("%w: more than one %s header", ErrBadSignature, SignatureHeader)
	case len(vals[0]) > maxSignatureHeader:
		return fmt.Errorf("%w: header longer than %d bytes", ErrBadSignature, maxSignatureHeader)
	}
	var (
		ts   string
		sigs [][]byte
	)
	for item := range strings.SplitSeq(vals[0], ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return fmt.Errorf("%w: malformed header", ErrBadSignature)
		}
		switch k {
		case "t":
			if ts != "" {
				return fmt.Errorf("%w: more than one timestamp", ErrBadSignature)
			}
			if v == "" || len(v) > 19 || !allDigits(v) {
				return fmt.Errorf("%w: malformed timestamp", ErrBadSignature)
			}
			ts = v
		case "v1":
			if len(sigs) == maxSignatures {
				return fmt.Errorf("%w: more than %d signatures", ErrBadSignature, maxSignatures)
			}
			s, err := hex.DecodeString(v)
			if err != nil || len(s) != 32 {
				return fmt.Errorf("%w: malformed v1 signature", ErrBadSignature)
			}
			sigs = append(sigs, s)
		default:
			// Other schemes (v0, future ones) are ignored, as Stripe does.
		}
	}
	if ts == "" {
		return fmt.Errorf("%w: no timestamp", ErrBadSignature)
	}
	if len(sigs) == 0 {
		return fmt.Errorf("%w: no v1 signature", ErrBadSignature)
	}
	want := signature(secret, ts, body)
	ok := false
	for _, s := range sigs {
		// Compare every value in constant time; any match authenticates
		// (several values let a sender sign with an old and a new key).
		if hmac.Equal(s, want) {
			ok = true
		}
	}
	if !ok {
		return fmt.Errorf("%w: no matching v1 signature", ErrBadSignature)
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp out of range", ErrBadSignature)
	}
	// t >= 0, so now-t cannot overflow for any clock after 1970.
	age := now.Unix() - t
	if age < 0 {
		age = -age
	}
	if age > int64(window/time.Second) {
		return fmt.Errorf("%w: signed at %d, now %d, window %s", ErrStale, t, now.Unix(), window)
	}
	return nil
}

// Notification types on the wire.
const (
	typeSucceeded  = "payment.succeeded"
	typeFailed     = "payment.failed"
	typeProcessing = "payment.processing"
)

// maxCreated bounds the created timestamp (year 2255) so that the event
// time always fits time.Time.UnixNano.
const maxCreated = 9_000_000_000

// notification is the JSON body the gateway posts.
type notification struct {
	ID          string         `json:"id"`
	Type        string         `json:"type"`
	DonationID  string         `json:"donation_id"`
	Amount      donation.Money `json:"amount"`
	ProviderRef string         `json:"provider_ref"`
	Created     int64          `json:"created"`
}

func typeOf(o donation.Outcome) string { return "payment." + string(o) }

// decodeNotification parses body strictly: valid UTF-8, no unknown fields,
// no trailing data, every field present and within the ledger's limits, so
// the events it returns always make a valid donation.Payment.
func decodeNotification(body []byte) (Event, error) {
	if !utf8.Valid(body) {
		return Event{}, fmt.Errorf("%w: not valid UTF-8", ErrMalformed)
	}
	var n notification
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&n); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Event{}, fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	var o donation.Outcome
	switch n.Type {
	case typeSucceeded:
		o = donation.OutcomeSucceeded
	case typeFailed:
		o = donation.OutcomeFailed
	case typeProcessing:
		o = donation.OutcomeProcessing
	default:
		return Event{}, fmt.Errorf("%w: unknown type %q", ErrMalformed, n.Type)
	}
	switch {
	case !validID(n.ID, donation.MaxKeyLen):
		return Event{}, fmt.Errorf("%w: id missing or invalid", ErrMalformed)
	case !validID(n.DonationID, donation.MaxIDLen):
		return Event{}, fmt.Errorf("%w: donation_id missing or invalid", ErrMalformed)
	case !validID(n.ProviderRef, donation.MaxKeyLen):
		return Event{}, fmt.Errorf("%w: provider_ref missing or invalid", ErrMalformed)
	case n.Created <= 0 || n.Created > maxCreated:
		return Event{}, fmt.Errorf("%w: created missing or out of range", ErrMalformed)
	}
	if err := n.Amount.Validate(); err != nil {
		return Event{}, fmt.Errorf("%w: amount: %w", ErrMalformed, err)
	}
	amt := n.Amount
	return Event{
		EventID:     n.ID,
		DonationID:  n.DonationID,
		Outcome:     o,
		Amount:      &amt,
		ProviderRef: n.ProviderRef,
		At:          time.Unix(n.Created, 0).UTC(),
	}, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
