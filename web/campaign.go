package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/mail"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/surgefund/surge/donation"
)

// CampaignFile is the name of the campaign configuration inside the site FS.
const CampaignFile = "campaign.json"

// ErrInvalidCampaign wraps every validation failure of campaign.json.
var ErrInvalidCampaign = errors.New("invalid campaign")

// Campaign is the operator's campaign configuration (campaign.json). Amounts
// are integer minor units of Currency.
type Campaign struct {
	Name          string            `json:"name"`
	Tagline       string            `json:"tagline"`
	Lang          string            `json:"lang"` // BCP 47 language tag of the pages, default "en"
	Dir           string            `json:"dir"`  // "ltr" (default) or "rtl"
	Organisation  Organisation      `json:"organisation"`
	Currency      donation.Currency `json:"currency"`
	GoalMinor     int64             `json:"goal_minor"`
	PresetsMinor  []int64           `json:"presets_minor"`
	DefaultPreset int64             `json:"default_preset"` // one of PresetsMinor, or 0 for none preselected
	MinMinor      int64             `json:"min_minor"`
	MaxMinor      int64             `json:"max_minor"`
	Texts         Texts             `json:"texts"`
	Contact       Contact           `json:"contact"`
}

// Organisation is the charity running the campaign.
type Organisation struct {
	Name         string `json:"name"`
	Registration string `json:"registration"` // e.g. "Registered charity no. 1234567"
}

// Texts are the operator's words on the pages. About may hold several
// paragraphs separated by blank lines.
type Texts struct {
	About       string `json:"about"`
	DonateIntro string `json:"donate_intro"`
	Success     string `json:"success"`
	Error       string `json:"error"`
	Footer      string `json:"footer"`
}

// Contact is how donors reach the charity. Address may span several lines.
type Contact struct {
	Email   string `json:"email"`
	Phone   string `json:"phone"`
	Address string `json:"address"`
}

const (
	maxPresets   = 6
	maxShortText = 300
	maxLongText  = 5000
)

var (
	langRE  = regexp.MustCompile(`^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$`)
	phoneRE = regexp.MustCompile(`^\+?[0-9][0-9 ()./-]{3,30}$`)
)

// LoadCampaign reads, decodes strictly and validates campaign.json from
// fsys. The error names the file and the bad field, for example
// `campaign.json: goal_minor: must be > 0`.
func LoadCampaign(fsys fs.FS) (Campaign, error) {
	b, err := fs.ReadFile(fsys, CampaignFile)
	if err != nil {
		return Campaign{}, fmt.Errorf("load campaign: %w", err)
	}
	c, err := ParseCampaign(b)
	if err != nil {
		return Campaign{}, err
	}
	return c, nil
}

// ParseCampaign decodes and validates the bytes of a campaign.json.
func ParseCampaign(b []byte) (Campaign, error) {
	var c Campaign
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return Campaign{}, campaignError{fmt.Errorf("%s: must be a %s", te.Field, jsonKind(te.Type.Kind().String()))}
		case errors.Is(err, io.EOF):
			return Campaign{}, campaignError{errors.New("file is empty")}
		}
		return Campaign{}, campaignError{errors.New(strings.TrimPrefix(err.Error(), "json: "))}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Campaign{}, campaignError{errors.New("trailing data after the JSON object")}
	}
	if err := c.normalize(); err != nil {
		return Campaign{}, campaignError{err}
	}
	return c, nil
}

// campaignError reads "campaign.json: field: problem" and matches
// ErrInvalidCampaign with errors.Is.
type campaignError struct{ err error }

func (e campaignError) Error() string   { return CampaignFile + ": " + e.err.Error() }
func (e campaignError) Unwrap() []error { return []error{ErrInvalidCampaign, e.err} }

func jsonKind(k string) string {
	switch k {
	case "int64", "int", "int32":
		return "whole number"
	case "slice":
		return "list"
	case "struct":
		return "object"
	}
	return k
}

// Validate checks the campaign and names the first bad field.
func (c Campaign) Validate() error {
	if err := c.normalize(); err != nil {
		return campaignError{err}
	}
	return nil
}

