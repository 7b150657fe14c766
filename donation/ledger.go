package donation

import (
	"encoding/json"
	"fmt"
)

// Code says what applying a command did. CodeOK applied it; CodeIgnored
// records the event on the donation (its key, so that a redelivery is a
// duplicate, and its time) without moving the status or the total; every
// other code leaves the state unchanged.
type Code string

const (
	CodeOK                  Code = "ok"                   // applied
	CodeDuplicate           Code = "duplicate"            // unique key seen before; nothing changed
	CodeIgnored             Code = "ignored"              // valid event that moves nothing (processing, late or backward event)
	CodeIdempotencyConflict Code = "idempotency_conflict" // idempotency key reused with another request body
	CodeNotFound            Code = "not_found"            // the donation does not exist
	CodeAmountMismatch      Code = "amount_mismatch"      // the provider reports another amount or currency
	CodeInvalidTransition   Code = "invalid_transition"   // refund of a donation that is not succeeded
	CodeRefundExceeds       Code = "refund_exceeds"       // refund larger than what is left
)

// Result is the answer of the ledger to one command: what happened and the
// donation as it stands afterwards (zero when CodeNotFound).
type Result struct {
	Code     Code     `json:"code"`
	Donation Donation `json:"donation"`
}

// Encode and DecodeResult carry a Result across a forwarding hop.
// The bytes are those of json.Marshal(r), written without reflection.
func (r Result) Encode() ([]byte, error) { return appendResultJSON(make([]byte, 0, 512), &r), nil }

// DecodeResult is the inverse of Result.Encode.
func DecodeResult(b []byte) (Result, error) {
	if r, ok := fastResult(b); ok {
		return r, nil
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return Result{}, fmt.Errorf("decode result: %w", err)
	}
	return r, nil
}

// State is the read side the ledger needs. storage implements it over a
// Badger transaction; tests implement it over a map.
type State interface {
	// Donation returns the donation with id, ok=false when there is none.
	Donation(id string) (Donation, bool, error)
	// Key returns the donation id recorded under a unique key.
	Key(key string) (string, bool, error)
}

// Effects is what a command changes, to be written in one transaction
// together with the applied index. Keys are written in slice order.
type Effects struct {
	Put   *Donation // the donation to store, if it changed
	Keys  []string  // unique keys to record, each mapping to Put.ID (or DonationID)
	KeyID string    // the donation id the Keys point at
	Delta Delta     // change of the public total
}

// Delta changes the total of one currency.
type Delta struct {
	Currency  Currency
	Raised    int64
	Donations int64
}

// Empty reports whether Effects writes nothing.
func (e Effects) Empty() bool { return e.Put == nil && len(e.Keys) == 0 }

// Decide applies the ledger rules to cmd against s. It is deterministic and
// does no I/O beyond reading s. An error means cmd is malformed
// (ErrInvalidCommand, ErrInvalidAmount, ErrUnknownCurrency: Decode never
// returns such a command) or s failed to read; rule violations are reported
// in Result.Code with empty Effects.
func Decide(s State, cmd Command) (Result, Effects, error) {
	if err := cmd.Validate(); err != nil {
		return Result{}, Effects{}, err
	}
	switch cmd.Kind {
	case KindCreate:
		return decideCreate(s, cmd.UniqueKey(), cmd.Create)
	case KindPayment:
		return decidePayment(s, cmd.UniqueKey(), cmd.Payment)
	case KindRefund:
		return decideRefund(s, cmd.UniqueKey(), cmd.Refund)
	}
	return Result{}, Effects{}, fmt.Errorf("%w: unknown kind %q", ErrInvalidCommand, cmd.Kind)
}

// seen looks up a unique key and loads the donation it points at.
func seen(s State, key string) (Donation, bool, error) {
	id, ok, err := s.Key(key)
	if err != nil || !ok {
		return Donation{}, false, err
	}
	d, ok, err := s.Donation(id)
	if err != nil {
		return Donation{}, false, err
	}
	if !ok {
		return Donation{}, false, fmt.Errorf("key %q points at missing donation %q", key, id)
	}
	return d, true, nil
}

