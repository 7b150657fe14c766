package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
)

// donor is what one simulated donor types into the donate form. The
// harness varies it the way real input varies (names, addresses, an
// optional message) so that storage sees realistic bytes: one record
// repeated a million times compresses and compacts like nothing a campaign
// produces.
type donor struct {
	Name      string `json:"name"`
	Email     string `json:"email"`
	Anonymous bool   `json:"anonymous"`
	Message   string `json:"message"`
}

var (
	firstNames = []string{"Ada", "Amara", "Ben", "Chloé", "Dmitri", "Elif", "Fatima", "Grace", "Hiro", "Ines",
		"Jakob", "Kwame", "Lena", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Sami",
		"Tomasz", "Uma", "Vera", "Wei", "Yusuf", "Zoé", "Aoife", "Björn", "Carmen", "Declan"}
	lastNames = []string{"Okafor", "Schmidt", "García", "Nguyen", "Kowalski", "Rossi", "Dubois", "Yılmaz",
		"Andersson", "O'Brien", "Tanaka", "Müller", "Silva", "Haddad", "Novak", "Jensen", "Moreau",
		"Kaur", "Murphy", "Ivanova", "Costa", "Fischer", "Hughes", "Lindqvist", "Mensah"}
	mailDomains = []string{"example.org", "example.com", "mail.example.net", "post.example.de", "example.co.uk"}
	messages    = []string{"Good luck to everyone running tonight!", "For my mum, who would have loved this.",
		"Keep going!", "From all of us at the bakery on Hill Street.", "In memory of Grandad.",
		"Happy to help.", "Matched by my employer, hopefully.", "Thank you for doing this."}
)

// asciiFold turns a name into an address's local part, as people write
// theirs (garcía → garcia, o'brien → obrien).
var asciiFold = strings.NewReplacer("é", "e", "í", "i", "ı", "i", "ö", "o", "ü", "u", "'", "")

// randomDonor draws a donor: about one in ten anonymous, two in five with
// a message, the address built from the name with a number, as people's are.
func randomDonor() donor {
	first, last := firstNames[rand.IntN(len(firstNames))], lastNames[rand.IntN(len(lastNames))]
	local := asciiFold.Replace(strings.ToLower(first + "." + last))
	if n := rand.IntN(3); n > 0 {
		local += strconv.Itoa(rand.IntN(1000 * n))
	}
	d := donor{
		Name:      first + " " + last,
		Email:     local + "@" + mailDomains[rand.IntN(len(mailDomains))],
		Anonymous: rand.IntN(10) == 0,
	}
	if rand.IntN(5) < 2 {
		d.Message = messages[rand.IntN(len(messages))]
	}
	return d
}

// createBody is the JSON body of POST /api/v1/donations for this donor.
func (d donor) createBody(amount int64, currency string) []byte {
	b, _ := json.Marshal(struct {
		Amount   int64  `json:"amount_minor"`
		Currency string `json:"currency"`
		donor
	}{amount, currency, d}) // cannot fail: strings, numbers and a bool
	return b
}

// form is the donate page's form for this donor and a custom amount.
func (d donor) form(customAmount string) url.Values {
	f := url.Values{"custom_amount": {customAmount}, "name": {d.Name}, "email": {d.Email}, "message": {d.Message}}
	if d.Anonymous {
		f.Set("anonymous", "1")
	}
	return f
}

// requestHash is a SHA-256 of the request in hex, the shape and size of the
// hash web stamps on a create command (web/input.go), for the harnesses
// that build commands without HTTP.
func (d donor) requestHash(amount int64, currency string) string {
	sum := sha256.Sum256(d.createBody(amount, currency))
	return hex.EncodeToString(sum[:])
}
