package web

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/surgefund/surge/donation"
	"github.com/surgefund/surge/donation/memledger"
	"github.com/surgefund/surge/payment"
	"github.com/surgefund/surge/site"
)

var devSecret = []byte("web-test-secret-0123456789abcdef")

// fakeHealth is a Health whose answers tests set.
type fakeHealth struct {
	mu      sync.Mutex
	ready   error
	syncErr error
	syncFn  func(ctx context.Context) error // when set, WaitSync is this
}

func (h *fakeHealth) Ready() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ready
}

func (h *fakeHealth) WaitSync(ctx context.Context) error {
	h.mu.Lock()
	err, fn := h.syncErr, h.syncFn
	h.mu.Unlock()
	if fn != nil {
		return fn(ctx)
	}
	if err != nil {
		<-ctx.Done() // like a node that never catches up
		return err
	}
	return nil
}

func (h *fakeHealth) set(ready, syncErr error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ready, h.syncErr = ready, syncErr
}

// countingProposer wraps the memledger to count calls and inject failures.
type countingProposer struct {
	l    *memledger.Ledger
	mu   sync.Mutex
	n    int
	fail error
}

func (p *countingProposer) Propose(ctx context.Context, cmd donation.Command) (donation.Result, error) {
	p.mu.Lock()
	p.n++
	fail := p.fail
	p.mu.Unlock()
	if fail != nil {
		return donation.Result{}, fail
	}
	return p.l.Propose(ctx, cmd)
}

func (p *countingProposer) setFail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = err
}

// fakeProvider is a pull-style gateway for tests: it signs notifications
// with HMAC ("Fake-Signature: t=..,v1=.."), and when lookup is on, it
// answers Lookup from outcomes the test sets.
type fakeProvider struct {
	name   string
	lookup bool

	mu          sync.Mutex
	outcomes    map[string]donation.Outcome
	checkouts   []payment.CheckoutRequest
	checkoutErr error
}

func newFakeProvider(name string, lookup bool) *fakeProvider {
	return &fakeProvider{name: name, lookup: lookup, outcomes: map[string]donation.Outcome{}}
}

func (f *fakeProvider) Name() string { return f.name }

func (f *fakeProvider) Checkout(_ context.Context, req payment.CheckoutRequest) (payment.Checkout, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.checkoutErr != nil {
		return payment.Checkout{}, f.checkoutErr
	}
	f.checkouts = append(f.checkouts, req)
	return payment.Checkout{URL: "https://pay.example.net/c/" + req.DonationID, Ref: "fake_" + req.DonationID}, nil
}

type fakeNote struct {
	EventID     string `json:"event_id"`
	DonationID  string `json:"donation_id"`
	Outcome     string `json:"outcome"`
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
}

