package donation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// EnvelopeVersion is the version of the command envelope this code writes.
// Decode accepts every version up to it; a newer one is refused, so an old
// binary never guesses at a command it does not understand.
const EnvelopeVersion = 1

// Kind names a command.
type Kind string

const (
	KindCreate  Kind = "create"
	KindPayment Kind = "payment"
	KindRefund  Kind = "refund"
)

// Limits on free-text fields, in bytes. They bound a Raft entry far below
// hashicorp/raft's SuggestedMaxDataSize.
const (
	MaxIDLen      = 64
	MaxKeyLen     = 255
	MaxNameLen    = 200
	MaxEmailLen   = 254
	MaxMessageLen = 1000
)

// Command is the versioned envelope that travels through Raft. Exactly one
// of Create, Payment and Refund is set, matching Kind.
type Command struct {
	V       int      `json:"v"`
	Kind    Kind     `json:"kind"`
	Create  *Create  `json:"create,omitempty"`
	Payment *Payment `json:"payment,omitempty"`
	Refund  *Refund  `json:"refund,omitempty"`
}

// Create records a new pending donation. Its unique key is the idempotency key.
type Create struct {
	ID             string `json:"id"`              // stamped by the proposer
	IdempotencyKey string `json:"idempotency_key"` // from the client, or stamped
	RequestHash    string `json:"request_hash"`    // hash of the request body, for 422 on reuse
	Amount         Money  `json:"amount"`
	Provider       string `json:"provider"`
	Name           string `json:"name,omitempty"`
	Email          string `json:"email,omitempty"`
	Message        string `json:"message,omitempty"`
	Anonymous      bool   `json:"anonymous,omitempty"`
	At             int64  `json:"at"` // unix nanoseconds, stamped by the proposer
}

// Outcome is what a payment event says happened.
type Outcome string

const (
	OutcomeSucceeded  Outcome = "succeeded"
	OutcomeFailed     Outcome = "failed"
	OutcomeProcessing Outcome = "processing" // informational: changes no state
)

// Payment is a verified event from a payment provider. Its unique key is
// provider + event id: the same notification delivered twice counts once.
type Payment struct {
	Provider    string  `json:"provider"`
	EventID     string  `json:"event_id"`
	DonationID  string  `json:"donation_id"`
	Outcome     Outcome `json:"outcome"`
	Amount      *Money  `json:"amount,omitempty"` // when the provider reports it, it must match
	ProviderRef string  `json:"provider_ref,omitempty"`
	At          int64   `json:"at"`
}

// Refund gives back part or all of a succeeded donation. Its unique key is the refund id.
type Refund struct {
	RefundID   string `json:"refund_id"`
	DonationID string `json:"donation_id"`
	Amount     Money  `json:"amount"`
	At         int64  `json:"at"`
}

// UniqueKey is the key the ledger deduplicates the command by.
func (c Command) UniqueKey() string {
	switch c.Kind {
	case KindCreate:
		if c.Create != nil {
			return "idem/" + c.Create.IdempotencyKey
		}
	case KindPayment:
		if c.Payment != nil {
			return "evt/" + c.Payment.Provider + "/" + c.Payment.EventID
		}
	case KindRefund:
		if c.Refund != nil {
			return "refund/" + c.Refund.RefundID
		}
	}
	return ""
}

// Encode marshals c into its envelope, stamping the current version.
func Encode(c Command) ([]byte, error) {
	c.V = EnvelopeVersion
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return appendCommandJSON(make([]byte, 0, 384), &c), nil
}

// Decode unmarshals and validates an envelope. It rejects unknown fields,
// trailing data, versions it does not know, and commands that break the
// field rules, so that the ledger only ever sees well-formed commands.
func Decode(b []byte) (Command, error) {
	// encoding/json silently replaces invalid UTF-8 with U+FFFD, so the
	// field check in Validate would never see it: refuse it here.
	if !utf8.Valid(b) {
		return Command{}, fmt.Errorf("%w: not valid UTF-8", ErrInvalidCommand)
	}
	// Our proposer writes the canonical shape, which decodes without
	// reflection; anything else takes the strict encoding/json path. Both
	// give the same Command for the same bytes (see jsoncodec.go).
	c, ok := fastCommand(b)
	if !ok {
		var err error
		if c, err = decodeStrict(b); err != nil {
			return Command{}, err
		}
	}
	if c.V < 1 || c.V > EnvelopeVersion {
		return Command{}, fmt.Errorf("%w: %d", ErrUnknownVersion, c.V)
	}
	if err := c.Validate(); err != nil {
		return Command{}, err
	}
	return c, nil
}

