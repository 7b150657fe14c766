package payment

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/surgefund/surge/donation"
)

// flowSetup is one gateway node, the cluster stand-in and a pending donation.
type flowSetup struct {
	gw      *gateway
	cl      *cluster
	browser *http.Client
	id      string
	co      Checkout
}

func setupFlow(t *testing.T, mutate func(*DevConfig)) *flowSetup {
	t.Helper()
	if testing.Short() {
		t.Skip("real HTTP delivery: skipped with -short")
	}
	f := &flowSetup{cl: startCluster(t), browser: noRedirects(), id: "0f8fad5b-d9cb-469f-a165-70867728950e"}
	f.gw = startGateway(t, mutate)
	f.cl.createDonation(t, f.id, eur(2500))
	f.co = checkout(t, f.gw.dev, f.id, eur(2500), f.cl.srv.URL+"/payments/dev/return?lang=en", f.cl.notifyURL())
	return f
}

func (f *flowSetup) pay(t *testing.T, outcome string) *http.Response {
	t.Helper()
	resp, body := submit(t, f.browser, f.co.URL, outcome)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST %s: status %d: %s", outcome, resp.StatusCode, body)
	}
	return resp
}

func TestFlowPayThroughHostedPage(t *testing.T) {
	f := setupFlow(t, nil)
	status, page := get(t, f.browser, f.co.URL)
	if status != http.StatusOK || !strings.Contains(page, "25.00 EUR") || !strings.Contains(page, f.id) {
		t.Fatalf("checkout page: %d\n%s", status, page)
	}

	resp := f.pay(t, "succeeded")
	// The notification went out synchronously: it is in before the redirect.
	got := f.cl.applied()
	if len(got) != 1 {
		t.Fatalf("got %d applied notifications when the POST returned, want 1: %+v", len(got), f.cl.got())
	}
	a := got[0]
	if a.path != "/payments/dev/notify" || a.code != donation.CodeOK || a.event.Outcome != donation.OutcomeSucceeded ||
		a.event.DonationID != f.id || a.event.EventID != f.gw.dev.eventID(f.id, donation.OutcomeSucceeded) ||
		a.event.ProviderRef != f.co.Ref || *a.event.Amount != eur(2500) {
		t.Fatalf("arrival %+v", a)
	}
	if s := f.cl.status(t, f.id); s != donation.StatusSucceeded {
		t.Fatalf("status %s", s)
	}
	if tot := f.cl.ledger.Totals("EUR"); tot.RaisedMinor != 2500 || tot.Donations != 1 {
		t.Fatalf("totals %+v", tot)
	}

	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	if loc.Scheme+"://"+loc.Host != f.cl.srv.URL || loc.Path != "/payments/dev/return" ||
		q.Get("donation") != f.id || q.Get("outcome") != "succeeded" || q.Get("lang") != "en" {
		t.Fatalf("Location %s", loc)
	}
	hint, err := f.gw.dev.ParseReturn(q)
	if err != nil || hint.DonationID != f.id || hint.Outcome != donation.OutcomeSucceeded {
		t.Fatalf("ParseReturn = %+v, %v", hint, err)
	}

	// A double-clicked Pay sends the same event; the ledger counts it once.
	f.pay(t, "succeeded")
	got = f.cl.applied()
	if len(got) != 2 || got[1].event.EventID != a.event.EventID || got[1].code != donation.CodeDuplicate {
		t.Fatalf("second Pay: %+v", got)
	}
	if tot := f.cl.ledger.Totals("EUR"); tot.RaisedMinor != 2500 || tot.Donations != 1 {
		t.Fatalf("totals after double click %+v", tot)
	}
	// Declining after paying changes nothing either.
	f.pay(t, "failed")
	waitFor(t, 5*time.Second, "decline delivered", func() bool { return len(f.cl.applied()) == 3 })
	if s := f.cl.status(t, f.id); s != donation.StatusSucceeded {
		t.Fatalf("status after a late decline: %s", s)
	}
	if st := f.gw.dev.Stats(); st.Delivered != 3 || st.Attempts != 3 || st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFlowDecline(t *testing.T) {
	f := setupFlow(t, nil)
	resp := f.pay(t, "failed")
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "outcome=failed") || !strings.Contains(loc, "donation="+f.id) {
		t.Fatalf("Location %s", loc)
	}
	got := f.cl.applied()
	if len(got) != 1 || got[0].event.Outcome != donation.OutcomeFailed || got[0].code != donation.CodeOK {
		t.Fatalf("arrivals %+v", f.cl.got())
	}
	if s := f.cl.status(t, f.id); s != donation.StatusFailed {
		t.Fatalf("status %s", s)
	}
	if tot := f.cl.ledger.Totals("EUR"); tot.RaisedMinor != 0 || tot.Donations != 0 {
		t.Fatalf("a declined payment counted: %+v", tot)
	}
}

