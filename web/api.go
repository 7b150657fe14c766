package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/surgefund/surge/donation"
	"github.com/surgefund/surge/payment"
)

// proposeTimeout bounds one write through the cluster, on top of the
// cluster's own hold through an election.
const proposeTimeout = 15 * time.Second

var (
	ctypeJSON  = []string{"application/json"}
	cacheTotal = []string{"public, max-age=1"}
	noStore    = []string{cacheNone}
)

// totalBody is the encoded answer of GET /api/v1/total for one Totals
// value, reused until the total changes.
type totalBody struct {
	t      donation.Totals
	body   []byte
	length []string
}

type totalJSON struct {
	Currency      donation.Currency `json:"currency"`
	RaisedMinor   int64             `json:"raised_minor"`
	GoalMinor     int64             `json:"goal_minor"`
	Donations     int64             `json:"donations"`
	Percent       int64             `json:"percent"`
	RaisedDisplay string            `json:"raised_display"`
	GoalDisplay   string            `json:"goal_display"`
}

func (s *Server) encodeTotal(t donation.Totals) *totalBody {
	v := newTotalView(&s.campaign, t)
	b, _ := json.Marshal(totalJSON{
		Currency:      s.campaign.Currency,
		RaisedMinor:   v.RaisedMinor,
		GoalMinor:     v.GoalMinor,
		Donations:     v.Count,
		Percent:       v.Percent,
		RaisedDisplay: v.Raised,
		GoalDisplay:   v.Goal,
	})
	b = append(b, '\n')
	return &totalBody{t: t, body: b, length: []string{strconv.Itoa(len(b))}}
}

// handleTotal serves GET /api/v1/total from local state. The encoded body
// is cached until the total changes, so the common case allocates nothing.
func (s *Server) handleTotal(c echo.Context) error {
	tb := s.currentTotal()
	w := c.Response()
	tb.setHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
	if c.Request().Method != http.MethodHead {
		_, _ = w.Write(tb.body)
	}
	return nil
}

// currentTotal is the encoded total for the ledger's totals now. The hot
// path (hot.go) answers from it too.
func (s *Server) currentTotal() *totalBody {
	t := s.ledger.Totals(s.campaign.Currency)
	tb := s.total.Load()
	if tb == nil || tb.t != t {
		tb = s.encodeTotal(t)
		s.total.Store(tb)
	}
	return tb
}

// setHeaders sets the headers of a 200 answer with this body.
func (tb *totalBody) setHeaders(h http.Header) {
	h["Content-Type"] = ctypeJSON
	h["Cache-Control"] = cacheTotal
	h["Content-Length"] = tb.length
}

type donationJSON struct {
	ID          string            `json:"id"`
	Status      donation.Status   `json:"status"`
	AmountMinor int64             `json:"amount_minor"`
	Currency    donation.Currency `json:"currency"`
	CheckoutURL string            `json:"checkout_url,omitempty"`
}

// handleCreate serves POST /api/v1/donations.
func (s *Server) handleCreate(c echo.Context) error {
	r := c.Request()
	if err := s.admit(r); err != nil {
		return err
	}
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	if err := requireMediaType(r, "application/json"); err != nil {
		return err
	}
	body, err := readBody(r, maxAPIBody)
	if err != nil {
		return err
	}
	in, amount, err := decodeDonationJSON(body)
	if err != nil {
		return err
	}
	if err := s.campaign.checkInput(&in, amount); err != nil {
		return err
	}
	d, checkoutURL, err := s.create(r.Context(), in, key)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h["Cache-Control"] = noStore
	h.Set("Location", "/api/v1/donations/"+d.ID)
	return c.JSON(http.StatusCreated, donationJSON{
		ID: d.ID, Status: d.Status, AmountMinor: d.Amount.Minor, Currency: d.Amount.Currency, CheckoutURL: checkoutURL,
	})
}

// handleDonation serves GET /api/v1/donations/:id: the status only, no
// personal data.
func (s *Server) handleDonation(c echo.Context) error {
	id := c.Param("id")
	if !validID(id) {
		return &Error{Code: CodeInvalidID, Message: "A donation id is 1 to 64 letters, digits, '-' or '_'."}
	}
	d, ok, err := s.ledger.Donation(id)
	if err != nil {
		return fmt.Errorf("read donation: %w", err)
	}
	if !ok {
		return &Error{Code: CodeNotFound, Message: "There is no donation with this id."}
	}
	c.Response().Header()["Cache-Control"] = noStore
	return c.JSON(http.StatusOK, donationJSON{ID: d.ID, Status: d.Status, AmountMinor: d.Amount.Minor, Currency: d.Amount.Currency})
}

// admit applies the checks every donation creation passes first: the
// browser's cross-origin signals and the per-client rate limit. Failed
// attempts count against the limit too: card testers fail a lot.
func (s *Server) admit(r *http.Request) error {
	if err := s.cop.Check(r); err != nil {
		return &Error{Code: CodeCrossOrigin, Message: "Cross-origin requests to create donations are refused."}
	}
	if e := s.rateLimit(r); e != nil {
		return e
	}
	return nil
}

