package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/surgefund/surge/donation"
)

// pay drives the dev gateway's hosted page like a donor's browser: GET the
// checkout page, POST the outcome, follow the 303 to our return URL, and
// return where the return handler sends the donor.
func (e *env) pay(checkoutURL, outcome string) string {
	e.t.Helper()
	if !strings.HasPrefix(checkoutURL, e.base+"/gateway/dev/") {
		e.t.Fatalf("checkout url %q is not the dev gateway on this node", checkoutURL)
	}
	path := strings.TrimPrefix(checkoutURL, e.base)
	resp, page := e.get(path)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "<form") {
		e.t.Fatalf("checkout page: %d", resp.StatusCode)
	}
	resp, b := e.postForm(path, url.Values{"outcome": {outcome}})
	if resp.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("pay: %d %s", resp.StatusCode, b)
	}
	ret, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(ret.String(), e.base+"/payments/dev/return") {
		e.t.Fatalf("gateway redirected to %q", resp.Header.Get("Location"))
	}
	resp, b = e.get(ret.RequestURI())
	if resp.StatusCode != http.StatusSeeOther {
		e.t.Fatalf("return: %d %s", resp.StatusCode, b)
	}
	return resp.Header.Get("Location")
}

func TestFullFlowThroughForm(t *testing.T) {
	e := newEnv(t)
	// Succeeded: the no-script form, the gateway, the notification, the return.
	resp, b := e.postForm("/donate", url.Values{"amount": {"2500"}, "name": {"Ada"}, "email": {"ada@example.org"}, "message": {"For the valley"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("form: %d %s", resp.StatusCode, b)
	}
	loc := e.pay(resp.Header.Get("Location"), "succeeded")
	if !strings.HasPrefix(loc, "/success?donation=") {
		t.Fatalf("after paying: %q", loc)
	}
	id := strings.TrimPrefix(loc, "/success?donation=")
	if tot := e.ledger.Totals("EUR"); tot.RaisedMinor != 2500 || tot.Donations != 1 {
		t.Fatalf("total after paying: %+v", tot)
	}
	d, ok, _ := e.ledger.Donation(id)
	if !ok || d.Status != donation.StatusSucceeded || d.Name != "Ada" || d.Email != "ada@example.org" || d.Message != "For the valley" {
		t.Fatalf("donation: %+v", d)
	}
	resp, b = e.get("/api/v1/donations/" + id)
	var pub map[string]any
	if err := json.Unmarshal(b, &pub); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status api: %d %s", resp.StatusCode, b)
	}
	if pub["status"] != "succeeded" || len(pub) != 4 || pub["name"] != nil || pub["email"] != nil {
		t.Errorf("public donation view: %v", pub)
	}

	// Declined: to /error, total unchanged.
	resp, _ = e.postForm("/donate", url.Values{"custom_amount": {"12.50"}, "email": {"bo@example.org"}, "anonymous": {"1"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("form: %d", resp.StatusCode)
	}
	loc = e.pay(resp.Header.Get("Location"), "failed")
	if !strings.HasPrefix(loc, "/error?donation=") {
		t.Fatalf("after declining: %q", loc)
	}
	d, _, _ = e.ledger.Donation(strings.TrimPrefix(loc, "/error?donation="))
	if d.Status != donation.StatusFailed || d.Amount.Minor != 1250 || !d.Anonymous {
		t.Errorf("declined donation: %+v", d)
	}
	if tot := e.ledger.Totals("EUR"); tot.RaisedMinor != 2500 || tot.Donations != 1 {
		t.Errorf("total after a decline: %+v", tot)
	}
	resp, b = e.get("/api/v1/total")
	if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=1" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("total headers: %q %q", cc, resp.Header.Get("Content-Type"))
	}
	var total totalJSON
	if err := json.Unmarshal(b, &total); err != nil || total.RaisedMinor != 2500 || total.Donations != 1 || total.GoalMinor != 50000000 || total.Currency != "EUR" || total.RaisedDisplay != "€25" {
		t.Errorf("api total: %s", b)
	}
}

func TestFullFlowThroughAPI(t *testing.T) {
	e := newEnv(t)
	resp, b := e.postJSON("/api/v1/donations", `{"amount_minor":5000,"currency":"eur","name":"Grace","email":"grace@example.org","anonymous":true,"message":"Stay strong"}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	var d donationJSON
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.Status != donation.StatusPending || d.AmountMinor != 5000 || d.Currency != "EUR" || d.CheckoutURL == "" || !validID(d.ID) {
		t.Fatalf("created: %s", b)
	}
	if loc := resp.Header.Get("Location"); loc != "/api/v1/donations/"+d.ID {
		t.Errorf("Location %q", loc)
	}
	if loc := e.pay(d.CheckoutURL, "succeeded"); loc != "/success?donation="+d.ID {
		t.Fatalf("after paying: %q", loc)
	}
	if tot := e.ledger.Totals("EUR"); tot.RaisedMinor != 5000 {
		t.Errorf("total: %+v", tot)
	}
}

func TestIdempotency(t *testing.T) {
	e := newEnv(t)
	body1 := `{"amount_minor":2500,"currency":"EUR","name":"Ada","email":"ada@example.org"}`
	body2 := "{ \"email\" : \"ada@example.org\",\n \"currency\":\"eur\", \"name\":\"Ada\", \"amount_minor\": 2500 }"
	id1, url1 := e.create(2500, "Idempotency-Key", "order-77")
	resp, b := e.postJSON("/api/v1/donations", body1, "Idempotency-Key", "order-77")
	var again donationJSON
	_ = json.Unmarshal(b, &again)
	if resp.StatusCode != http.StatusCreated || again.ID != id1 || again.CheckoutURL == "" {
		t.Fatalf("retry: %d %s (first id %s)", resp.StatusCode, b, id1)
	}
	resp, b = e.postJSON("/api/v1/donations", body2, "Idempotency-Key", "order-77")
	_ = json.Unmarshal(b, &again)
	if resp.StatusCode != http.StatusCreated || again.ID != id1 {
		t.Fatalf("same body, other whitespace and key order: %d %s", resp.StatusCode, b)
	}
	_ = url1
	// Without a key, two posts are two donations.
	idA, _ := e.create(2500)
	idB, _ := e.create(2500)
	if idA == idB || idA == id1 {
		t.Errorf("donations without key share an id: %s %s", idA, idB)
	}
	// The form's script-set key deduplicates a double submit.
	form := url.Values{"amount": {"5000"}, "email": {"ada@example.org"}, "idempotency_key": {"form-key-1"}}
	r1, _ := e.postForm("/donate", form)
	r2, _ := e.postForm("/donate", form)
	if r1.StatusCode != http.StatusSeeOther || r1.Header.Get("Location") != r2.Header.Get("Location") {
		t.Errorf("double submit: %d %q vs %q", r1.StatusCode, r1.Header.Get("Location"), r2.Header.Get("Location"))
	}
}

func TestConcurrentNotificationsCountOnce(t *testing.T) {
	e := newEnv(t)
	id, _ := e.create(2500)
	var wg sync.WaitGroup
	codes := make(chan int, 40)
	for i := 0; i < 20; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			resp, _ := e.notifyDev("evt_same", id, "payment.succeeded", 2500, time.Now())
			codes <- resp.StatusCode
		}()
		go func(i int) {
			defer wg.Done()
			// Other event ids for the same payment: the ledger ignores all but the first.
			resp, _ := e.notifyDev(fmt.Sprintf("evt_other_%d", i), id, "payment.succeeded", 2500, time.Now())
			codes <- resp.StatusCode
		}(i)
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Errorf("notification answered %d", c)
		}
	}
	if tot := e.ledger.Totals("EUR"); tot.RaisedMinor != 2500 || tot.Donations != 1 {
		t.Errorf("total after 40 notifications of one payment: %+v", tot)
	}
}

func TestReturnWaitsForNotification(t *testing.T) {
	e := newEnv(t)
	id, _ := e.create(2500)
	go func() {
		time.Sleep(200 * time.Millisecond)
		e.notifyDev("evt_late", id, "payment.failed", 2500, time.Now())
	}()
	// The browser claims success; the signed notification says failed.
	resp, b := e.get("/payments/dev/return?donation=" + id + "&outcome=succeeded")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/error?donation="+id {
		t.Fatalf("return: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), b)
	}
	// No notification at all within ReturnWait: the donor goes to the success
	// page, whose script shows "confirming"; nothing is counted.
	id2, _ := e.create(2500)
	resp, _ = e.get("/payments/dev/return?donation=" + id2 + "&outcome=succeeded")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/success?donation="+id2 {
		t.Fatalf("pending return: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if tot := e.ledger.Totals("EUR"); tot.RaisedMinor != 0 {
		t.Errorf("a browser claim moved the total: %+v", tot)
	}
}

func TestReturnWithLookup(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DefaultProvider = "fake" })
	for _, c := range []struct {
		outcome donation.Outcome
		want    string
		raised  int64
	}{
		{donation.OutcomeSucceeded, "/success?donation=", 2500},
		{donation.OutcomeFailed, "/error?donation=", 2500},
	} {
		id, checkout := e.create(2500)
		if !strings.HasPrefix(checkout, "https://pay.example.net/") {
			t.Fatalf("checkout %q", checkout)
		}
		e.fake.setOutcome(id, c.outcome)
		resp, _ := e.get("/payments/fake/return?donation=" + id)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != c.want+id {
			t.Fatalf("%s: %d %q", c.outcome, resp.StatusCode, resp.Header.Get("Location"))
		}
		if tot := e.ledger.Totals("EUR"); tot.RaisedMinor != c.raised {
			t.Errorf("%s: total %+v", c.outcome, tot)
		}
	}
	e.fake.mu.Lock()
	req := e.fake.checkouts[0]
	e.fake.mu.Unlock()
	if req.ReturnURL != e.base+"/payments/fake/return" || req.NotifyURL != e.base+"/payments/fake/notify" || req.Amount.Minor != 2500 || req.Description == "" {
		t.Errorf("checkout request: %+v", req)
	}
}

func TestFakeProviderNotification(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DefaultProvider = "fake" })
	id, _ := e.create(2500)
	body := fmt.Sprintf(`{"event_id":"fe_1","donation_id":%q,"outcome":"succeeded","amount_minor":2500,"currency":"EUR"}`, id)
	resp, b := e.postJSON("/payments/fake/notify", body, "Fake-Signature", fakeSign(time.Now(), []byte(body)))
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != `{"received":true}` {
		t.Fatalf("notify: %d %s", resp.StatusCode, b)
	}
	if tot := e.ledger.Totals("EUR"); tot.RaisedMinor != 2500 {
		t.Errorf("total %+v", tot)
	}
}

// TestCreateStampsTimeOrderedIDs: the donation ID, and the idempotency key
// the server makes when the client sent none, are version 7 UUIDs that
// sort by creation time, so the state machine's keys grow at the end of
// its key space (NewID).
func TestCreateStampsTimeOrderedIDs(t *testing.T) {
	e := newEnv(t)
	var prev string
	for i := range 3 {
		id, _ := e.create(2500)
		d, ok, err := e.ledger.Donation(id)
		if err != nil || !ok {
			t.Fatalf("donation %s: %v %v", id, ok, err)
		}
		for what, v := range map[string]string{"id": id, "server-made idempotency key": d.IdempotencyKey} {
			u, err := uuid.Parse(v)
			if err != nil || u.Version() != 7 {
				t.Fatalf("%s %q is not a version 7 UUID (%v)", what, v, err)
			}
		}
		if i > 0 && id <= prev {
			t.Fatalf("id %s does not sort after the earlier %s", id, prev)
		}
		prev = id
		time.Sleep(2 * time.Millisecond) // the next millisecond: v7 orders across milliseconds
	}
	// A key the client sent is kept as it is.
	id, _ := e.create(2500, "Idempotency-Key", "client-key-1")
	if d, _, _ := e.ledger.Donation(id); d.IdempotencyKey != "client-key-1" {
		t.Fatalf("client key stored as %q", d.IdempotencyKey)
	}
}