// The node that made the checkout link may die while the donor pays: any
// other node serves the page and sends the notification.
func TestFlowAnotherNodeServesTheCheckout(t *testing.T) {
	f := setupFlow(t, nil)
	other := startGateway(t, nil)
	if err := f.gw.dev.Close(); err != nil {
		t.Fatal(err)
	}
	f.gw.srv.Close()
	u, _ := url.Parse(f.co.URL)
	moved := other.srv.URL + u.Path
	if status, page := get(t, f.browser, moved); status != http.StatusOK || !strings.Contains(page, "25.00 EUR") {
		t.Fatalf("page on the other node: %d %s", status, page)
	}
	resp, body := submit(t, f.browser, moved, "succeeded")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST on the other node: %d %s", resp.StatusCode, body)
	}
	got := f.cl.applied()
	if len(got) != 1 || got[0].code != donation.CodeOK || got[0].event.ProviderRef != f.co.Ref {
		t.Fatalf("arrivals %+v", f.cl.got())
	}
}

func TestRetryUntilDelivered(t *testing.T) {
	f := setupFlow(t, nil)
	f.cl.setFail(func(n int) int {
		if n <= 3 {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	f.pay(t, "succeeded") // the synchronous round fails; retries go on in the background
	waitFor(t, 10*time.Second, "delivery after three 503s", func() bool { return len(f.cl.applied()) == 1 })
	all := f.cl.got()
	if len(all) != 4 {
		t.Fatalf("got %d requests, want 4", len(all))
	}
	for i, a := range all {
		if !bytes.Equal(a.body, all[0].body) {
			t.Fatalf("attempt %d sent another body:\n%s\n%s", i+1, a.body, all[0].body)
		}
	}
	last := all[3]
	if last.status != http.StatusOK || last.code != donation.CodeOK || last.event.Outcome != donation.OutcomeSucceeded {
		t.Fatalf("final attempt %+v", last)
	}
	if s := f.cl.status(t, f.id); s != donation.StatusSucceeded {
		t.Fatalf("status %s", s)
	}
	waitFor(t, 5*time.Second, "settled", func() bool { return f.gw.dev.Stats().Pending == 0 })
	if st := f.gw.dev.Stats(); st.Attempts != 4 || st.Retried != 3 || st.Delivered != 1 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRetryPolicyByStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("real HTTP delivery: skipped with -short")
	}
	for _, tc := range []struct {
		status  int
		retried bool
	}{
		{http.StatusRequestTimeout, true},
		{http.StatusConflict, true},
		{http.StatusTooEarly, true},
		{http.StatusTooManyRequests, true},
		{http.StatusInternalServerError, true},
		{http.StatusBadGateway, true},
		{http.StatusServiceUnavailable, true},
		{http.StatusFound, true},
		{http.StatusBadRequest, false},
		{http.StatusUnauthorized, false},
		{http.StatusForbidden, false},
		{http.StatusNotFound, false},
		{http.StatusGone, false},
		{http.StatusUnprocessableEntity, false},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			logs := &lockedBuffer{}
			f := setupFlow(t, func(c *DevConfig) { c.Logger = bufferLogger(logs) })
			f.cl.setFail(func(n int) int {
				if n == 1 {
					return tc.status
				}
				return 0
			})
			f.pay(t, "succeeded")
			waitFor(t, 10*time.Second, "settled", func() bool { return f.gw.dev.Stats().Pending == 0 })
			st := f.gw.dev.Stats()
			if tc.retried {
				if st.Attempts != 2 || st.Delivered != 1 || st.Dropped != 0 || len(f.cl.applied()) != 1 {
					t.Fatalf("status %d must be retried: stats %+v", tc.status, st)
				}
				return
			}
			if st.Attempts != 1 || st.Delivered != 0 || st.Dropped != 1 || len(f.cl.got()) != 1 {
				t.Fatalf("status %d must not be retried: stats %+v, requests %d", tc.status, st, len(f.cl.got()))
			}
			if !strings.Contains(logs.String(), "refused, dropped") {
				t.Fatalf("the drop was not logged:\n%s", logs)
			}
		})
	}
}

