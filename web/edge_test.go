package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/surgefund/surge/donation/memledger"
	"github.com/surgefund/surge/payment"
	"github.com/surgefund/surge/site"
)

func TestSecurityHeadersEverywhere(t *testing.T) {
	e := newEnv(t)
	id, _ := e.create(2500)
	// Which headers a response gets depends on what it is (DESIGN.md,
	// "Security headers"): documents and dynamic answers get the full set
	// and a request ID, cacheable pages the same without the request ID,
	// the cacheable JSON total only what applies to a non-document.
	const (
		dynamic = iota
		page
		total
	)
	for _, c := range []struct {
		req  *http.Request
		kind int
	}{
		{e.request(http.MethodGet, "/", nil), page},
		{e.request(http.MethodHead, "/donate", nil), page},
		{e.request(http.MethodGet, "/static/nope.css", nil), page},
		{e.request(http.MethodGet, "/no-such-page", nil), dynamic},
		{e.request(http.MethodGet, "/api/v1/total", nil), total},
		{e.request(http.MethodDelete, "/api/v1/total", nil), dynamic},
		{e.request(http.MethodGet, "/api/v1/donations/"+id, nil), dynamic},
		{e.request(http.MethodGet, "/api/v1/nope", nil), dynamic},
		{e.request(http.MethodDelete, "/donate", nil), dynamic},
		{e.request(http.MethodPost, "/donate", strings.NewReader("amount=x"), "Content-Type", "application/x-www-form-urlencoded"), dynamic},
		{e.request(http.MethodPost, "/payments/dev/notify", strings.NewReader("{}")), dynamic},
		{e.request(http.MethodGet, "/healthz", nil), dynamic},
		{e.request(http.MethodGet, "/gateway/dev/checkout/bad-token", nil), dynamic},
	} {
		req := c.req
		resp, _ := e.do(req)
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self' " + e.base} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s %s: CSP %q lacks %q", req.Method, req.URL.Path, csp, want)
			}
		}
		if v := h.Get("X-Content-Type-Options"); v != "nosniff" {
			t.Errorf("%s %s: X-Content-Type-Options = %q", req.Method, req.URL.Path, v)
		}
		// Dropped everywhere: CSP frame-ancestors does X-Frame-Options' job,
		// and no browser we serve has the XSS auditor.
		for _, k := range []string{"X-Frame-Options", "X-Xss-Protection"} {
			if v := h.Get(k); v != "" {
				t.Errorf("%s %s: %s = %q", req.Method, req.URL.Path, k, v)
			}
		}
		doc := c.kind != total
		if rp := h.Get("Referrer-Policy"); doc && rp != "strict-origin-when-cross-origin" && rp != "no-referrer" {
			t.Errorf("%s %s: Referrer-Policy %q", req.Method, req.URL.Path, rp) // the gateway page may be stricter
		}
		if has := h.Get("Permissions-Policy") != "" && h.Get("Cross-Origin-Opener-Policy") == "same-origin"; has != doc {
			t.Errorf("%s %s: Permissions-Policy %q, COOP %q", req.Method, req.URL.Path, h.Get("Permissions-Policy"), h.Get("Cross-Origin-Opener-Policy"))
		}
		if has := h.Get("X-Request-Id") != ""; has != (c.kind == dynamic) {
			t.Errorf("%s %s: X-Request-Id %q", req.Method, req.URL.Path, h.Get("X-Request-Id"))
		}
		if c.kind != dynamic && !strings.HasPrefix(h.Get("Cache-Control"), "public") {
			t.Errorf("%s %s: a response without request ID is not publicly cacheable: Cache-Control %q", req.Method, req.URL.Path, h.Get("Cache-Control"))
		}
		if h.Get("Strict-Transport-Security") != "" {
			t.Errorf("%s %s: HSTS over plain http", req.Method, req.URL.Path)
		}
	}
}

// newTestServer builds a Server without a socket, for handler-level tests.
func newTestServer(t testing.TB, mutate ...func(*Config)) (*Server, *memledger.Ledger) {
	t.Helper()
	led := memledger.New()
	cfg := DefaultConfig()
	cfg.PublicURL = "https://give.example.org"
	cfg.Site = site.FS()
	cfg.Providers = []payment.Provider{newFakeProvider("fake", false)}
	cfg.RateLimit = RateLimit{}
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := NewServer(cfg, led, led, &fakeHealth{})
	if err != nil {
		t.Fatal(err)
	}
	return s, led
}