func fakeSign(t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, devSecret)
	m.Write([]byte(ts + "."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

func (f *fakeProvider) VerifyNotification(h http.Header, body []byte, now time.Time) ([]payment.Event, error) {
	sig := h.Get("Fake-Signature")
	ts, mac, ok := strings.Cut(sig, ",v1=")
	if !ok || !strings.HasPrefix(ts, "t=") {
		return nil, payment.ErrBadSignature
	}
	sec, err := strconv.ParseInt(ts[2:], 10, 64)
	if err != nil {
		return nil, payment.ErrBadSignature
	}
	want := fakeSign(time.Unix(sec, 0), body)
	if !hmac.Equal([]byte(want), []byte(sig)) {
		_ = mac
		return nil, payment.ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return nil, payment.ErrStale
	}
	var n fakeNote
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&n); err != nil || n.EventID == "" {
		return nil, payment.ErrMalformed
	}
	ev := payment.Event{EventID: n.EventID, DonationID: n.DonationID, Outcome: donation.Outcome(n.Outcome), At: time.Unix(sec, 0)}
	if n.Currency != "" {
		ev.Amount = &donation.Money{Minor: n.AmountMinor, Currency: donation.Currency(n.Currency)}
	}
	return []payment.Event{ev}, nil
}

func (f *fakeProvider) ParseReturn(q url.Values) (payment.ReturnHint, error) {
	id := q.Get("donation")
	if id == "" {
		return payment.ReturnHint{}, payment.ErrMalformed
	}
	return payment.ReturnHint{DonationID: id, Outcome: donation.Outcome(q.Get("outcome"))}, nil
}

func (f *fakeProvider) Lookup(_ context.Context, id, _ string) (payment.Event, error) {
	if !f.lookup {
		return payment.Event{}, payment.ErrNotSupported
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.outcomes[id]
	if !ok {
		return payment.Event{DonationID: id, Outcome: donation.OutcomeProcessing}, nil
	}
	return payment.Event{EventID: "lookup_" + id, DonationID: id, Outcome: o, ProviderRef: "fake_" + id, At: time.Now()}, nil
}

func (f *fakeProvider) setOutcome(id string, o donation.Outcome) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.outcomes[id] = o
}

// env is one web server on a real socket with a memledger behind it.
type env struct {
	t      *testing.T
	srv    *Server
	base   string
	ledger *memledger.Ledger
	prop   *countingProposer
	health *fakeHealth
	dev    *payment.Dev
	fake   *fakeProvider
	client *http.Client // does not follow redirects
}

type envOption func(*Config)

// newEnv starts a server with the dev gateway (default provider) and a fake
// pull-style provider "fake", serving on 127.0.0.1:0 through Serve.
func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	dcfg := payment.DefaultDevConfig()
	dcfg.Secret = devSecret
	dcfg.BaseURL = base
	dev, err := payment.NewDev(dcfg)
	if err != nil {
		t.Fatal(err)
	}
	led := memledger.New()
	e := &env{
		t: t, base: base, ledger: led, prop: &countingProposer{l: led}, health: &fakeHealth{}, dev: dev,
		fake: newFakeProvider("fake", true),
		client: &http.Client{
			Timeout:       20 * time.Second,
			Transport:     &http.Transport{DisableCompression: true}, // see the bytes as sent
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	cfg := DefaultConfig()
	cfg.PublicURL = base
	cfg.Site = site.FS()
	cfg.Providers = []payment.Provider{dev, e.fake}
	cfg.ReturnWait = 2 * time.Second
	cfg.RenderInterval = 20 * time.Millisecond
	cfg.RateLimit = RateLimit{}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Version = "test"
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := NewServer(cfg, led, e.prop, e.health)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { // after the server has stopped
		cancel()
		if err := dev.Close(); err != nil {
			t.Errorf("close dev gateway: %v", err)
		}
	})
	dev.Start(ctx)
	srv.Start(ctx)
	serveUntilCleanup(t, srv, ln)
	t.Cleanup(e.client.CloseIdleConnections) // before the server stops
	return e
}

// serveUntilCleanup serves s on ln until the test ends, then shuts it
// down and checks what Shutdown and Serve returned. Cleanups registered
// before it run after the server has stopped.
func serveUntilCleanup(t *testing.T, s *Server, ln net.Listener) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := s.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

func (e *env) do(req *http.Request) (*http.Response, []byte) {
	e.t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	return resp, b
}

func (e *env) request(method, path string, body io.Reader, headers ...string) *http.Request {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return req
}

func (e *env) get(path string, headers ...string) (*http.Response, []byte) {
	e.t.Helper()
	return e.do(e.request(http.MethodGet, path, nil, headers...))
}

func (e *env) postJSON(path, body string, headers ...string) (*http.Response, []byte) {
	e.t.Helper()
	return e.do(e.request(http.MethodPost, path, strings.NewReader(body), append([]string{"Content-Type", "application/json"}, headers...)...))
}

func (e *env) postForm(path string, v url.Values, headers ...string) (*http.Response, []byte) {
	e.t.Helper()
	return e.do(e.request(http.MethodPost, path, strings.NewReader(v.Encode()), append([]string{"Content-Type", "application/x-www-form-urlencoded"}, headers...)...))
}

// create makes a donation through the API and returns its id and checkout URL.
func (e *env) create(amount int64, headers ...string) (string, string) {
	e.t.Helper()
	resp, b := e.postJSON("/api/v1/donations", fmt.Sprintf(`{"amount_minor":%d,"currency":"EUR","name":"Ada","email":"ada@example.org"}`, amount), headers...)
	if resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	var d donationJSON
	if err := json.Unmarshal(b, &d); err != nil {
		e.t.Fatal(err)
	}
	return d.ID, d.CheckoutURL
}

// notifyDev sends a dev-gateway-signed notification, as the gateway would.
func (e *env) notifyDev(evt, id, typ string, amount int64, at time.Time, mutate ...func([]byte) []byte) (*http.Response, []byte) {
	e.t.Helper()
	body := []byte(devNote(evt, id, typ, amount, at))
	sig := payment.Sign(devSecret, at, body)
	for _, m := range mutate {
		body = m(body)
	}
	return e.do(e.request(http.MethodPost, "/payments/dev/notify", bytes.NewReader(body), "Content-Type", "application/json", payment.SignatureHeader, sig))
}

// errorCode checks the JSON error shape and returns the code.
func errorCode(t *testing.T, resp *http.Response, b []byte) string {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error content type %q, body %s", ct, b)
	}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	if body.Error.Code == "" || body.Error.Message == "" {
		t.Fatalf("error body without code or message: %s", b)
	}
	for _, r := range body.Error.Code {
		if !(r >= 'a' && r <= 'z' || r == '_') {
			t.Fatalf("error code %q is not snake_case", body.Error.Code)
		}
	}
	return body.Error.Code
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var errTest = errors.New("test failure")

// devNote is a dev gateway notification body.
func devNote(evt, id, typ string, amount int64, at time.Time) string {
	return fmt.Sprintf(`{"id":%q,"type":%q,"donation_id":%q,"amount":{"minor":%d,"currency":"EUR"},"provider_ref":"dev_x","created":%d}`, evt, typ, id, amount, at.Unix())
}

func signWith(secret []byte, at time.Time, body string) string {
	return payment.Sign(secret, at, []byte(body))
}

func nil2ledger() *memledger.Ledger { return memledger.New() }