// normalize trims text fields, fills defaults and validates.
func (c *Campaign) normalize() error {
	for _, p := range []*string{&c.Name, &c.Tagline, &c.Lang, &c.Dir, &c.Organisation.Name, &c.Organisation.Registration,
		&c.Texts.About, &c.Texts.DonateIntro, &c.Texts.Success, &c.Texts.Error, &c.Texts.Footer,
		&c.Contact.Email, &c.Contact.Phone, &c.Contact.Address} {
		*p = strings.TrimSpace(*p)
	}
	if c.Lang == "" {
		c.Lang = "en"
	}
	if c.Dir == "" {
		c.Dir = "ltr"
	}
	texts := []struct {
		field    string
		v        string
		required bool
		max      int
	}{
		{"name", c.Name, true, 120},
		{"tagline", c.Tagline, false, maxShortText},
		{"organisation.name", c.Organisation.Name, true, 200},
		{"organisation.registration", c.Organisation.Registration, false, 200},
		{"texts.about", c.Texts.About, true, maxLongText},
		{"texts.donate_intro", c.Texts.DonateIntro, false, maxLongText},
		{"texts.success", c.Texts.Success, true, maxLongText},
		{"texts.error", c.Texts.Error, true, maxLongText},
		{"texts.footer", c.Texts.Footer, false, maxLongText},
		{"contact.email", c.Contact.Email, true, 254},
		{"contact.phone", c.Contact.Phone, false, 40},
		{"contact.address", c.Contact.Address, false, 500},
	}
	for _, t := range texts {
		if err := checkCampaignText(t.field, t.v, t.required, t.max); err != nil {
			return err
		}
	}
	if !langRE.MatchString(c.Lang) {
		return fmt.Errorf("lang: %q is not a language tag such as \"en\" or \"de-AT\"", c.Lang)
	}
	if c.Dir != "ltr" && c.Dir != "rtl" {
		return fmt.Errorf("dir: must be \"ltr\" or \"rtl\", got %q", c.Dir)
	}
	if c.Currency == "" {
		return errors.New("currency: is required (an ISO 4217 code such as \"EUR\")")
	}
	cur, err := donation.ParseCurrency(string(c.Currency))
	if err != nil {
		return fmt.Errorf("currency: %w", err)
	}
	c.Currency = cur
	for _, a := range []struct {
		field string
		v     int64
	}{{"goal_minor", c.GoalMinor}, {"min_minor", c.MinMinor}, {"max_minor", c.MaxMinor}} {
		if a.v <= 0 {
			return fmt.Errorf("%s: must be > 0", a.field)
		}
		if a.v > donation.MaxMinor {
			return fmt.Errorf("%s: must be <= %d", a.field, donation.MaxMinor)
		}
	}
	if c.MaxMinor < c.MinMinor {
		return fmt.Errorf("max_minor: %d must be >= min_minor %d", c.MaxMinor, c.MinMinor)
	}
	if len(c.PresetsMinor) == 0 {
		return errors.New("presets_minor: must list at least one amount")
	}
	if len(c.PresetsMinor) > maxPresets {
		return fmt.Errorf("presets_minor: at most %d amounts, got %d", maxPresets, len(c.PresetsMinor))
	}
	for i, p := range c.PresetsMinor {
		switch {
		case p < c.MinMinor:
			return fmt.Errorf("presets_minor[%d]: %d is below min_minor %d", i, p, c.MinMinor)
		case p > c.MaxMinor:
			return fmt.Errorf("presets_minor[%d]: %d is above max_minor %d", i, p, c.MaxMinor)
		case i > 0 && p <= c.PresetsMinor[i-1]:
			return fmt.Errorf("presets_minor[%d]: amounts must be strictly increasing", i)
		}
	}
	if c.DefaultPreset != 0 && !c.isPreset(c.DefaultPreset) {
		return fmt.Errorf("default_preset: %d is not one of presets_minor (or 0 for none)", c.DefaultPreset)
	}
	if err := checkEmail(c.Contact.Email); err != nil {
		return fmt.Errorf("contact.email: %w", err)
	}
	if c.Contact.Phone != "" && !phoneRE.MatchString(c.Contact.Phone) {
		return fmt.Errorf("contact.phone: %q is not a phone number", c.Contact.Phone)
	}
	return nil
}

func (c *Campaign) isPreset(v int64) bool {
	for _, p := range c.PresetsMinor {
		if p == v {
			return true
		}
	}
	return false
}

func checkCampaignText(field, v string, required bool, max int) error {
	if v == "" {
		if required {
			return fmt.Errorf("%s: is required", field)
		}
		return nil
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("%s: is not valid UTF-8", field)
	}
	if n := utf8.RuneCountInString(v); n > max {
		return fmt.Errorf("%s: at most %d characters, got %d", field, max, n)
	}
	for _, r := range v {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return fmt.Errorf("%s: contains a control character", field)
		}
	}
	return nil
}

// checkEmail accepts a bare address (no display name) with a dotted domain.
func checkEmail(s string) error {
	if len(s) > donation.MaxEmailLen {
		return fmt.Errorf("at most %d bytes", donation.MaxEmailLen)
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return errors.New("is not an e-mail address")
	}
	at := strings.LastIndexByte(s, '@')
	if domain := s[at+1:]; !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") {
		return errors.New("is not an e-mail address")
	}
	return nil
}