func decideCreate(s State, key string, c *Create) (Result, Effects, error) {
	if d, ok, err := seen(s, key); err != nil || ok {
		if err != nil {
			return Result{}, Effects{}, err
		}
		if d.RequestHash != c.RequestHash {
			return Result{Code: CodeIdempotencyConflict, Donation: d}, Effects{}, nil
		}
		return Result{Code: CodeDuplicate, Donation: d}, Effects{}, nil
	}
	if d, ok, err := s.Donation(c.ID); err != nil || ok {
		if err != nil {
			return Result{}, Effects{}, err
		}
		// Same ID under another key: the proposer reused an ID, which only a
		// replayed command can do. Treat it as the duplicate it is.
		return Result{Code: CodeDuplicate, Donation: d}, Effects{}, nil
	}
	d := Donation{
		ID:             c.ID,
		IdempotencyKey: c.IdempotencyKey,
		RequestHash:    c.RequestHash,
		Amount:         c.Amount,
		Status:         StatusPending,
		Provider:       c.Provider,
		Name:           c.Name,
		Email:          c.Email,
		Message:        c.Message,
		Anonymous:      c.Anonymous,
		CreatedAt:      c.At,
		UpdatedAt:      c.At,
	}
	return Result{Code: CodeOK, Donation: d}, Effects{Put: &d, Keys: []string{key}, KeyID: d.ID}, nil
}

func decidePayment(s State, key string, p *Payment) (Result, Effects, error) {
	if d, ok, err := seen(s, key); err != nil || ok {
		if err != nil {
			return Result{}, Effects{}, err
		}
		return Result{Code: CodeDuplicate, Donation: d}, Effects{}, nil
	}
	d, ok, err := s.Donation(p.DonationID)
	if err != nil {
		return Result{}, Effects{}, err
	}
	if !ok {
		return Result{Code: CodeNotFound}, Effects{}, nil
	}
	if p.Amount != nil && *p.Amount != d.Amount {
		return Result{Code: CodeAmountMismatch, Donation: d}, Effects{}, nil
	}
	next := d
	next.Events = withEvent(d.Events, key)
	next.UpdatedAt = p.At
	if p.ProviderRef != "" && next.ProviderRef == "" {
		next.ProviderRef = p.ProviderRef
	}
	eff := Effects{Put: &next, Keys: []string{key}, KeyID: d.ID}
	target := Status(p.Outcome)
	if p.Outcome == OutcomeProcessing || !d.Status.CanMoveTo(target) {
		// A processing notice, a late event after a final state, or an
		// event that would move backward: remember the key so that the
		// redelivery is a duplicate, change nothing else.
		next.Status = d.Status
		return Result{Code: CodeIgnored, Donation: next}, eff, nil
	}
	next.Status = target
	if target == StatusSucceeded {
		eff.Delta = Delta{Currency: d.Amount.Currency, Raised: d.Amount.Minor, Donations: 1}
	}
	return Result{Code: CodeOK, Donation: next}, eff, nil
}

func decideRefund(s State, key string, r *Refund) (Result, Effects, error) {
	if d, ok, err := seen(s, key); err != nil || ok {
		if err != nil {
			return Result{}, Effects{}, err
		}
		return Result{Code: CodeDuplicate, Donation: d}, Effects{}, nil
	}
	d, ok, err := s.Donation(r.DonationID)
	if err != nil {
		return Result{}, Effects{}, err
	}
	if !ok {
		return Result{Code: CodeNotFound}, Effects{}, nil
	}
	if d.Status != StatusSucceeded {
		return Result{Code: CodeInvalidTransition, Donation: d}, Effects{}, nil
	}
	if r.Amount.Currency != d.Amount.Currency {
		return Result{Code: CodeAmountMismatch, Donation: d}, Effects{}, nil
	}
	left := d.Amount.Minor - d.RefundedMinor
	if r.Amount.Minor > left {
		return Result{Code: CodeRefundExceeds, Donation: d}, Effects{}, nil
	}
	next := d
	next.Events = withEvent(d.Events, key)
	next.RefundedMinor += r.Amount.Minor
	next.UpdatedAt = r.At
	delta := Delta{Currency: d.Amount.Currency, Raised: -r.Amount.Minor}
	if next.RefundedMinor == d.Amount.Minor {
		next.Status = StatusRefunded
		delta.Donations = -1
	}
	return Result{Code: CodeOK, Donation: next}, Effects{Put: &next, Keys: []string{key}, KeyID: d.ID, Delta: delta}, nil
}

// MaxRecordedEvents bounds the event keys a donation record lists. Every
// event is still deduplicated by its key (the key index maps it to the
// donation); past the bound the list stops growing, so a gateway that sends
// one donation endless distinct notices cannot grow its record, and the
// cost of rewriting it at every event, without limit.
const MaxRecordedEvents = 64

// withEvent returns events with key appended, in a new slice (the record
// that was read is never written into), or events itself when the record
// already lists MaxRecordedEvents.
func withEvent(events []string, key string) []string {
	if len(events) >= MaxRecordedEvents {
		return events
	}
	return append(append(make([]string, 0, len(events)+1), events...), key)
}
