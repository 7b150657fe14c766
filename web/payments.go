package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/surgefund/surge/donation"
	"github.com/surgefund/surge/payment"
)

// returnPoll is how often the return handler looks at the local ledger
// while it waits for the signed notification (Server.returnPoll; tests
// change it). An entry already committed is seen sooner: see waitDonation.
const returnPoll = 50 * time.Millisecond

func (s *Server) provider(c echo.Context) (payment.Provider, error) {
	p, ok := s.providers[c.Param("provider")]
	if !ok {
		return nil, &Error{Code: CodeNotFound, Message: "There is no payment provider by that name."}
	}
	return p, nil
}

// handleNotify serves POST /payments/:provider/notify: a signed
// server-to-server notification. The signature is checked on the raw
// bytes; each event is committed through the cluster, and only then does
// the gateway get its 2xx. A failed commit is a 503, so the gateway retries.
func (s *Server) handleNotify(c echo.Context) error {
	p, err := s.provider(c)
	if err != nil {
		return err
	}
	r := c.Request()
	body, err := readBody(r, maxNotifyBody)
	if err != nil {
		return err
	}
	events, err := p.VerifyNotification(r.Header, body, time.Now())
	switch {
	case err == nil:
	case errors.Is(err, payment.ErrBadSignature):
		return &Error{Code: CodeBadSignature, Message: "The notification signature is missing or wrong."}
	case errors.Is(err, payment.ErrStale):
		return &Error{Code: CodeStaleSignature, Message: "The notification signature is outside the accepted time window."}
	case errors.Is(err, payment.ErrMalformed):
		return &Error{Code: CodeMalformedNotification, Message: "The notification could not be understood."}
	default:
		return fmt.Errorf("verify notification from %s: %w", p.Name(), err)
	}
	for _, ev := range events {
		cmd, err := paymentCommand(p.Name(), ev)
		if err != nil {
			return &Error{Code: CodeMalformedNotification, Message: "The notification carries an event we cannot record.", Err: err}
		}
		res, err := s.propose(r.Context(), cmd)
		if err != nil {
			return err
		}
		switch res.Code {
		case donation.CodeOK, donation.CodeDuplicate, donation.CodeIgnored:
		case donation.CodeNotFound:
			return &Error{Code: CodeNotFound, Message: "There is no donation with this id."}
		case donation.CodeAmountMismatch:
			s.log.Warn("payment amount does not match the donation", "provider", p.Name(), "event_id", ev.EventID, "donation_id", ev.DonationID)
			return &Error{Code: CodeAmountMismatch, Message: "The paid amount does not match the donation."}
		default:
			return fmt.Errorf("record payment event: unexpected ledger answer %q", res.Code)
		}
	}
	c.Response().Header()["Cache-Control"] = noStore
	return c.JSON(http.StatusOK, map[string]bool{"received": true})
}

// paymentCommand turns a verified event into a ledger command.
func paymentCommand(provider string, ev payment.Event) (donation.Command, error) {
	if !validID(ev.DonationID) {
		return donation.Command{}, fmt.Errorf("event %q: bad donation id", ev.EventID)
	}
	at := ev.At
	if at.IsZero() {
		at = time.Now()
	}
	cmd := donation.Command{Kind: donation.KindPayment, Payment: &donation.Payment{
		Provider:    provider,
		EventID:     ev.EventID,
		DonationID:  ev.DonationID,
		Outcome:     ev.Outcome,
		Amount:      ev.Amount,
		ProviderRef: ev.ProviderRef,
		At:          at.UnixNano(),
	}}
	if err := cmd.Validate(); err != nil {
		return donation.Command{}, err
	}
	return cmd, nil
}

