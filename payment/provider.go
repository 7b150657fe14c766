package payment

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/surgefund/surge/donation"
)

// Sentinel errors callers branch on.
var (
	// ErrBadSignature: a notification whose signature is missing, malformed or wrong.
	ErrBadSignature = errors.New("bad signature")
	// ErrStale: a notification signed outside the timestamp window (replay).
	ErrStale = errors.New("stale notification")
	// ErrMalformed: a notification or return whose content cannot be parsed.
	ErrMalformed = errors.New("malformed payment message")
	// ErrNotSupported: the provider does not offer this operation (for
	// example Lookup on a push-only gateway).
	ErrNotSupported = errors.New("not supported by provider")
	// ErrUnknownProvider: no provider is registered under that name.
	ErrUnknownProvider = errors.New("unknown payment provider")
)

// CheckoutRequest is what a provider needs to start a payment for a
// pending donation that has already been committed.
type CheckoutRequest struct {
	DonationID  string
	Amount      donation.Money
	Description string
	ReturnURL   string // absolute URL the donor's browser comes back to
	NotifyURL   string // absolute URL the gateway posts notifications to
}

// Checkout is where to send the donor.
type Checkout struct {
	URL string // absolute URL of the hosted payment page
	Ref string // provider's reference for the payment, if it has one yet
}

// Event is a verified statement by the provider about one payment.
type Event struct {
	EventID     string // unique per provider; the ledger deduplicates on it
	DonationID  string
	Outcome     donation.Outcome
	Amount      *donation.Money // nil when the provider does not report it
	ProviderRef string
	At          time.Time
}

// ReturnHint is what the donor's browser brings back. It is a hint and
// never proof: the caller confirms it by Lookup or by waiting for the
// signed notification.
type ReturnHint struct {
	DonationID string
	Outcome    donation.Outcome // what the browser claims; may be empty
}

// Provider is one payment gateway. It fits both gateways that push signed
// notifications (Stripe style: VerifyNotification) and gateways that must be
// asked for the status after the redirect (DubaiPay style: Lookup).
type Provider interface {
	// Name is the path segment under /payments/{provider}/.
	Name() string
	// Checkout starts a payment and returns where to send the donor.
	Checkout(ctx context.Context, req CheckoutRequest) (Checkout, error)
	// VerifyNotification checks the signature and timestamp of a
	// server-to-server notification and returns the events it carries.
	// It returns ErrBadSignature, ErrStale or ErrMalformed for bad input.
	VerifyNotification(h http.Header, body []byte, now time.Time) ([]Event, error)
	// ParseReturn reads the browser's return query.
	ParseReturn(q url.Values) (ReturnHint, error)
	// Lookup asks the gateway for the current status of a payment.
	// Push-only providers return ErrNotSupported.
	Lookup(ctx context.Context, donationID, ref string) (Event, error)
}

// HostedPages is implemented by providers that serve their own payment
// pages from the node (the dev test gateway). The web package mounts the
// handler under Prefix.
type HostedPages interface {
	Prefix() string
	Handler() http.Handler
}
