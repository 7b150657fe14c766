package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/surgefund/surge/donation"
	"github.com/surgefund/surge/donation/memledger"
	"github.com/surgefund/surge/payment"
)

// applyCreate and applyPayment stand for Raft entries reaching this node's
// ledger.
func applyCreate(t *testing.T, led *memledger.Ledger, id string) {
	t.Helper()
	res, err := led.Propose(context.Background(), donation.Command{Kind: donation.KindCreate, Create: &donation.Create{
		ID: id, IdempotencyKey: "key-" + id, Amount: donation.Money{Minor: 2500, Currency: "EUR"}, Provider: "fake", At: time.Now().UnixNano(),
	}})
	if err != nil || res.Code != donation.CodeOK {
		t.Fatalf("apply create: %v %+v", err, res)
	}
}

func applyPayment(t *testing.T, led *memledger.Ledger, id string, o donation.Outcome) {
	t.Helper()
	cmd, err := paymentCommand("fake", payment.Event{EventID: "evt-" + id, DonationID: id, Outcome: o, At: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := led.Propose(context.Background(), cmd); err != nil || res.Code != donation.CodeOK {
		t.Fatalf("apply payment: %v %+v", err, res)
	}
}

// serveAsync runs one request through the handler in its own goroutine.
func serveAsync(s *Server, path string) (*httptest.ResponseRecorder, <-chan struct{}) {
	w := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Handler().ServeHTTP(w, req)
	}()
	return w, done
}

// recv waits for ch; the bound only keeps a broken build from hanging.
func recv[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s", what)
	}
}

// A follower that has not applied the donation, then the payment, answers
// the return as soon as it has applied them: it waits on the cluster sync,
// not on the poll ticker. The ticker is set to an hour here, so the test
// can only pass through the sync path; without it the handler would sit out
// ReturnWait and send the donor to /success with the donation pending.
func TestReturnOnLaggingFollowerWakesOnSync(t *testing.T) {
	s, led := newTestServer(t) // provider "fake" without Lookup: the return waits for the notification
	s.returnPoll = time.Hour
	entered := make(chan struct{})
	applied := make(chan struct{})
	s.health.(*fakeHealth).syncFn = func(ctx context.Context) error {
		select {
		case entered <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case <-applied: // this node has applied the leader's commit index
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	const id = "d-lagging"
	w, done := serveAsync(s, "/payments/fake/return?donation="+id+"&outcome=succeeded")

	// The donation committed on the leader before the donor left; here it
	// is not applied yet.
	recv(t, entered, "sync while the donation is unknown here")
	applyCreate(t, led, id)
	applied <- struct{}{}

	// Pending here; the gateway's notification committed on the leader
	// (payment failed) and reaches this node with the next sync.
	recv(t, entered, "sync while the donation is pending here")
	applyPayment(t, led, id, donation.OutcomeFailed)
	applied <- struct{}{}

	recv(t, done, "answer after the payment was applied")
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/error?donation="+id {
		t.Fatalf("return: %d %q", w.Code, w.Header().Get("Location"))
	}
}

// A sync that cannot finish (no leader) leaves the poll ticker to find the
// entry when it is applied.
func TestReturnPollsWhenSyncHangs(t *testing.T) {
	s, led := newTestServer(t)
	s.returnPoll = time.Millisecond
	syncing := make(chan struct{}, 1)
	s.health.(*fakeHealth).syncFn = func(ctx context.Context) error {
		syncing <- struct{}{}
		<-ctx.Done() // like a node that never hears from a leader
		return ctx.Err()
	}
	const id = "d-noleader"
	applyCreate(t, led, id)
	w, done := serveAsync(s, "/payments/fake/return?donation="+id)
	recv(t, syncing, "sync while the donation is pending")
	applyPayment(t, led, id, donation.OutcomeFailed)
	recv(t, done, "answer after the payment was applied")
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/error?donation="+id {
		t.Fatalf("return: %d %q", w.Code, w.Header().Get("Location"))
	}
}