// decodeStrict is encoding/json with unknown fields and trailing data refused.
func decodeStrict(b []byte) (Command, error) {
	var c Command
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Command{}, fmt.Errorf("%w: %v", ErrInvalidCommand, err)
	}
	// Decoder.More reports false before a stray ']' or '}', so ask for the
	// next token instead: only io.EOF means nothing follows.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Command{}, fmt.Errorf("%w: trailing data", ErrInvalidCommand)
	}
	return c, nil
}

// Validate checks the field rules of the command.
func (c Command) Validate() error {
	set := 0
	for _, p := range []bool{c.Create != nil, c.Payment != nil, c.Refund != nil} {
		if p {
			set++
		}
	}
	if set != 1 {
		return fmt.Errorf("%w: exactly one body must be set, got %d", ErrInvalidCommand, set)
	}
	switch c.Kind {
	case KindCreate:
		if c.Create == nil {
			return fmt.Errorf("%w: create without body", ErrInvalidCommand)
		}
		return c.Create.validate()
	case KindPayment:
		if c.Payment == nil {
			return fmt.Errorf("%w: payment without body", ErrInvalidCommand)
		}
		return c.Payment.validate()
	case KindRefund:
		if c.Refund == nil {
			return fmt.Errorf("%w: refund without body", ErrInvalidCommand)
		}
		return c.Refund.validate()
	}
	return fmt.Errorf("%w: unknown kind %q", ErrInvalidCommand, c.Kind)
}

func (c *Create) validate() error {
	if err := checkText("id", c.ID, 1, MaxIDLen); err != nil {
		return err
	}
	if err := checkText("idempotency_key", c.IdempotencyKey, 1, MaxKeyLen); err != nil {
		return err
	}
	if err := checkText("request_hash", c.RequestHash, 0, 128); err != nil {
		return err
	}
	if err := c.Amount.Validate(); err != nil {
		return err
	}
	if err := checkText("provider", c.Provider, 1, 32); err != nil {
		return err
	}
	if err := checkText("name", c.Name, 0, MaxNameLen); err != nil {
		return err
	}
	if err := checkText("email", c.Email, 0, MaxEmailLen); err != nil {
		return err
	}
	return checkText("message", c.Message, 0, MaxMessageLen)
}

func (p *Payment) validate() error {
	if err := checkText("provider", p.Provider, 1, 32); err != nil {
		return err
	}
	if err := checkText("event_id", p.EventID, 1, MaxKeyLen); err != nil {
		return err
	}
	if err := checkText("donation_id", p.DonationID, 1, MaxIDLen); err != nil {
		return err
	}
	if err := checkText("provider_ref", p.ProviderRef, 0, MaxKeyLen); err != nil {
		return err
	}
	switch p.Outcome {
	case OutcomeSucceeded, OutcomeFailed, OutcomeProcessing:
	default:
		return fmt.Errorf("%w: unknown outcome %q", ErrInvalidCommand, p.Outcome)
	}
	if p.Amount != nil {
		return p.Amount.Validate()
	}
	return nil
}

func (r *Refund) validate() error {
	if err := checkText("refund_id", r.RefundID, 1, MaxKeyLen); err != nil {
		return err
	}
	if err := checkText("donation_id", r.DonationID, 1, MaxIDLen); err != nil {
		return err
	}
	return r.Amount.Validate()
}

func checkText(field, s string, min, max int) error {
	if len(s) < min || len(s) > max {
		return fmt.Errorf("%w: %s must be %d to %d bytes", ErrInvalidCommand, field, min, max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidCommand, field)
	}
	return nil
}