func TestRetryHonoursGiveUpAfter(t *testing.T) {
	f := setupFlow(t, func(c *DevConfig) { c.GiveUpAfter = 200 * time.Millisecond })
	f.cl.setFail(func(int) int { return http.StatusServiceUnavailable })
	f.pay(t, "succeeded")
	waitFor(t, 10*time.Second, "give up", func() bool { return f.gw.dev.Stats().Dropped == 1 })
	st := f.gw.dev.Stats()
	if st.Pending != 0 || st.Delivered != 0 || st.Attempts < 2 {
		t.Fatalf("stats %+v", st)
	}
	if s := f.cl.status(t, f.id); s != donation.StatusPending {
		t.Fatalf("status %s", s)
	}
}

func TestFallbackWhenNotifyURLIsDown(t *testing.T) {
	if testing.Short() {
		t.Skip("real HTTP delivery: skipped with -short")
	}
	cl := startCluster(t)
	var calls atomic.Int64
	gw := startGateway(t, func(c *DevConfig) {
		c.Fallback = func() []string {
			calls.Add(1)
			return []string{"not a url", "ftp://x.test", cl.srv.URL + "/"}
		}
	})
	cl.createDonation(t, "d1", eur(700))
	dead := closedURL(t)
	co := checkout(t, gw.dev, "d1", eur(700), cl.srv.URL+"/payments/dev/return", dead+"/payments/dev/notify?v=1")
	resp, body := submit(t, noRedirects(), co.URL, "succeeded")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("POST: %d %s", resp.StatusCode, body)
	}
	// The synchronous round already went on to the fallback.
	got := cl.applied()
	if len(got) != 1 || got[0].path != "/payments/dev/notify" || got[0].query != "v=1" || got[0].code != donation.CodeOK {
		t.Fatalf("arrivals %+v", cl.got())
	}
	if calls.Load() == 0 {
		t.Fatal("Fallback was not asked")
	}
	if st := gw.dev.Stats(); st.Attempts != 2 || st.Delivered != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDuplicateSwitch(t *testing.T) {
	f := setupFlow(t, func(c *DevConfig) { c.Duplicate = true })
	f.pay(t, "succeeded")
	waitFor(t, 10*time.Second, "two deliveries", func() bool { return len(f.cl.applied()) == 2 })
	got := f.cl.applied()
	if got[0].event.EventID != got[1].event.EventID {
		t.Fatalf("the twins carry different events: %s %s", got[0].event.EventID, got[1].event.EventID)
	}
	codes := map[donation.Code]int{got[0].code: 1}
	codes[got[1].code]++
	if codes[donation.CodeOK] != 1 || codes[donation.CodeDuplicate] != 1 {
		t.Fatalf("codes %v, want one ok and one duplicate", codes)
	}
	if tot := f.cl.ledger.Totals("EUR"); tot.RaisedMinor != 2500 || tot.Donations != 1 {
		t.Fatalf("totals %+v", tot)
	}
	waitFor(t, 5*time.Second, "settled", func() bool { return f.gw.dev.Stats().Pending == 0 })
	if st := f.gw.dev.Stats(); st.Delivered != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestReorderSwitch(t *testing.T) {
	f := setupFlow(t, func(c *DevConfig) { c.Reorder = true })
	f.pay(t, "succeeded")
	waitFor(t, 10*time.Second, "final and processing events", func() bool { return len(f.cl.applied()) == 2 })
	got := f.cl.applied()
	if got[0].event.Outcome != donation.OutcomeSucceeded || got[1].event.Outcome != donation.OutcomeProcessing {
		t.Fatalf("order %s then %s, want succeeded then processing", got[0].event.Outcome, got[1].event.Outcome)
	}
	if got[1].event.EventID == got[0].event.EventID || got[1].code != donation.CodeIgnored {
		t.Fatalf("processing event %+v", got[1])
	}
	if s := f.cl.status(t, f.id); s != donation.StatusSucceeded {
		t.Fatalf("a late processing event moved the donation to %s", s)
	}
	if tot := f.cl.ledger.Totals("EUR"); tot.RaisedMinor != 2500 || tot.Donations != 1 {
		t.Fatalf("totals %+v", tot)
	}
}

func TestReorderWaitsForTheFinalEvent(t *testing.T) {
	// Even when the final event needs retries, processing comes after it.
	f := setupFlow(t, func(c *DevConfig) { c.Reorder = true })
	f.cl.setFail(func(n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	f.pay(t, "succeeded")
	waitFor(t, 10*time.Second, "both events", func() bool { return len(f.cl.applied()) == 2 })
	got := f.cl.applied()
	if got[0].event.Outcome != donation.OutcomeSucceeded || got[1].event.Outcome != donation.OutcomeProcessing {
		t.Fatalf("order %s then %s", got[0].event.Outcome, got[1].event.Outcome)
	}
}

func TestDelaySwitch(t *testing.T) {
	f := setupFlow(t, func(c *DevConfig) { c.Delay = 400 * time.Millisecond })
	f.pay(t, "succeeded")
	returned := time.Now()
	if n := len(f.cl.got()); n != 0 {
		t.Fatalf("%d notifications arrived before the browser returned", n)
	}
	if s := f.cl.status(t, f.id); s != donation.StatusPending {
		t.Fatalf("status %s before the delayed notification", s)
	}
	waitFor(t, 10*time.Second, "delayed delivery", func() bool { return len(f.cl.applied()) == 1 })
	if a := f.cl.applied()[0]; !a.at.After(returned) || a.code != donation.CodeOK {
		t.Fatalf("arrival %+v (browser returned at %s)", a, returned)
	}
	if s := f.cl.status(t, f.id); s != donation.StatusSucceeded {
		t.Fatalf("status %s", s)
	}
}

func TestAllSwitchesTogether(t *testing.T) {
	f := setupFlow(t, func(c *DevConfig) {
		c.Delay = 50 * time.Millisecond
		c.Duplicate = true
		c.Reorder = true
	})
	f.cl.setFail(func(n int) int {
		if n%3 == 1 {
			return http.StatusBadGateway
		}
		return 0
	})
	f.pay(t, "succeeded")
	waitFor(t, 10*time.Second, "four deliveries", func() bool { return len(f.cl.applied()) == 4 })
	waitFor(t, 5*time.Second, "settled", func() bool { return f.gw.dev.Stats().Pending == 0 })
	if s := f.cl.status(t, f.id); s != donation.StatusSucceeded {
		t.Fatalf("status %s", s)
	}
	if tot := f.cl.ledger.Totals("EUR"); tot.RaisedMinor != 2500 || tot.Donations != 1 {
		t.Fatalf("totals %+v", tot)
	}
}

func TestQueueBoundAndClose(t *testing.T) {
	if testing.Short() {
		t.Skip("real HTTP delivery: skipped with -short")
	}
	cl := startCluster(t)
	gw := startGateway(t, func(c *DevConfig) {
		c.QueueSize = 1
		c.Delay = time.Hour // jobs stay queued
	})
	browser := noRedirects()
	co1 := checkout(t, gw.dev, "d1", eur(100), cl.srv.URL+"/r", cl.notifyURL())
	co2 := checkout(t, gw.dev, "d2", eur(100), cl.srv.URL+"/r", cl.notifyURL())
	if resp, body := submit(t, browser, co1.URL, "succeeded"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("first POST: %d %s", resp.StatusCode, body)
	}
	resp, body := submit(t, browser, co2.URL, "succeeded")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "busy") {
		t.Fatalf("POST beyond the queue: %d %s", resp.StatusCode, body)
	}
	if p := gw.dev.Stats().Pending; p != 1 {
		t.Fatalf("pending %d", p)
	}
	if err := gw.dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gw.dev.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if resp, _ := submit(t, browser, co1.URL, "succeeded"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("POST after Close: %d", resp.StatusCode)
	}
	if status, _ := get(t, browser, co1.URL); status != http.StatusOK {
		t.Fatalf("page after Close: %d (the page needs no workers)", status)
	}
	gw.dev.Start(t.Context()) // after Close: does nothing
	if n := len(cl.got()); n != 0 {
		t.Fatalf("%d deliveries after Close", n)
	}
}

func TestCloseWithoutStart(t *testing.T) {
	d, err := NewDev(testConfig("http://gw.test"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCloseStopsRetrying(t *testing.T) {
	f := setupFlow(t, nil)
	f.cl.setFail(func(int) int { return http.StatusServiceUnavailable })
	f.pay(t, "succeeded")
	waitFor(t, 10*time.Second, "a few retries", func() bool { return f.gw.dev.Stats().Attempts >= 3 })
	if err := f.gw.dev.Close(); err != nil {
		t.Fatal(err)
	}
	n := f.gw.dev.Stats().Attempts
	// Close waited for the workers: nothing can send any more. Give a
	// stray goroutine a chance to show itself before checking.
	time.Sleep(100 * time.Millisecond)
	if m := f.gw.dev.Stats().Attempts; m != n {
		t.Fatalf("%d attempts after Close", m-n)
	}
}

func TestBackoff(t *testing.T) {
	cfg := testConfig("http://gw.test")
	cfg.RetryMin = 100 * time.Millisecond
	cfg.RetryMax = 1 * time.Second
	d, err := NewDev(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		attempt int
		step    time.Duration
	}{{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {3, 400 * time.Millisecond}, {4, 800 * time.Millisecond}, {5, time.Second}, {60, time.Second}} {
		seen := map[time.Duration]bool{}
		for range 200 {
			b := d.backoff(tc.attempt)
			if b < tc.step/2 || b > tc.step {
				t.Fatalf("attempt %d: backoff %s outside [%s, %s]", tc.attempt, b, tc.step/2, tc.step)
			}
			seen[b] = true
		}
		if len(seen) < 10 {
			t.Fatalf("attempt %d: only %d distinct delays: no jitter", tc.attempt, len(seen))
		}
	}
}

func TestRetryAfterHeader(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0}, {"7", 7 * time.Second}, {"0", 0}, {"-3", 0}, {"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		if got := retryAfter(tc.v, now); got != tc.want {
			t.Errorf("retryAfter(%q) = %s, want %s", tc.v, got, tc.want)
		}
	}
}

func TestTargetsRotateThroughFallbacks(t *testing.T) {
	cfg := testConfig("http://gw.test")
	cfg.Fallback = func() []string {
		return []string{"http://a:1", "http://b:1/base/", "http://c:1", "http://d:1", "http://n:1", "bad"}
	}
	d, err := NewDev(cfg)
	if err != nil {
		t.Fatal(err)
	}
	j := &job{notify: "http://n:1/payments/dev/notify"}
	want := map[int]string{
		0: "http://n:1/payments/dev/notify http://a:1/payments/dev/notify http://b:1/base/payments/dev/notify http://c:1/payments/dev/notify",
		3: "http://n:1/payments/dev/notify http://d:1/payments/dev/notify http://a:1/payments/dev/notify http://b:1/base/payments/dev/notify",
	}
	for attempt, w := range want {
		j.attempt = attempt
		if got := strings.Join(d.targets(j), " "); got != w {
			t.Errorf("attempt %d: targets\n%s\nwant\n%s", attempt, got, w)
		}
	}
}