func TestHSTSOnlyOverHTTPS(t *testing.T) {
	s, _ := newTestServer(t, func(c *Config) { c.GatewayOrigins = []string{"https://checkout.psp.example/pay"} })
	for _, p := range []string{"/api/v1/total", "/healthz", "/"} { // every kind of response
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, p, nil))
		if got := w.Header().Get("Strict-Transport-Security"); got != "max-age=31536000; includeSubDomains" {
			t.Errorf("%s: HSTS %q", p, got)
		}
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' https://give.example.org https://checkout.psp.example;") {
		t.Errorf("CSP %q", csp)
	}
}

func TestRequestID(t *testing.T) {
	s, _ := newTestServer(t)
	seen := map[string]bool{}
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"abc-123_X.y:z", "abc-123_X.y:z"},
		{"has space", ""},
		{strings.Repeat("a", 65), ""},
		{"<script>", ""},
	} {
		req := httptest.NewRequest(http.MethodGet, "/healthz", nil)
		if c.in != "" {
			req.Header.Set("X-Request-ID", c.in)
		}
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, req)
		got := w.Header().Get("X-Request-ID")
		switch {
		case c.want != "" && got != c.want:
			t.Errorf("%q: echoed %q", c.in, got)
		case c.want == "" && (!validRequestID(got) || got == c.in || seen[got]):
			t.Errorf("%q: generated %q", c.in, got)
		}
		seen[got] = true
	}
}

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestPanicRecoveredAndLogged(t *testing.T) {
	var logs logBuffer
	s, _ := newTestServer(t, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	s.Echo().GET("/api/v1/boom", func(echo.Context) error { panic("kaboom") })
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/v1/boom", nil))
	if w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), `"code":"internal_error"`) {
		t.Fatalf("panic answer: %d %s", w.Code, w.Body)
	}
	if w.Header().Get("Content-Security-Policy") == "" {
		t.Error("panic answer without security headers")
	}
	if !strings.Contains(logs.String(), "kaboom") {
		t.Error("panic not logged")
	}
	w = httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if w.Code != http.StatusOK {
		t.Errorf("after a panic: %d", w.Code)
	}
}

