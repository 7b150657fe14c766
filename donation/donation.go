package donation

import "errors"

// Sentinel errors callers branch on.
var (
	ErrUnknownCurrency = errors.New("unknown currency")
	ErrInvalidAmount   = errors.New("invalid amount")
	ErrInvalidCommand  = errors.New("invalid command")
	ErrUnknownVersion  = errors.New("unknown command envelope version")
)

// Status is where a donation stands. Transitions only move forward:
//
//	pending -> succeeded | failed
//	succeeded -> refunded (a partial refund keeps succeeded with RefundedMinor > 0)
type Status string

const (
	StatusPending   Status = "pending"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusRefunded  Status = "refunded"
)

// Valid reports whether s is one of the four states.
func (s Status) Valid() bool {
	switch s {
	case StatusPending, StatusSucceeded, StatusFailed, StatusRefunded:
		return true
	}
	return false
}

// Final reports whether no payment event can move s any further
// (only a refund can still move a succeeded donation).
func (s Status) Final() bool { return s != StatusPending }

// CanMoveTo reports whether the transition s -> next is allowed.
func (s Status) CanMoveTo(next Status) bool {
	switch s {
	case StatusPending:
		return next == StatusSucceeded || next == StatusFailed
	case StatusSucceeded:
		return next == StatusRefunded
	}
	return false
}

// Donation is the replicated record of one gift. Personal fields (Name,
// Email, Message) never leave the node through the public API.
type Donation struct {
	ID             string   `json:"id"`
	IdempotencyKey string   `json:"idempotency_key"`
	RequestHash    string   `json:"request_hash"`
	Amount         Money    `json:"amount"`
	RefundedMinor  int64    `json:"refunded_minor,omitempty"`
	Status         Status   `json:"status"`
	Provider       string   `json:"provider"`
	ProviderRef    string   `json:"provider_ref,omitempty"`
	Name           string   `json:"name,omitempty"`
	Email          string   `json:"email,omitempty"`
	Message        string   `json:"message,omitempty"`
	Anonymous      bool     `json:"anonymous,omitempty"`
	CreatedAt      int64    `json:"created_at"` // unix nanoseconds, stamped by the proposer
	UpdatedAt      int64    `json:"updated_at"`
	Events         []string `json:"events,omitempty"` // unique keys applied to this donation, in log order; the first MaxRecordedEvents
}

// Counted reports whether the donation is part of the public total, and
// with how much: confirmed money minus refunds.
func (d Donation) Counted() (int64, bool) {
	if d.Status != StatusSucceeded {
		return 0, false
	}
	return d.Amount.Minor - d.RefundedMinor, true
}

// Totals is the public total of one currency: confirmed money minus refunds,
// and the number of donations included in it.
type Totals struct {
	Currency    Currency `json:"currency"`
	RaisedMinor int64    `json:"raised_minor"`
	Donations   int64    `json:"donations"`
}