// rateLimit takes a token from the client's bucket, or says how long to wait.
func (s *Server) rateLimit(r *http.Request) *Error {
	if s.limiter == nil {
		return nil
	}
	if ok, wait := s.limiter.allow(clientIP(r, s.edge.trusted)); !ok {
		secs := int((wait + time.Second - 1) / time.Second)
		return &Error{Code: CodeRateLimited, Message: "Too many donation attempts from your network. Please wait a moment and try again.", RetryAfter: max(secs, 1)}
	}
	return nil
}

// NewID returns a fresh donation ID or idempotency key: a version 7 UUID,
// which starts with the time in milliseconds and has 74 random bits. The
// state machine stores donations and keys under these IDs, so IDs that grow
// with time land at the end of Badger's key space: compactions rewrite the
// newest tables instead of every table of a level, as random (version 4)
// IDs made them do (BENCHMARKS.md §0a: 14-24 % less CPU per create once the
// store holds a few hundred thousand donations). The time it reveals, to
// the donor who holds the ID, is when the donation was made.
func NewID() (string, error) {
	u, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("new donation id: %w", err)
	}
	return u.String(), nil
}

// create commits a new pending donation and starts its checkout. A
// duplicate (same idempotency key and body) returns the original donation.
// checkoutURL is empty when the donation is no longer pending.
func (s *Server) create(ctx context.Context, in donationInput, key string) (d donation.Donation, checkoutURL string, err error) {
	id, err := NewID()
	if err != nil {
		return d, "", err
	}
	if key == "" {
		if key, err = NewID(); err != nil {
			return d, "", err
		}
	}
	cmd := donation.Command{Kind: donation.KindCreate, Create: &donation.Create{
		ID:             id,
		IdempotencyKey: key,
		RequestHash:    in.requestHash(),
		Amount:         donation.Money{Minor: in.Amount, Currency: in.Currency},
		Provider:       s.cfg.DefaultProvider,
		Name:           in.Name,
		Email:          in.Email,
		Message:        in.Message,
		Anonymous:      in.Anonymous,
		At:             time.Now().UnixNano(),
	}}
	res, err := s.propose(ctx, cmd)
	if err != nil {
		return d, "", err
	}
	switch res.Code {
	case donation.CodeOK, donation.CodeDuplicate:
	case donation.CodeIdempotencyConflict:
		return d, "", &Error{Code: CodeIdempotencyKeyReused, Message: "This Idempotency-Key was already used for a different donation."}
	default:
		return d, "", fmt.Errorf("create donation: unexpected ledger answer %q", res.Code)
	}
	d = res.Donation
	if d.Status != donation.StatusPending {
		return d, "", nil
	}
	checkoutURL, err = s.checkout(ctx, d)
	return d, checkoutURL, err
}

// checkout asks the donation's provider where to send the donor.
func (s *Server) checkout(ctx context.Context, d donation.Donation) (string, error) {
	p, ok := s.providers[d.Provider]
	if !ok {
		return "", &Error{Code: CodeGatewayUnavailable, Message: "The payment service of this donation is not available.",
			RetryAfter: 5, Err: fmt.Errorf("checkout: %w: %q", payment.ErrUnknownProvider, d.Provider)}
	}
	base := s.publicURL + "/payments/" + p.Name()
	co, err := p.Checkout(ctx, payment.CheckoutRequest{
		DonationID:  d.ID,
		Amount:      d.Amount,
		Description: s.campaign.Name,
		ReturnURL:   base + "/return",
		NotifyURL:   base + "/notify",
	})
	if err == nil {
		var u *url.URL
		if u, err = url.Parse(co.URL); err == nil && (u.Scheme != "http" && u.Scheme != "https" || u.Host == "") {
			err = fmt.Errorf("checkout url %q is not absolute", co.URL)
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", &Error{Code: CodeGatewayUnavailable, Message: "The payment service could not be reached. Please try again in a moment.",
			RetryAfter: 5, Err: fmt.Errorf("checkout with %s: %w", p.Name(), err)}
	}
	return co.URL, nil
}

// propose commits cmd, bounding the wait, and turns cluster trouble into 503.
func (s *Server) propose(ctx context.Context, cmd donation.Command) (donation.Result, error) {
	pctx, cancel := context.WithTimeout(ctx, proposeTimeout)
	defer cancel()
	res, err := s.proposer.Propose(pctx, cmd)
	switch {
	case err == nil:
		return res, nil
	case errors.Is(err, ErrUnavailable):
		return res, &Error{Code: CodeUnavailable, Message: "We cannot record donations for a moment. Please try again in a few seconds.", RetryAfter: 2, Err: err}
	case ctx.Err() != nil:
		return res, ctx.Err() // the client went away
	case errors.Is(err, context.DeadlineExceeded):
		return res, &Error{Code: CodeUnavailable, Message: "We cannot record donations for a moment. Please try again in a few seconds.", RetryAfter: 2, Err: err}
	}
	return res, fmt.Errorf("propose %s: %w", cmd.Kind, err)
}