// handleReturn serves GET /payments/:provider/return: the donor's browser
// coming back from the gateway. What the browser says is never proof. A
// gateway that can be asked (Lookup) is asked and its answer committed;
// otherwise the handler waits up to ReturnWait for the signed notification
// to show up in the local ledger. Then it sends the donor to /success or
// /error; a donation still pending goes to /success, whose script shows
// "confirming" from the live status.
func (s *Server) handleReturn(c echo.Context) error {
	p, err := s.provider(c)
	if err != nil {
		return err
	}
	r := c.Request()
	hint, err := p.ParseReturn(r.URL.Query())
	if err != nil || !validID(hint.DonationID) {
		return &Error{Code: CodeInvalidReturn, Message: "The return link from the payment page is not valid."}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReturnWait)
	defer cancel()
	// The donation was committed before the donor left, but this node may
	// still be catching up with the log.
	d, found, err := s.waitDonation(ctx, hint.DonationID, func(donation.Donation) bool { return true })
	if err != nil {
		return err
	}
	if !found {
		return &Error{Code: CodeNotFound, Message: "There is no donation with this id."}
	}
	if d.Status == donation.StatusPending {
		d = s.lookup(ctx, p, d)
	}
	if d.Status == donation.StatusPending {
		if d, _, err = s.waitDonation(ctx, d.ID, func(d donation.Donation) bool { return d.Status != donation.StatusPending }); err != nil {
			return err
		}
	}
	c.Response().Header()["Cache-Control"] = noStore
	if d.Status == donation.StatusFailed {
		return c.Redirect(http.StatusSeeOther, "/error?donation="+d.ID)
	}
	return c.Redirect(http.StatusSeeOther, "/success?donation="+d.ID)
}

// lookup asks a pull-style gateway for the payment's status and commits
// what it says. Any trouble leaves d as it was: the caller then waits for
// the notification.
func (s *Server) lookup(ctx context.Context, p payment.Provider, d donation.Donation) donation.Donation {
	ev, err := p.Lookup(ctx, d.ID, d.ProviderRef)
	switch {
	case errors.Is(err, payment.ErrNotSupported):
		return d
	case err != nil:
		s.log.Warn("payment lookup failed", "provider", p.Name(), "donation_id", d.ID, "err", err)
		return d
	case ev.DonationID != d.ID || ev.Outcome == donation.OutcomeProcessing || ev.Outcome == "":
		return d
	}
	cmd, err := paymentCommand(p.Name(), ev)
	if err != nil {
		s.log.Warn("payment lookup gave an unusable event", "provider", p.Name(), "donation_id", d.ID, "err", err)
		return d
	}
	res, err := s.propose(ctx, cmd)
	if err != nil {
		s.log.Warn("record looked-up payment", "provider", p.Name(), "donation_id", d.ID, "err", err)
		return d
	}
	switch res.Code {
	case donation.CodeOK, donation.CodeDuplicate, donation.CodeIgnored:
		if res.Donation.ID == d.ID {
			return res.Donation
		}
	case donation.CodeAmountMismatch:
		s.log.Warn("payment amount does not match the donation", "provider", p.Name(), "event_id", ev.EventID, "donation_id", d.ID)
	}
	return d
}

// waitDonation reads the local ledger until the donation exists and done
// says yes, or ctx's deadline passes; it then returns the last state seen.
// It fails only when the ledger fails or the client went away.
//
// When the first read does not satisfy done, this node may simply be
// behind the leader (a follower that has not applied the entry yet). So it
// asks the cluster once to bring this node up to the leader's commit index
// (Health.WaitSync) and reads again the moment that returns: the entry the
// donor's browser is ahead of is then applied, and the answer does not
// wait for a poll tick. Polling every returnPoll runs alongside, for what
// commits later (a notification that has not arrived yet) and for when
// the sync cannot finish (no leader).
func (s *Server) waitDonation(ctx context.Context, id string, done func(donation.Donation) bool) (donation.Donation, bool, error) {
	d, ok, err := s.ledger.Donation(id)
	if err != nil {
		return d, false, fmt.Errorf("read donation: %w", err)
	}
	if ok && done(d) {
		return d, true, nil
	}
	sctx, cancel := context.WithCancel(ctx)
	synced := make(chan error, 1)
	go func() { synced <- s.health.WaitSync(sctx) }()
	defer func() {
		cancel()
		if synced != nil {
			<-synced // the sync goroutine ends with sctx
		}
	}()
	t := time.NewTicker(s.returnPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return d, ok, ctx.Err()
			}
			return d, ok, nil
		case err := <-synced:
			synced = nil // received: never selected again, nothing to wait for
			if err != nil && ctx.Err() == nil {
				s.log.Debug("return: sync with the leader failed; polling the ledger", "donation_id", id, "err", err)
			}
		case <-t.C:
		}
		if d, ok, err = s.ledger.Donation(id); err != nil {
			return d, false, fmt.Errorf("read donation: %w", err)
		}
		if ok && done(d) {
			return d, true, nil
		}
	}
}
