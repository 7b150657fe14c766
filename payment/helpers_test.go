package payment

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/surgefund/surge/donation"
	"github.com/surgefund/surge/donation/memledger"
)

var testSecret = []byte("surge-test-secret-0123456789")

func eur(minor int64) donation.Money { return donation.Money{Minor: minor, Currency: "EUR"} }

// testConfig is a config with fast retries for tests.
func testConfig(baseURL string) DevConfig {
	cfg := DefaultDevConfig()
	cfg.Secret = testSecret
	cfg.BaseURL = baseURL
	cfg.RetryMin = 5 * time.Millisecond
	cfg.RetryMax = 40 * time.Millisecond
	cfg.AttemptTimeout = 3 * time.Second
	return cfg
}

// newDev builds and starts a gateway; it is closed at cleanup.
func newDev(t *testing.T, cfg DevConfig) *Dev {
	t.Helper()
	d, err := NewDev(cfg)
	if err != nil {
		t.Fatalf("NewDev: %v", err)
	}
	d.Start(context.Background())
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// gateway is a node serving the dev gateway's pages over real HTTP.
type gateway struct {
	srv *httptest.Server
	dev *Dev
}

// startGateway starts an HTTP server with the gateway mounted at its
// prefix, the way the web package mounts it. mutate adjusts the config.
func startGateway(t *testing.T, mutate func(*DevConfig)) *gateway {
	t.Helper()
	g := &gateway{}
	mux := http.NewServeMux()
	g.srv = httptest.NewServer(mux)
	t.Cleanup(g.srv.Close)
	cfg := testConfig(g.srv.URL)
	if mutate != nil {
		mutate(&cfg)
	}
	g.dev = newDev(t, cfg)
	mux.Handle(DevPrefix, g.dev.Handler())
	return g
}

// arrival is one notification request the cluster stand-in received.
type arrival struct {
	path   string
	query  string
	status int
	body   []byte
	event  Event
	code   donation.Code
	at     time.Time
}

// cluster stands in for the nodes' notify endpoint: it verifies with its
// own gateway instance (same secret, as every node has) and applies the
// events to a memledger, answering like the web package does.
type cluster struct {
	t      *testing.T
	srv    *httptest.Server
	ledger *memledger.Ledger
	verify *Dev

	mu       sync.Mutex
	requests int
	arrivals []arrival
	fail     func(n int) int // status to answer for the n-th request (1-based) instead of applying; 0 to apply
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	v, err := NewDev(testConfig("http://verifier.invalid"))
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, ledger: memledger.New(), verify: v}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *cluster) notifyURL() string { return c.srv.URL + "/payments/dev/notify" }

func (c *cluster) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		http.Error(w, "read", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.requests++
	n := c.requests
	fail := c.fail
	c.mu.Unlock()
	a := arrival{path: r.URL.Path, query: r.URL.RawQuery, body: body, at: time.Now()}
	record := func(status int) {
		a.status = status
		c.mu.Lock()
		c.arrivals = append(c.arrivals, a)
		c.mu.Unlock()
		w.WriteHeader(status)
	}
	if fail != nil {
		if s := fail(n); s != 0 {
			record(s)
			return
		}
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		record(http.StatusUnsupportedMediaType)
		return
	}
	evs, err := c.verify.VerifyNotification(r.Header, body, time.Now())
	if err != nil {
		record(http.StatusBadRequest)
		return
	}
	for _, ev := range evs {
		a.event = ev
		res, err := c.ledger.Propose(r.Context(), donation.Command{Kind: donation.KindPayment, Payment: &donation.Payment{
			Provider: DevName, EventID: ev.EventID, DonationID: ev.DonationID, Outcome: ev.Outcome,
			Amount: ev.Amount, ProviderRef: ev.ProviderRef, At: ev.At.UnixNano(),
		}})
		if err != nil {
			record(http.StatusInternalServerError)
			return
		}
		a.code = res.Code
		switch res.Code {
		case donation.CodeNotFound:
			record(http.StatusNotFound)
			return
		case donation.CodeAmountMismatch:
			record(http.StatusUnprocessableEntity)
			return
		}
	}
	record(http.StatusOK)
}

// got returns a copy of the arrivals so far.
func (c *cluster) got() []arrival {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]arrival(nil), c.arrivals...)
}

// applied returns the arrivals that were verified and applied, in order.
func (c *cluster) applied() []arrival {
	var out []arrival
	for _, a := range c.got() {
		if a.status == http.StatusOK {
			out = append(out, a)
		}
	}
	return out
}

func (c *cluster) setFail(f func(n int) int) {
	c.mu.Lock()
	c.fail = f
	c.mu.Unlock()
}

// createDonation commits a pending donation to the ledger.
func (c *cluster) createDonation(t *testing.T, id string, m donation.Money) {
	t.Helper()
	res, err := c.ledger.Propose(context.Background(), donation.Command{Kind: donation.KindCreate, Create: &donation.Create{
		ID: id, IdempotencyKey: "idem-" + id, Amount: m, Provider: DevName, At: time.Now().UnixNano(),
	}})
	if err != nil || res.Code != donation.CodeOK {
		t.Fatalf("create donation %s: %v %v", id, res.Code, err)
	}
}

func (c *cluster) status(t *testing.T, id string) donation.Status {
	t.Helper()
	d, ok, err := c.ledger.Donation(id)
	if err != nil || !ok {
		t.Fatalf("donation %s: ok=%v err=%v", id, ok, err)
	}
	return d.Status
}

// noRedirects is a browser that shows redirects instead of following them.
func noRedirects() *http.Client {
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func checkout(t *testing.T, d *Dev, id string, m donation.Money, returnURL, notifyURL string) Checkout {
	t.Helper()
	co, err := d.Checkout(context.Background(), CheckoutRequest{
		DonationID: id, Amount: m, Description: "Test campaign", ReturnURL: returnURL, NotifyURL: notifyURL,
	})
	if err != nil {
		t.Fatalf("Checkout: %v", err)
	}
	return co
}

// get fetches u and returns the status and body.
func get(t *testing.T, cl *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := cl.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// submit posts the page's form with outcome and returns the response
// (body read and closed).
func submit(t *testing.T, cl *http.Client, u, outcome string) (*http.Response, string) {
	t.Helper()
	resp, err := cl.PostForm(u, url.Values{"outcome": {outcome}})
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// body builds a notification body as the gateway would.
func notificationBody(t testing.TB, mutate func(map[string]any)) []byte {
	t.Helper()
	m := map[string]any{
		"id": "evt_0123456789abcdef01234567", "type": "payment.succeeded", "donation_id": "don-1",
		"amount": map[string]any{"minor": 2500, "currency": "EUR"}, "provider_ref": "dev_0123456789abcdef",
		"created": 1_760_000_000,
	}
	if mutate != nil {
		mutate(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func bufferLogger(b *lockedBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// closedURL returns a base URL on which nothing listens.
func closedURL(t *testing.T) string {
	t.Helper()
	s := httptest.NewServer(http.NotFoundHandler())
	u := s.URL
	s.Close()
	return u
}

func isSentinel(err, want error) bool {
	if want == nil {
		return err == nil
	}
	return errors.Is(err, want)
}

func hasAll(s string, subs ...string) (string, bool) {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return sub, false
		}
	}
	return "", true
}
