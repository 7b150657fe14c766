package web

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/surgefund/surge/site"
)

// FuzzDecodeDonation: the API decoder and the campaign rules never panic,
// and every failure is a client error with a code that maps to 4xx.
func FuzzDecodeDonation(f *testing.F) {
	for _, s := range []string{
		`{"amount_minor":2500,"currency":"EUR","name":"Ada","email":"ada@example.org"}`,
		`{"amount_minor":-1}`, `{"amount_minor":1e3}`, `[]`, `null`, `{"currency":null}`, "{\"name\":\"\xff\"}",
		`{"amount_minor":99999999999999999999,"currency":"eur","email":"a@b.c","anonymous":true,"message":"hi"}`,
	} {
		f.Add([]byte(s))
	}
	c, err := LoadCampaign(site.FS())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in, amount, err := decodeDonationJSON(body)
		if err == nil {
			err = c.checkInput(&in, amount)
		}
		if err == nil {
			if in.Amount < c.MinMinor || in.Amount > c.MaxMinor || in.Currency != c.Currency || in.Email == "" {
				t.Fatalf("accepted bad input %+v", in)
			}
			if in.requestHash() == "" {
				t.Fatal("no request hash")
			}
			return
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error without code: %v", err)
		}
		if s := statusFor(e.Code); s < 400 || s >= 500 {
			t.Fatalf("client input gave %d (%s)", s, e.Code)
		}
	})
}

// FuzzAcceptEncoding: negotiation never panics and picks only what the
// header allows.
func FuzzAcceptEncoding(f *testing.F) {
	for _, s := range []string{"gzip, br", "br;q=0", "*", "*;q=0, gzip", ";;,,q=", "gzip;q=0.000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		br, gz := acceptEncodings(h)
		lower := strings.ToLower(h)
		if br && !strings.Contains(lower, "br") && !strings.Contains(h, "*") {
			t.Fatalf("%q: br without br or *", h)
		}
		if gz && !strings.Contains(lower, "gzip") && !strings.Contains(h, "*") {
			t.Fatalf("%q: gzip without gzip or *", h)
		}
		_ = etagListMatch([]string{h}, `"x"`)
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = h
		r.Header.Set("X-Forwarded-For", h)
		_ = clientIP(r, nil)
	})
}
