package payment

import (
	"bytes"
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/surgefund/surge/donation"
)

// The checkout token is the whole state of a checkout:
//
//	base64url(JSON claims) "." base64url(HMAC-SHA256(secret, "surge-dev-checkout-v1." + first part))
//
// The MAC input starts with a label so that no other value signed with the
// same secret (notifications start with digits) can pass for a token.
const (
	tokenVersion = 1
	tokenLabel   = "surge-dev-checkout-v1."
	maxTokenLen  = 4096
	maxURLLen    = 1024
	maxDescLen   = 140
)

var (
	errTokenInvalid = errors.New("checkout token invalid")
	errTokenExpired = errors.New("checkout token expired")
)

// claims are what the token carries, with short names to keep URLs short.
type claims struct {
	V      int    `json:"v"`
	ID     string `json:"d"`
	Minor  int64  `json:"m"`
	Cur    string `json:"c"`
	Desc   string `json:"s,omitempty"`
	Return string `json:"r"`
	Notify string `json:"n"`
	Exp    int64  `json:"e"` // unix seconds
}

func (c claims) amount() donation.Money {
	return donation.Money{Minor: c.Minor, Currency: donation.Currency(c.Cur)}
}

func encodeToken(secret []byte, c claims) (string, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encode token: %w", err)
	}
	p := base64.RawURLEncoding.EncodeToString(b)
	return p + "." + base64.RawURLEncoding.EncodeToString(mac(secret, tokenLabel, p)), nil
}

// decodeToken authenticates tok before it parses anything, then checks the
// claims and the expiry against now.
func decodeToken(secret []byte, tok string, now time.Time) (claims, error) {
	if len(tok) > maxTokenLen {
		return claims{}, fmt.Errorf("%w: too long", errTokenInvalid)
	}
	p, sig, ok := strings.Cut(tok, ".")
	if !ok || p == "" {
		return claims{}, fmt.Errorf("%w: not a token", errTokenInvalid)
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, mac(secret, tokenLabel, p)) {
		return claims{}, fmt.Errorf("%w: bad signature", errTokenInvalid)
	}
	raw, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil || !utf8.Valid(raw) {
		return claims{}, fmt.Errorf("%w: bad encoding", errTokenInvalid)
	}
	var c claims
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || dec.More() {
		return claims{}, fmt.Errorf("%w: bad claims", errTokenInvalid)
	}
	switch {
	case c.V != tokenVersion:
		return claims{}, fmt.Errorf("%w: version %d", errTokenInvalid, c.V)
	case !validID(c.ID, donation.MaxIDLen):
		return claims{}, fmt.Errorf("%w: donation id", errTokenInvalid)
	case c.amount().Validate() != nil:
		return claims{}, fmt.Errorf("%w: amount", errTokenInvalid)
	case checkAbsURL(c.Return) != nil || checkAbsURL(c.Notify) != nil:
		return claims{}, fmt.Errorf("%w: urls", errTokenInvalid)
	}
	if now.Unix() > c.Exp {
		return claims{}, fmt.Errorf("%w: at %s", errTokenExpired, time.Unix(c.Exp, 0).UTC().Format(time.RFC3339))
	}
	return c, nil
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune, and
// drops invalid UTF-8.
func truncateUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