func TestAccessLogHasNoPersonalData(t *testing.T) {
	var logs logBuffer
	s, _ := newTestServer(t, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	body := `{"amount_minor":2500,"currency":"EUR","name":"Secret Name","email":"secret.person@example.org","message":"private words"}`
	req := httptest.NewRequest(http.MethodPost, "/api/v1/donations?email=secret.person@example.org", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = "203.0.113.77:4444"
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	if w.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	form := url.Values{"amount": {"2500"}, "email": {"secret.person@example.org"}, "name": {"Secret Name"}}
	req = httptest.NewRequest(http.MethodPost, "/donate", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	s.Handler().ServeHTTP(httptest.NewRecorder(), req)
	out := logs.String()
	if !strings.Contains(out, `"path":"/api/v1/donations"`) || !strings.Contains(out, `"status":201`) {
		t.Fatalf("no access log line: %s", out)
	}
	for _, secret := range []string{"secret.person", "Secret Name", "private words", "203.0.113.77"} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains %q", secret)
		}
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RateLimit = RateLimit{PerMinute: 6, Burst: 3} })
	for i := 0; i < 3; i++ {
		e.create(2500)
	}
	before := e.ledger.Applied()
	resp, b := e.postJSON("/api/v1/donations", `{"amount_minor":2500,"currency":"EUR","email":"ada@example.org"}`)
	if resp.StatusCode != http.StatusTooManyRequests || errorCode(t, resp, b) != CodeRateLimited {
		t.Fatalf("4th create: %d %s", resp.StatusCode, b)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 10 {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	resp, b = e.postForm("/donate", url.Values{"amount": {"2500"}, "email": {"ada@example.org"}})
	if resp.StatusCode != http.StatusTooManyRequests || !bytes.Contains(b, []byte("Too many donation attempts")) || resp.Header.Get("Retry-After") == "" {
		t.Errorf("form when limited: %d", resp.StatusCode)
	}
	if e.ledger.Applied() != before {
		t.Error("a limited request reached the ledger")
	}
	// Reads are never limited.
	if resp, _ := e.get("/api/v1/total"); resp.StatusCode != http.StatusOK {
		t.Errorf("total when limited: %d", resp.StatusCode)
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	l := newLimiter(RateLimit{PerMinute: 60, Burst: 2}, clock)
	a := netip.MustParseAddr("198.51.100.7")
	b := netip.MustParseAddr("198.51.100.8")
	for i, want := range []bool{true, true, false} {
		if ok, _ := l.allow(a); ok != want {
			t.Fatalf("call %d: %v", i, ok)
		}
	}
	if ok, wait := l.allow(a); ok || wait <= 0 || wait > time.Second {
		t.Errorf("empty bucket: %v %v", ok, wait)
	}
	if ok, _ := l.allow(b); !ok {
		t.Error("another client was limited")
	}
	now = now.Add(time.Second)
	if ok, _ := l.allow(a); !ok {
		t.Error("no refill after a second at 60/min")
	}
	// IPv6 clients share a bucket per /64.
	v6a, v6b := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")
	l.allow(v6a)
	l.allow(v6b)
	if ok, _ := l.allow(v6a); ok {
		t.Error("addresses of one /64 got separate buckets")
	}
	if ok, _ := l.allow(netip.MustParseAddr("2001:db8:1:3::1")); !ok {
		t.Error("another /64 was limited")
	}
	// Buckets that refilled are swept.
	now = now.Add(2 * time.Minute)
	l.allow(netip.MustParseAddr("192.0.2.1"))
	if n := l.size(); n != 1 {
		t.Errorf("%d buckets after the sweep, want 1", n)
	}
}

func TestClientIP(t *testing.T) {
	trusted, err := parsePrefixes([]string{"10.0.0.0/8", "192.0.2.10"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		remote string
		xff    []string
		want   string
	}{
		{"203.0.113.5:1234", nil, "203.0.113.5"},
		{"203.0.113.5:1234", []string{"1.2.3.4"}, "203.0.113.5"}, // untrusted peer: XFF ignored
		{"10.1.1.1:80", []string{"198.51.100.9"}, "198.51.100.9"},
		{"10.1.1.1:80", []string{"6.6.6.6, 198.51.100.9, 10.2.2.2"}, "198.51.100.9"}, // spoofed left value skipped
		{"10.1.1.1:80", []string{"6.6.6.6", "198.51.100.9"}, "198.51.100.9"},
		{"192.0.2.10:80", []string{"garbage"}, "192.0.2.10"},
		{"10.1.1.1:80", []string{"10.2.2.2, 10.3.3.3"}, "10.2.2.2"},
		{"[::ffff:203.0.113.5]:99", nil, "203.0.113.5"},
		{"[2001:db8::1]:443", nil, "2001:db8::1"},
		{"not an address", nil, "0.0.0.0"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = c.remote
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := clientIP(r, trusted).String(); got != c.want {
			t.Errorf("%s %v: %s, want %s", c.remote, c.xff, got, c.want)
		}
	}
}

func TestClusterUnavailable(t *testing.T) {
	e := newEnv(t)
	id, _ := e.create(2500)
	e.prop.setFail(fmt.Errorf("propose: no leader: %w", ErrUnavailable))
	resp, b := e.postJSON("/api/v1/donations", `{"amount_minor":2500,"currency":"EUR","email":"ada@example.org"}`)
	if resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, resp, b) != CodeUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("create: %d %s", resp.StatusCode, b)
	}
	resp, b = e.notifyDev("evt_u1", id, "payment.succeeded", 2500, time.Now())
	if resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, resp, b) != CodeUnavailable {
		t.Errorf("notify must fail (the gateway retries): %d %s", resp.StatusCode, b)
	}
	resp, b = e.postForm("/donate", url.Values{"amount": {"2500"}, "email": {"ada@example.org"}, "name": {"Ada <b>"}})
	if resp.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(b, []byte(`value="Ada &lt;b&gt;"`)) {
		t.Errorf("form: %d", resp.StatusCode)
	}
	e.prop.setFail(nil)
	if resp, b := e.notifyDev("evt_u1", id, "payment.succeeded", 2500, time.Now()); resp.StatusCode != http.StatusOK {
		t.Errorf("notify after recovery: %d %s", resp.StatusCode, b)
	}
	if tot := e.ledger.Totals("EUR"); tot.RaisedMinor != 2500 {
		t.Errorf("total %+v", tot)
	}
}

func TestInternalErrorIs500(t *testing.T) {
	e := newEnv(t)
	e.prop.setFail(errTest)
	resp, b := e.postJSON("/api/v1/donations", `{"amount_minor":2500,"currency":"EUR","email":"ada@example.org"}`)
	if resp.StatusCode != http.StatusInternalServerError || errorCode(t, resp, b) != CodeInternal || bytes.Contains(b, []byte(errTest.Error())) {
		t.Errorf("create: %d %s", resp.StatusCode, b)
	}
}

func TestGatewayCheckoutFails(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DefaultProvider = "fake" })
	e.fake.mu.Lock()
	e.fake.checkoutErr = errTest
	e.fake.mu.Unlock()
	resp, b := e.postJSON("/api/v1/donations", `{"amount_minor":2500,"currency":"EUR","email":"ada@example.org"}`, "Idempotency-Key", "gw-1")
	if resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, resp, b) != CodeGatewayUnavailable {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	// The donation is committed (pending); a retry with the same key gets it
	// and a checkout once the gateway is back.
	e.fake.mu.Lock()
	e.fake.checkoutErr = nil
	e.fake.mu.Unlock()
	resp, b = e.postJSON("/api/v1/donations", `{"amount_minor":2500,"currency":"EUR","email":"ada@example.org"}`, "Idempotency-Key", "gw-1")
	var d donationJSON
	if err := json.Unmarshal(b, &d); err != nil || resp.StatusCode != http.StatusCreated || d.CheckoutURL == "" || d.Status != "pending" {
		t.Fatalf("retry: %d %s", resp.StatusCode, b)
	}
}

