package main

import (
	"encoding/json"
	"net/mail"
	"regexp"
	"testing"
)

// TestRandomDonorsAreValidAndVaried: the simulated donors pass the checks a
// donate form's input meets (a plain ASCII address, a name), carry a hash
// of web's shape, and vary, which is their reason to exist.
func TestRandomDonorsAreValidAndVaried(t *testing.T) {
	ascii := regexp.MustCompile(`^[a-z0-9.]+@[a-z0-9.-]+$`)
	hash := regexp.MustCompile(`^[0-9a-f]{64}$`)
	names, emails, hashes := map[string]bool{}, map[string]bool{}, map[string]bool{}
	withMessage := 0
	const n = 2000
	for range n {
		d := randomDonor()
		var body struct {
			Amount   int64  `json:"amount_minor"`
			Currency string `json:"currency"`
			Name     string `json:"name"`
			Email    string `json:"email"`
			Message  string `json:"message"`
		}
		if err := json.Unmarshal(d.createBody(2500, "EUR"), &body); err != nil {
			t.Fatalf("body of %+v: %v", d, err)
		}
		if body.Amount != 2500 || body.Currency != "EUR" || body.Name != d.Name || body.Email != d.Email || body.Message != d.Message {
			t.Fatalf("body %+v does not carry donor %+v", body, d)
		}
		if _, err := mail.ParseAddress(d.Email); err != nil || !ascii.MatchString(d.Email) {
			t.Fatalf("address %q: %v", d.Email, err)
		}
		if d.Name == "" {
			t.Fatalf("no name: %+v", d)
		}
		h := d.requestHash(2500, "EUR")
		if !hash.MatchString(h) {
			t.Fatalf("hash %q", h)
		}
		if d.Message != "" {
			withMessage++
		}
		names[d.Name], emails[d.Email], hashes[h] = true, true, true
	}
	if len(names) < 300 || len(emails) < n/2 || len(hashes) < n/2 {
		t.Errorf("too little variety in %d donors: %d names, %d addresses, %d hashes", n, len(names), len(emails), len(hashes))
	}
	if withMessage < n/4 || withMessage > n/2 {
		t.Errorf("%d of %d donors left a message, want about two in five", withMessage, n)
	}
}
