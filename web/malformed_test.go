package web

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestMalformedRequests sends bad requests of every kind. Each must get its
// exact status and error code in the JSON error shape (the form ones get
// HTML), none may be a 5xx, and none may write to the ledger.
func TestMalformedRequests(t *testing.T) {
	e := newEnv(t)
	existing, _ := e.create(2500, "Idempotency-Key", "reused-key-1")
	now := time.Now()
	good := `{"amount_minor":2500,"currency":"EUR","name":"Ada","email":"ada@example.org"}`
	with := func(field, value string) string {
		return strings.Replace(good, `"name":"Ada"`, `"name":"Ada","`+field+`":`+value, 1)
	}
	big := strings.Repeat("x", 2<<20)

	type tc struct {
		name     string
		method   string
		path     string
		body     string
		reader   func() io.Reader // overrides body, e.g. to hide the length
		headers  []string
		status   int
		code     string // JSON error code; "" for the HTML form answers
		proposes bool   // reaches the ledger, which refuses it without changing state
	}
	api := func(name, body string, status int, code string, headers ...string) tc {
		return tc{name: name, method: http.MethodPost, path: "/api/v1/donations", body: body,
			headers: append([]string{"Content-Type", "application/json"}, headers...), status: status, code: code}
	}
	cases := []tc{
		api("bad json", `{"amount_minor":2500,}`, 400, CodeInvalidJSON),
		api("truncated json", `{"amount_minor":2500,"currency":"EU`, 400, CodeInvalidJSON),
		api("unquoted keys", `{amount_minor:2500}`, 400, CodeInvalidJSON),
		api("empty body", ``, 400, CodeInvalidJSON),
		api("whitespace body", " \n\t ", 400, CodeInvalidJSON),
		api("array body", `[1,2]`, 400, CodeInvalidJSON),
		api("string body", `"donate"`, 400, CodeInvalidJSON),
		api("null body", `null`, 400, CodeInvalidJSON),
		api("trailing object", good+` {}`, 400, CodeInvalidJSON),
		api("trailing garbage", good+`x`, 400, CodeInvalidJSON),
		api("invalid utf-8", strings.Replace(good, "Ada", "Ad\xff\xfe", 1), 400, CodeInvalidJSON),
		api("string amount", strings.Replace(good, "2500", `"2500"`, 1), 400, CodeInvalidField),
		api("float amount", strings.Replace(good, "2500", `25.5`, 1), 400, CodeInvalidField),
		api("exponent amount", strings.Replace(good, "2500", `2.5e3`, 1), 400, CodeInvalidField),
		api("bool amount", strings.Replace(good, "2500", `true`, 1), 400, CodeInvalidField),
		api("null amount", strings.Replace(good, "2500", `null`, 1), 400, CodeInvalidField),
		api("missing amount", `{"currency":"EUR","email":"ada@example.org"}`, 400, CodeInvalidField),
		api("bool name", strings.Replace(good, `"Ada"`, `true`, 1), 400, CodeInvalidField),
		api("object email", strings.Replace(good, `"ada@example.org"`, `{"x":1}`, 1), 400, CodeInvalidField),
		api("null currency", strings.Replace(good, `"EUR"`, `null`, 1), 400, CodeInvalidField),
		api("missing email", `{"amount_minor":2500,"currency":"EUR"}`, 400, CodeInvalidField),
		api("string anonymous", with("anonymous", `"yes"`), 400, CodeInvalidField),
		api("unknown field", with("amount", `2500`), 400, CodeInvalidField),
		api("field in other case", strings.Replace(good, "amount_minor", "Amount_Minor", 1), 400, CodeInvalidField),
		api("negative amount", strings.Replace(good, "2500", `-2500`, 1), 422, CodeInvalidAmount),
		api("zero amount", strings.Replace(good, "2500", `0`, 1), 422, CodeInvalidAmount),
		api("huge amount", strings.Replace(good, "2500", `99999999999999999999999999`, 1), 422, CodeInvalidAmount),
		api("below min", strings.Replace(good, "2500", `199`, 1), 422, CodeInvalidAmount),
		api("above max", strings.Replace(good, "2500", `1000001`, 1), 422, CodeInvalidAmount),
		api("unknown currency", strings.Replace(good, "EUR", `XYZ`, 1), 422, CodeUnknownCurrency),
		api("other currency", strings.Replace(good, "EUR", `USD`, 1), 422, CodeCurrencyNotAccepted),
		api("bad email", strings.Replace(good, "ada@example.org", `not-an-email`, 1), 422, CodeInvalidEmail),
		api("email with display name", strings.Replace(good, "ada@example.org", `Ada <ada@example.org>`, 1), 422, CodeInvalidEmail),
		api("email without dotted domain", strings.Replace(good, "ada@example.org", `ada@localhost`, 1), 422, CodeInvalidEmail),
		api("over-long email", strings.Replace(good, "ada@example.org", strings.Repeat("a", 250)+"@example.org", 1), 422, CodeInvalidEmail),
		api("over-long name", strings.Replace(good, `"Ada"`, `"`+strings.Repeat("é", 101)+`"`, 1), 422, CodeInvalidName),
		api("control character in name", strings.Replace(good, `"Ada"`, `"Ada\u0007"`, 1), 422, CodeInvalidName),
		api("escaped lone surrogate in name", strings.Replace(good, `"Ada"`, `"Ada\udc00"`, 1), 422, CodeInvalidName),
		api("over-long message", with("message", `"`+strings.Repeat("m", 1001)+`"`), 422, CodeInvalidMessage),
		api("2 MB body", `{"message":"`+big+`"}`, 413, CodeBodyTooLarge),
		{name: "2 MB body without length", method: http.MethodPost, path: "/api/v1/donations",
			reader:  func() io.Reader { return io.MultiReader(strings.NewReader(`{"message":"`), strings.NewReader(big)) },
			headers: []string{"Content-Type", "application/json"}, status: 413, code: CodeBodyTooLarge},
		api("text/plain", good, 415, CodeUnsupportedMediaType, "Content-Type", "text/plain"),
		api("form content type", good, 415, CodeUnsupportedMediaType, "Content-Type", "application/x-www-form-urlencoded"),
		api("latin-1 charset", good, 415, CodeUnsupportedMediaType, "Content-Type", "application/json; charset=latin1"),
		{name: "missing content type", method: http.MethodPost, path: "/api/v1/donations", body: good, status: 415, code: CodeUnsupportedMediaType},
		api("idempotency key with space", good, 400, CodeInvalidIdempotencyKey, "Idempotency-Key", "a b"),
		api("idempotency key too long", good, 400, CodeInvalidIdempotencyKey, "Idempotency-Key", strings.Repeat("k", 256)),
		api("idempotency key non-ascii", good, 400, CodeInvalidIdempotencyKey, "Idempotency-Key", "schlüssel"),
		{name: "reused idempotency key, other body", method: http.MethodPost, path: "/api/v1/donations",
			body: strings.Replace(good, "2500", "5000", 1), headers: []string{"Content-Type", "application/json", "Idempotency-Key", "reused-key-1"},
			status: 422, code: CodeIdempotencyKeyReused, proposes: true},
		{name: "cross-site API post", method: http.MethodPost, path: "/api/v1/donations", body: good,
			headers: []string{"Content-Type", "application/json", "Sec-Fetch-Site", "cross-site"}, status: 403, code: CodeCrossOrigin},

		{name: "id with encoded slashes", method: http.MethodGet, path: "/api/v1/donations/..%2f..", status: 400, code: CodeInvalidID},
		{name: "id of 300 chars", method: http.MethodGet, path: "/api/v1/donations/" + strings.Repeat("a", 300), status: 400, code: CodeInvalidID},
		{name: "id with markup", method: http.MethodGet, path: "/api/v1/donations/" + url.PathEscape("<x>"), status: 400, code: CodeInvalidID},
		{name: "id with dot", method: http.MethodGet, path: "/api/v1/donations/a.b", status: 400, code: CodeInvalidID},
		{name: "unknown id", method: http.MethodGet, path: "/api/v1/donations/0b6c1e9e-0000-4000-8000-000000000000", status: 404, code: CodeNotFound},

		{name: "notify unknown provider", method: http.MethodPost, path: "/payments/stripe/notify", body: `{}`, status: 404, code: CodeNotFound},
		{name: "notify missing signature", method: http.MethodPost, path: "/payments/dev/notify",
			body: devNote("evt_m1", existing, "payment.succeeded", 2500, now), status: 400, code: CodeBadSignature},
		{name: "notify forged signature", method: http.MethodPost, path: "/payments/dev/notify",
			body:    devNote("evt_m2", existing, "payment.succeeded", 2500, now),
			headers: []string{"Surge-Signature", signWith([]byte("not-the-secret-0123456789abcdef!"), now, devNote("evt_m2", existing, "payment.succeeded", 2500, now))},
			status:  400, code: CodeBadSignature},
		{name: "notify garbage signature", method: http.MethodPost, path: "/payments/dev/notify",
			body: devNote("evt_m3", existing, "payment.succeeded", 2500, now), headers: []string{"Surge-Signature", "t=abc,v1=zz"},
			status: 400, code: CodeBadSignature},
		{name: "notify stale signature", method: http.MethodPost, path: "/payments/dev/notify",
			body:    devNote("evt_m4", existing, "payment.succeeded", 2500, now.Add(-time.Hour)),
			headers: []string{"Surge-Signature", signWith(devSecret, now.Add(-time.Hour), devNote("evt_m4", existing, "payment.succeeded", 2500, now.Add(-time.Hour)))},
			status:  400, code: CodeStaleSignature},
		{name: "notify tampered body", method: http.MethodPost, path: "/payments/dev/notify",
			body:    devNote("evt_m5", existing, "payment.succeeded", 2500, now),
			headers: []string{"Surge-Signature", signWith(devSecret, now, devNote("evt_m5", existing, "payment.succeeded", 250, now))},
			status:  400, code: CodeBadSignature},
		{name: "notify signed garbage", method: http.MethodPost, path: "/payments/dev/notify",
			body: `{"id":1}`, headers: []string{"Surge-Signature", signWith(devSecret, now, `{"id":1}`)},
			status: 400, code: CodeMalformedNotification},
		{name: "notify unknown donation", method: http.MethodPost, path: "/payments/dev/notify",
			body:    devNote("evt_m6", "no-such-donation", "payment.succeeded", 2500, now),
			headers: []string{"Surge-Signature", signWith(devSecret, now, devNote("evt_m6", "no-such-donation", "payment.succeeded", 2500, now))},
			status:  404, code: CodeNotFound, proposes: true},
		{name: "notify amount mismatch", method: http.MethodPost, path: "/payments/dev/notify",
			body:    devNote("evt_m7", existing, "payment.succeeded", 999, now),
			headers: []string{"Surge-Signature", signWith(devSecret, now, devNote("evt_m7", existing, "payment.succeeded", 999, now))},
			status:  422, code: CodeAmountMismatch, proposes: true},
		{name: "notify 2 MB", method: http.MethodPost, path: "/payments/dev/notify", body: big, status: 413, code: CodeBodyTooLarge},

		{name: "return without donation", method: http.MethodGet, path: "/payments/dev/return?outcome=succeeded", status: 400, code: CodeInvalidReturn},
		{name: "return with odd id", method: http.MethodGet, path: "/payments/dev/return?donation=%3Cscript%3E", status: 400, code: CodeInvalidReturn},
		{name: "return unknown provider", method: http.MethodGet, path: "/payments/nope/return?donation=abc", status: 404, code: CodeNotFound},

		{name: "GET create endpoint", method: http.MethodGet, path: "/api/v1/donations", status: 405, code: CodeMethodNotAllowed},
		{name: "PUT donation", method: http.MethodPut, path: "/api/v1/donations/" + existing, body: good, status: 405, code: CodeMethodNotAllowed},
		{name: "GET notify", method: http.MethodGet, path: "/payments/dev/notify", status: 405, code: CodeMethodNotAllowed},
		{name: "POST total", method: http.MethodPost, path: "/api/v1/total", status: 405, code: CodeMethodNotAllowed},
		{name: "readyz bad timeout", method: http.MethodGet, path: "/readyz?sync&timeout=forever", status: 400, code: CodeInvalidTimeout},

		{name: "form cross-site", method: http.MethodPost, path: "/donate", body: "amount=2500&email=ada%40example.org",
			headers: []string{"Content-Type", "application/x-www-form-urlencoded", "Sec-Fetch-Site", "cross-site"}, status: 403, code: CodeCrossOrigin},
		{name: "form from another origin", method: http.MethodPost, path: "/donate", body: "amount=2500&email=ada%40example.org",
			headers: []string{"Content-Type", "application/x-www-form-urlencoded", "Origin", "https://evil.example"}, status: 403, code: CodeCrossOrigin},
		{name: "form as JSON", method: http.MethodPost, path: "/donate", body: good,
			headers: []string{"Content-Type", "application/json"}, status: 415, code: CodeUnsupportedMediaType},
		{name: "form bad custom amount", method: http.MethodPost, path: "/donate", body: "custom_amount=25%2C50&email=ada%40example.org",
			headers: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 422},
		{name: "form preset not a number", method: http.MethodPost, path: "/donate", body: "amount=lots&email=ada%40example.org",
			headers: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 422},
		{name: "form amount above max", method: http.MethodPost, path: "/donate", body: "custom_amount=1000000&email=ada%40example.org",
			headers: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 422},
		{name: "form without amount", method: http.MethodPost, path: "/donate", body: "email=ada%40example.org",
			headers: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 422},
		{name: "form bad email", method: http.MethodPost, path: "/donate", body: "amount=2500&email=ada",
			headers: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 422},
		{name: "form bad encoding", method: http.MethodPost, path: "/donate", body: "amount=2500&email=%zz",
			headers: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 400},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.ledger.Applied()
			total := e.ledger.Totals("EUR")
			var body io.Reader = strings.NewReader(c.body)
			if c.reader != nil {
				body = c.reader()
			}
			req := e.request(c.method, c.path, body, c.headers...)
			if c.reader != nil {
				req.ContentLength = -1
			}
			resp, b := e.do(req)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d; body %.300s", resp.StatusCode, c.status, b)
			}
			if c.code != "" {
				if got := errorCode(t, resp, b); got != c.code {
					t.Errorf("code %q, want %q", got, c.code)
				}
			} else if ct := resp.Header.Get("Content-Type"); ct != contentHTML || !bytes.Contains(b, []byte(`role="alert"`)) {
				t.Errorf("form error answer: %q without the alert", ct)
			}
			want := before
			if c.proposes {
				want++ // the ledger saw it and refused it
			}
			if got := e.ledger.Applied(); got != want {
				t.Errorf("ledger applied %d commands, want %d", got-before, want-before)
			}
			if got := e.ledger.Totals("EUR"); got != total {
				t.Errorf("total changed: %+v -> %+v", total, got)
			}
		})
	}
	if d, _, _ := e.ledger.Donation(existing); d.Status != "pending" || d.Amount.Minor != 2500 {
		t.Errorf("existing donation changed: %+v", d)
	}
}

func TestOddPaths(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		path   string
		status int
		code   string
	}{
		{"/api/v1/donations/", 404, CodeNotFound},
		{"/api/v1/donations/abc/def", 400, CodeInvalidID}, // echo hands "abc/def" to :id; it is refused

		{"/api/v1/donations/%00", 400, CodeInvalidID},
		{"/payments//notify", 405, CodeMethodNotAllowed},
		{"/api/" + strings.Repeat("x", 5000), 404, CodeNotFound},
	} {
		resp, b := e.get(c.path)
		if resp.StatusCode != c.status {
			t.Errorf("%s: %d, want %d: %.200s", c.path[:min(len(c.path), 40)], resp.StatusCode, c.status, b)
			continue
		}
		if got := errorCode(t, resp, b); got != c.code {
			t.Errorf("%s: code %q, want %q", c.path[:min(len(c.path), 40)], got, c.code)
		}
	}
}