func TestFormShowsErrorsWithInput(t *testing.T) {
	e := newEnv(t)
	resp, b := e.postForm("/donate", url.Values{"amount": {"5000"}, "email": {"not-an-email"}, "name": {`"><script>x</script>`}, "message": {"hello"}, "anonymous": {"1"}})
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("status %d", resp.StatusCode)
	}
	page := string(b)
	for _, want := range []string{
		`role="alert"`, "valid e-mail address", `value="not-an-email"`, `aria-invalid="true"`,
		`value="5000" checked`, `>hello</textarea>`, `name="anonymous" value="1" checked`,
		`value="&#34;&gt;&lt;script&gt;x&lt;/script&gt;"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("form page lacks %q", want)
		}
	}
	if strings.Contains(page, "<script>x") {
		t.Error("donor input not escaped")
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("cache control %q", cc)
	}
	// A custom amount wins over the preset and keeps its text.
	resp, b = e.postForm("/donate", url.Values{"amount": {"2500"}, "custom_amount": {"1.5"}, "email": {"ada@example.org"}})
	if resp.StatusCode != http.StatusUnprocessableEntity || !bytes.Contains(b, []byte(`value="1.5"`)) {
		t.Errorf("below-minimum custom amount: %d", resp.StatusCode)
	}
}

func TestHealth(t *testing.T) {
	e := newEnv(t)
	resp, b := e.get("/healthz")
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"status":"ok"`)) {
		t.Errorf("healthz: %d %s", resp.StatusCode, b)
	}
	for _, p := range []string{"/readyz", "/readyz?sync", "/readyz?sync&timeout=100ms"} {
		if resp, b := e.get(p); resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"status":"ready"`)) {
			t.Errorf("%s: %d %s", p, resp.StatusCode, b)
		}
	}
	e.health.set(fmt.Errorf("no leader"), nil)
	resp, b = e.get("/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, resp, b) != CodeNotReady {
		t.Errorf("not ready: %d %s", resp.StatusCode, b)
	}
	e.health.set(nil, fmt.Errorf("behind the leader"))
	resp, b = e.get("/readyz?sync&timeout=50ms")
	if resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, resp, b) != CodeNotReady {
		t.Errorf("not synced: %d %s", resp.StatusCode, b)
	}
	if resp, _ := e.get("/readyz"); resp.StatusCode != http.StatusOK {
		t.Errorf("readyz without sync: %d", resp.StatusCode)
	}
}

func TestServeAndShutdownLifecycle(t *testing.T) {
	s, _ := newTestServer(t)
	ctx := t.Context()
	s.Start(ctx)
	s.Start(ctx) // second Start does nothing
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("close after shutdown: %v", err)
	}
	if err := s.Serve(nil); err != http.ErrServerClosed {
		t.Errorf("serve after shutdown: %v", err)
	}
}
