package payment

import (
	"bytes"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"

	"github.com/surgefund/surge/donation"
)

// maxFormBytes bounds the body of a Pay/Decline POST.
const maxFormBytes = 4 << 10

// The pages are plain semantic HTML: no script, no inline style, no
// stylesheet, so they pass the node's strict CSP unchanged.
var (
	checkoutPage = template.Must(template.New("checkout").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Surge test gateway</title>
</head>
<body>
<main>
<h1>Surge test gateway — no real money moves</h1>
<p>This page stands in for a payment provider. Choose what the payment does.</p>
<dl>
<dt>Amount</dt>
<dd>{{.Amount}}</dd>
<dt>Donation</dt>
<dd><code>{{.DonationID}}</code></dd>
{{- if .Description}}
<dt>Description</dt>
<dd>{{.Description}}</dd>
{{- end}}
</dl>
<form method="post">
<p>
<button type="submit" name="outcome" value="succeeded">Pay {{.Amount}}</button>
<button type="submit" name="outcome" value="failed">Decline</button>
</p>
</form>
</main>
</body>
</html>
`))
	problemPage = template.Must(template.New("problem").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{.Title}} — Surge test gateway</title>
</head>
<body>
<main>
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
</main>
</body>
</html>
`))
)

type checkoutView struct {
	Amount      string
	DonationID  string
	Description string
}

type problemView struct{ Title, Message string }

// serveHTTP routes GET/HEAD and POST of /gateway/dev/checkout/{token}.
func (d *Dev) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer") // the token is in the URL
	h.Set("X-Content-Type-Options", "nosniff")

	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, DevPrefix); ok {
		p = rest
	} else {
		p = strings.TrimPrefix(p, "/") // mounted with the prefix stripped
	}
	tok, ok := strings.CutPrefix(p, "checkout/")
	if !ok || tok == "" || strings.Contains(tok, "/") {
		d.problem(w, http.StatusNotFound, "Page not found", "There is no test gateway page at this address.")
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		d.showCheckout(w, tok)
	case http.MethodPost:
		d.completeCheckout(w, r, tok)
	default:
		h.Set("Allow", "GET, HEAD, POST")
		d.problem(w, http.StatusMethodNotAllowed, "Method not allowed", "This page answers GET and POST only.")
	}
}

func (d *Dev) readToken(w http.ResponseWriter, tok string) (claims, bool) {
	c, err := decodeToken(d.secret, tok, d.now())
	switch {
	case errors.Is(err, errTokenExpired):
		d.problem(w, http.StatusBadRequest, "Checkout link expired",
			"This test payment link has expired. Start a new donation to get a fresh one.")
		return claims{}, false
	case err != nil:
		d.problem(w, http.StatusBadRequest, "Checkout link not valid",
			"This test payment link is damaged or was not issued by this campaign.")
		return claims{}, false
	}
	return c, true
}

func (d *Dev) showCheckout(w http.ResponseWriter, tok string) {
	c, ok := d.readToken(w, tok)
	if !ok {
		return
	}
	amt := c.amount()
	d.render(w, http.StatusOK, checkoutPage, checkoutView{
		Amount:      donation.FormatMinor(amt.Minor, amt.Currency) + " " + string(amt.Currency),
		DonationID:  c.ID,
		Description: c.Desc,
	})
}

func (d *Dev) completeCheckout(w http.ResponseWriter, r *http.Request, tok string) {
	c, ok := d.readToken(w, tok)
	if !ok {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		d.problem(w, http.StatusBadRequest, "Form not readable", "The payment form could not be read. Go back and try again.")
		return
	}
	var o donation.Outcome
	switch v := r.PostForm["outcome"]; {
	case len(v) == 1 && v[0] == string(donation.OutcomeSucceeded):
		o = donation.OutcomeSucceeded
	case len(v) == 1 && v[0] == string(donation.OutcomeFailed):
		o = donation.OutcomeFailed
	default:
		d.problem(w, http.StatusBadRequest, "Choose Pay or Decline", "The form must say outcome=succeeded or outcome=failed.")
		return
	}
	if err := d.send(r.Context(), c, o); err != nil {
		d.log.Warn("dev checkout not sent", "donation", c.ID, "outcome", o, "err", err)
		w.Header().Set("Retry-After", "5")
		d.problem(w, http.StatusServiceUnavailable, "Test gateway busy",
			"The test gateway cannot take this payment right now. Go back and try again in a moment.")
		return
	}
	// The return URL comes from the signed token, so this is no open redirect.
	u, err := url.Parse(c.Return)
	if err != nil { // checked when the token was made and read; kept for safety
		d.problem(w, http.StatusBadRequest, "Checkout link not valid", "The return address of this link is not valid.")
		return
	}
	q := u.Query()
	q.Set("donation", c.ID)
	q.Set("outcome", string(o))
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

func (d *Dev) problem(w http.ResponseWriter, status int, title, msg string) {
	d.render(w, status, problemPage, problemView{Title: title, Message: msg})
}

func (d *Dev) render(w http.ResponseWriter, status int, t *template.Template, v any) {
	var b bytes.Buffer
	if err := t.Execute(&b, v); err != nil {
		// The templates are fixed and their data are plain strings: this
		// cannot happen short of a programming error.
		d.log.Error("dev gateway page render", "err", err)
		http.Error(w, "page render failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}
