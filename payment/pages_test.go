package payment

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/surgefund/surge/donation"
)

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock    { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// serve runs one request through the handler, as mounted under its prefix.
func serve(d *Dev, method, target string, form url.Values) *httptest.ResponseRecorder {
	var r *http.Request
	if form != nil {
		r = httptest.NewRequest(method, target, strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		r = httptest.NewRequest(method, target, nil)
	}
	w := httptest.NewRecorder()
	d.Handler().ServeHTTP(w, r)
	return w
}

func pathOf(t *testing.T, co Checkout) string {
	t.Helper()
	u, err := url.Parse(co.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Path
}

func TestCheckoutPageShowsDonation(t *testing.T) {
	d, err := NewDev(testConfig("http://gw.test/"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		amount donation.Money
		shown  string
	}{
		{eur(2500), "25.00 EUR"},
		{eur(1234567), "12,345.67 EUR"},
		{donation.Money{Minor: 1000, Currency: "JPY"}, "1,000 JPY"},
		{donation.Money{Minor: 1234, Currency: "KWD"}, "1.234 KWD"},
	} {
		t.Run(tc.shown, func(t *testing.T) {
			co := checkout(t, d, "0f8fad5b-d9cb-469f-a165-70867728950e", tc.amount, "http://gw.test/payments/dev/return", "http://gw.test/payments/dev/notify")
			if !strings.HasPrefix(co.URL, "http://gw.test/gateway/dev/checkout/") {
				t.Fatalf("checkout URL %q", co.URL)
			}
			w := serve(d, http.MethodGet, pathOf(t, co), nil)
			if w.Code != http.StatusOK {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			body := w.Body.String()
			if miss, ok := hasAll(body, "Surge test gateway — no real money moves", tc.shown,
				"0f8fad5b-d9cb-469f-a165-70867728950e", "Test campaign", `<form method="post">`,
				`name="outcome" value="succeeded"`, `name="outcome" value="failed"`, `lang="en"`); !ok {
				t.Fatalf("page lacks %q:\n%s", miss, body)
			}
			for _, bad := range []string{"<script", "style=", "<style", "<link"} {
				if strings.Contains(body, bad) {
					t.Fatalf("page contains %q (the node's CSP forbids it)", bad)
				}
			}
			h := w.Header()
			if h.Get("Content-Type") != "text/html; charset=utf-8" || h.Get("Cache-Control") != "no-store" ||
				h.Get("Referrer-Policy") != "no-referrer" {
				t.Fatalf("headers %v", h)
			}
		})
	}
}

func TestCheckoutPageEscapesDescription(t *testing.T) {
	d, err := NewDev(testConfig("http://gw.test"))
	if err != nil {
		t.Fatal(err)
	}
	co, err := d.Checkout(context.Background(), CheckoutRequest{DonationID: "d1", Amount: eur(100),
		Description: `<script>alert(1)</script>` + strings.Repeat("é", 200),
		ReturnURL:   "http://gw.test/r", NotifyURL: "http://gw.test/n"})
	if err != nil {
		t.Fatal(err)
	}
	body := serve(d, http.MethodGet, pathOf(t, co), nil).Body.String()
	if strings.Contains(body, "<script") || !strings.Contains(body, "&lt;script&gt;") {
		t.Fatalf("description not escaped:\n%s", body)
	}
}

func TestCheckoutTokenRejected(t *testing.T) {
	clk := newClock(time.Unix(1_760_000_000, 0))
	cfg := testConfig("http://gw.test")
	cfg.Now = clk.Now
	d, err := NewDev(cfg)
	if err != nil {
		t.Fatal(err)
	}
	other := testConfig("http://gw.test")
	other.Secret = []byte("a-different-secret-entirely")
	od, err := NewDev(other)
	if err != nil {
		t.Fatal(err)
	}
	req := func(id string) CheckoutRequest {
		return CheckoutRequest{DonationID: id, Amount: eur(2500), ReturnURL: "http://gw.test/r", NotifyURL: "http://127.0.0.1:1/n"}
	}
	tokenOf := func(co Checkout, err error) string {
		if err != nil {
			t.Fatal(err)
		}
		return co.URL[strings.LastIndex(co.URL, "/")+1:]
	}
	valid := tokenOf(d.Checkout(context.Background(), req("don-1")))
	foreign := tokenOf(od.Checkout(context.Background(), req("don-1")))
	payload, sig, _ := strings.Cut(valid, ".")
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	// Tokens with a valid MAC but claims the gateway never issues.
	signed := func(c claims) string {
		tok, err := encodeToken(testSecret, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	base := claims{V: 1, ID: "don-1", Minor: 2500, Cur: "EUR", Return: "http://gw.test/r", Notify: "http://gw.test/n", Exp: clk.Now().Unix() + 60}
	mod := func(f func(*claims)) string { c := base; f(&c); return signed(c) }

	cases := []struct {
		name, token string
		status      int
		says        string
	}{
		{"tampered payload", flip(payload, 10) + "." + sig, 400, "not valid"},
		{"tampered signature", payload + "." + flip(sig, 5), 400, "not valid"},
		{"signature cut", payload + "." + sig[:20], 400, "not valid"},
		{"no signature", payload, 400, "not valid"},
		{"wrong secret", foreign, 400, "not valid"},
		{"garbage", "hello", 400, "not valid"},
		{"dots only", "...", 400, "not valid"},
		{"too long", strings.Repeat("a", 5000) + "." + sig, 400, "not valid"},
		{"signed, other version", mod(func(c *claims) { c.V = 2 }), 400, "not valid"},
		{"signed, bad currency", mod(func(c *claims) { c.Cur = "XXX" }), 400, "not valid"},
		{"signed, negative amount", mod(func(c *claims) { c.Minor = -5 }), 400, "not valid"},
		{"signed, bad id", mod(func(c *claims) { c.ID = "a b" }), 400, "not valid"},
		{"signed, javascript return", mod(func(c *claims) { c.Return = "javascript:alert(1)" }), 400, "not valid"},
		{"signed, relative notify", mod(func(c *claims) { c.Notify = "/n" }), 400, "not valid"},
		{"signed, expired", mod(func(c *claims) { c.Exp = clk.Now().Unix() - 1 }), 400, "expired"},
		{"empty token", "", 404, "not found"},
		{"extra segment", valid + "/x", 404, "not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			target := DevPrefix + "checkout/" + tc.token
			for _, w := range []*httptest.ResponseRecorder{
				serve(d, http.MethodGet, target, nil),
				serve(d, http.MethodPost, target, url.Values{"outcome": {"succeeded"}}),
			} {
				if w.Code != tc.status {
					t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
				}
				if ct := w.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
					t.Fatalf("content type %q", ct)
				}
				if !strings.Contains(strings.ToLower(w.Body.String()), tc.says) {
					t.Fatalf("page does not say %q:\n%s", tc.says, w.Body)
				}
			}
		})
	}
	if s := d.Stats(); s.Attempts != 0 || s.Pending != 0 {
		t.Fatalf("a rejected token caused delivery work: %+v", s)
	}

	t.Run("expires after the TTL", func(t *testing.T) {
		target := DevPrefix + "checkout/" + valid
		if w := serve(d, http.MethodGet, target, nil); w.Code != http.StatusOK {
			t.Fatalf("fresh token: status %d", w.Code)
		}
		clk.Add(24*time.Hour + time.Second)
		w := serve(d, http.MethodGet, target, nil)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "expired") {
			t.Fatalf("expired token: status %d: %s", w.Code, w.Body)
		}
	})
}

func TestHandlerRouting(t *testing.T) {
	d, err := NewDev(testConfig("http://gw.test"))
	if err != nil {
		t.Fatal(err)
	}
	co := checkout(t, d, "don-1", eur(500), "http://gw.test/r", "http://127.0.0.1:1/n")
	p := pathOf(t, co)
	stripped := strings.TrimPrefix(p, DevPrefix)
	cases := []struct {
		name, method, target string
		form                 url.Values
		status               int
	}{
		{"get", http.MethodGet, p, nil, 200},
		{"head", http.MethodHead, p, nil, 200},
		{"prefix stripped by the mount", http.MethodGet, "/" + stripped, nil, 200},
		{"index", http.MethodGet, DevPrefix, nil, 404},
		{"unknown page", http.MethodGet, DevPrefix + "refund/x", nil, 404},
		{"put", http.MethodPut, p, nil, 405},
		{"delete", http.MethodDelete, p, nil, 405},
		{"post without outcome", http.MethodPost, p, url.Values{}, 400},
		{"post unknown outcome", http.MethodPost, p, url.Values{"outcome": {"refunded"}}, 400},
		{"post outcome twice", http.MethodPost, p, url.Values{"outcome": {"succeeded", "failed"}}, 400},
		{"post processing", http.MethodPost, p, url.Values{"outcome": {"processing"}}, 400},
		{"post oversized form", http.MethodPost, p, url.Values{"outcome": {"succeeded"}, "pad": {strings.Repeat("x", 8<<10)}}, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := serve(d, tc.method, tc.target, tc.form)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status == 405 && w.Header().Get("Allow") != "GET, HEAD, POST" {
				t.Fatalf("Allow = %q", w.Header().Get("Allow"))
			}
		})
	}
	if s := d.Stats(); s.Attempts != 0 || s.Pending != 0 {
		t.Fatalf("refused requests caused delivery work: %+v", s)
	}
}

func TestCheckoutValidatesRequest(t *testing.T) {
	d, err := NewDev(testConfig("http://gw.test"))
	if err != nil {
		t.Fatal(err)
	}
	ok := CheckoutRequest{DonationID: "01JD6W3T6Z8N0V3Q2X9B7C5K4M", Amount: eur(2500), ReturnURL: "https://x.test/r?lang=en", NotifyURL: "http://10.0.0.1:8080/payments/dev/notify"}
	cases := []struct {
		name string
		mod  func(*CheckoutRequest)
		want error
	}{
		{"valid", func(*CheckoutRequest) {}, nil},
		{"empty id", func(r *CheckoutRequest) { r.DonationID = "" }, ErrInvalidCheckout},
		{"id too long", func(r *CheckoutRequest) { r.DonationID = strings.Repeat("a", 65) }, ErrInvalidCheckout},
		{"id with space", func(r *CheckoutRequest) { r.DonationID = "a b" }, ErrInvalidCheckout},
		{"zero amount", func(r *CheckoutRequest) { r.Amount.Minor = 0 }, ErrInvalidCheckout},
		{"unknown currency", func(r *CheckoutRequest) { r.Amount.Currency = "XYZ" }, ErrInvalidCheckout},
		{"relative return", func(r *CheckoutRequest) { r.ReturnURL = "/payments/dev/return" }, ErrInvalidCheckout},
		{"ftp notify", func(r *CheckoutRequest) { r.NotifyURL = "ftp://x.test/n" }, ErrInvalidCheckout},
		{"missing notify", func(r *CheckoutRequest) { r.NotifyURL = "" }, ErrInvalidCheckout},
		{"user info in notify", func(r *CheckoutRequest) { r.NotifyURL = "http://u:p@x.test/n" }, ErrInvalidCheckout},
		{"return too long", func(r *CheckoutRequest) { r.ReturnURL = "http://x.test/" + strings.Repeat("a", 1100) }, ErrInvalidCheckout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			tc.mod(&r)
			co, err := d.Checkout(context.Background(), r)
			if !isSentinel(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err != nil {
				return
			}
			if !regexp.MustCompile(`^dev_[0-9a-f]{16}$`).MatchString(co.Ref) {
				t.Fatalf("ref %q", co.Ref)
			}
			if len(co.URL) > 1024 {
				t.Fatalf("checkout URL is %d bytes", len(co.URL))
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Checkout(ctx, ok); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: err = %v", err)
	}
}

func TestRefAndEventIDsAreSharedByNodes(t *testing.T) {
	a, err := NewDev(testConfig("http://a.test"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewDev(testConfig("http://b.test"))
	if err != nil {
		t.Fatal(err)
	}
	if a.ref("d1") != b.ref("d1") || a.ref("d1") == a.ref("d2") {
		t.Fatal("refs must be per donation and the same on every node")
	}
	if a.eventID("d1", donation.OutcomeSucceeded) != b.eventID("d1", donation.OutcomeSucceeded) {
		t.Fatal("event ids must be the same on every node")
	}
	ids := map[string]bool{}
	for _, id := range []string{"d1", "d2"} {
		for _, o := range []donation.Outcome{donation.OutcomeSucceeded, donation.OutcomeFailed, donation.OutcomeProcessing} {
			e := a.eventID(id, o)
			if !regexp.MustCompile(`^evt_[0-9a-f]{24}$`).MatchString(e) || ids[e] {
				t.Fatalf("event id %q malformed or repeated", e)
			}
			ids[e] = true
		}
	}
}

func TestParseReturn(t *testing.T) {
	d, err := NewDev(testConfig("http://gw.test"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		query   string
		want    ReturnHint
		wantErr error
	}{
		{"succeeded", "donation=d-1&outcome=succeeded", ReturnHint{"d-1", donation.OutcomeSucceeded}, nil},
		{"failed", "donation=d-1&outcome=failed", ReturnHint{"d-1", donation.OutcomeFailed}, nil},
		{"no outcome", "donation=d-1", ReturnHint{"d-1", ""}, nil},
		{"odd outcome is dropped", "donation=d-1&outcome=refunded", ReturnHint{"d-1", ""}, nil},
		{"processing is no return outcome", "donation=d-1&outcome=processing", ReturnHint{"d-1", ""}, nil},
		{"extra params ignored", "lang=en&donation=d-1", ReturnHint{"d-1", ""}, nil},
		{"missing donation", "outcome=succeeded", ReturnHint{}, ErrMalformed},
		{"empty donation", "donation=", ReturnHint{}, ErrMalformed},
		{"two donations", "donation=a&donation=b", ReturnHint{}, ErrMalformed},
		{"bad charset", "donation=%3Cscript%3E", ReturnHint{}, ErrMalformed},
		{"too long", "donation=" + strings.Repeat("a", 65), ReturnHint{}, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.ParseReturn(q)
			if !isSentinel(err, tc.wantErr) || got != tc.want {
				t.Fatalf("ParseReturn = %+v, %v; want %+v, %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestLookupNotSupported(t *testing.T) {
	d, err := NewDev(testConfig("http://gw.test"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Lookup(context.Background(), "d1", "dev_x"); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("Lookup err = %v", err)
	}
	if d.Name() != "dev" || d.Prefix() != "/gateway/dev/" {
		t.Fatalf("name %q prefix %q", d.Name(), d.Prefix())
	}
}

func TestDevConfigValidate(t *testing.T) {
	if err := DefaultDevConfig().Validate(); err == nil {
		t.Fatal("defaults without secret and base URL must not validate")
	}
	cases := []struct {
		name string
		mod  func(*DevConfig)
		ok   bool
	}{
		{"valid", func(*DevConfig) {}, true},
		{"https base with path", func(c *DevConfig) { c.BaseURL = "https://donate.example.org/surge/" }, true},
		{"short secret", func(c *DevConfig) { c.Secret = []byte("short") }, false},
		{"no base url", func(c *DevConfig) { c.BaseURL = "" }, false},
		{"relative base url", func(c *DevConfig) { c.BaseURL = "/x" }, false},
		{"base url with query", func(c *DevConfig) { c.BaseURL = "http://x.test/?a=1" }, false},
		{"zero window", func(c *DevConfig) { c.Window = 0 }, false},
		{"negative delay", func(c *DevConfig) { c.Delay = -time.Second }, false},
		{"zero retry min", func(c *DevConfig) { c.RetryMin = 0 }, false},
		{"retry max below min", func(c *DevConfig) { c.RetryMax = c.RetryMin / 2 }, false},
		{"zero give up", func(c *DevConfig) { c.GiveUpAfter = 0 }, false},
		{"zero ttl", func(c *DevConfig) { c.CheckoutTTL = 0 }, false},
		{"zero attempt timeout", func(c *DevConfig) { c.AttemptTimeout = 0 }, false},
		{"zero queue", func(c *DevConfig) { c.QueueSize = 0 }, false},
		{"zero workers", func(c *DevConfig) { c.Workers = 0 }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig("http://gw.test")
			tc.mod(&c)
			err := c.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tc.ok)
			}
			if _, nerr := NewDev(c); (nerr == nil) != tc.ok {
				t.Fatalf("NewDev = %v, want ok=%v", nerr, tc.ok)
			}
		})
	}
}
