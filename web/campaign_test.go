package web

import (
	"encoding/json"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/surgefund/surge/payment"
	"github.com/surgefund/surge/site"
)

func TestDefaultCampaignIsValid(t *testing.T) {
	c, err := LoadCampaign(site.FS())
	if err != nil {
		t.Fatal(err)
	}
	if c.Currency != "EUR" || c.GoalMinor <= 0 || len(c.PresetsMinor) == 0 || c.Lang != "en" || c.Dir != "ltr" {
		t.Errorf("default campaign: %+v", c)
	}
}

// campaignWith returns the default campaign.json with one change applied.
func campaignWith(t *testing.T, change func(m map[string]any)) []byte {
	t.Helper()
	b, err := fs.ReadFile(site.FS(), CampaignFile)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	change(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLoadCampaignNamesTheBadField(t *testing.T) {
	set := func(path string, v any) func(map[string]any) {
		return func(m map[string]any) {
			keys := strings.Split(path, ".")
			for _, k := range keys[:len(keys)-1] {
				m = m[k].(map[string]any)
			}
			if v == nil {
				delete(m, keys[len(keys)-1])
			} else {
				m[keys[len(keys)-1]] = v
			}
		}
	}
	for _, c := range []struct {
		name   string
		change func(map[string]any)
		want   string
	}{
		{"goal zero", set("goal_minor", 0), "campaign.json: goal_minor: must be > 0"},
		{"goal negative", set("goal_minor", -5), "campaign.json: goal_minor: must be > 0"},
		{"goal huge", set("goal_minor", 1e15), "campaign.json: goal_minor: must be <="},
		{"goal as string", set("goal_minor", "lots"), "campaign.json: goal_minor: must be a whole number"},
		{"goal as float", set("goal_minor", 12.5), "campaign.json: goal_minor: must be a whole number"},
		{"min zero", set("min_minor", 0), "campaign.json: min_minor: must be > 0"},
		{"max below min", set("max_minor", 100), "campaign.json: max_minor: 100 must be >= min_minor 200"},
		{"no name", set("name", nil), "campaign.json: name: is required"},
		{"blank name", set("name", "   "), "campaign.json: name: is required"},
		{"long name", set("name", strings.Repeat("n", 121)), "campaign.json: name: at most 120 characters"},
		{"control char in tagline", set("tagline", "a\u0007b"), "campaign.json: tagline: contains a control character"},
		{"no currency", set("currency", nil), "campaign.json: currency: is required"},
		{"unknown currency", set("currency", "XYZ"), "campaign.json: currency: unknown currency"},
		{"no presets", set("presets_minor", []int{}), "campaign.json: presets_minor: must list at least one amount"},
		{"too many presets", set("presets_minor", []int{200, 300, 400, 500, 600, 700, 800}), "campaign.json: presets_minor: at most 6"},
		{"preset below min", set("presets_minor", []int{100, 2500}), "campaign.json: presets_minor[0]: 100 is below min_minor 200"},
		{"preset above max", set("presets_minor", []int{2500, 2000000}), "campaign.json: presets_minor[1]: 2000000 is above max_minor"},
		{"presets not increasing", set("presets_minor", []int{2500, 1000}), "campaign.json: presets_minor[1]: amounts must be strictly increasing"},
		{"default not a preset", set("default_preset", 777), "campaign.json: default_preset: 777 is not one of presets_minor"},
		{"no organisation name", set("organisation.name", ""), "campaign.json: organisation.name: is required"},
		{"no about", set("texts.about", ""), "campaign.json: texts.about: is required"},
		{"no success text", set("texts.success", nil), "campaign.json: texts.success: is required"},
		{"no error text", set("texts.error", ""), "campaign.json: texts.error: is required"},
		{"bad contact email", set("contact.email", "help at example.org"), "campaign.json: contact.email: is not an e-mail address"},
		{"no contact email", set("contact.email", ""), "campaign.json: contact.email: is required"},
		{"bad phone", set("contact.phone", "call us"), "campaign.json: contact.phone: \"call us\" is not a phone number"},
		{"bad lang", set("lang", "english please"), "campaign.json: lang: \"english please\" is not a language tag"},
		{"bad dir", set("dir", "up"), "campaign.json: dir: must be \"ltr\" or \"rtl\""},
		{"unknown field", set("goal", 5), `campaign.json: unknown field "goal"`},
		{"unknown nested field", set("texts.thanks", "x"), `campaign.json: unknown field "thanks"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseCampaign(campaignWith(t, c.change))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), c.want) && !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want %q", err, c.want)
			}
			if !errors.Is(err, ErrInvalidCampaign) {
				t.Errorf("error %v is not ErrInvalidCampaign", err)
			}
		})
	}
	for _, raw := range []struct{ body, want string }{
		{"", "campaign.json: file is empty"},
		{"{", "campaign.json: unexpected EOF"},
		{`{"name":"x"} {}`, "campaign.json: trailing data"},
		{`[]`, "campaign.json: "},
	} {
		if _, err := ParseCampaign([]byte(raw.body)); err == nil || !strings.HasPrefix(err.Error(), raw.want) {
			t.Errorf("%q: %v", raw.body, err)
		}
	}
	if _, err := LoadCampaign(fstest.MapFS{}); err == nil || !strings.Contains(err.Error(), "campaign.json") {
		t.Errorf("missing file: %v", err)
	}
}

func TestNewServerRejectsBrokenSites(t *testing.T) {
	base := site.FS()
	copyFS := func(change func(fstest.MapFS)) fstest.MapFS {
		m := fstest.MapFS{}
		_ = fs.WalkDir(base, ".", func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				b, _ := fs.ReadFile(base, p)
				m[p] = &fstest.MapFile{Data: b}
			}
			return nil
		})
		change(m)
		return m
	}
	for _, c := range []struct {
		name   string
		change func(fstest.MapFS)
		want   string
	}{
		{"missing page", func(m fstest.MapFS) { delete(m, "templates/about.html") }, "templates/about.html"},
		{"page without main", func(m fstest.MapFS) {
			m["templates/about.html"] = &fstest.MapFile{Data: []byte(`{{define "title"}}x{{end}}`)}
		}, `must define "main"`},
		{"template syntax", func(m fstest.MapFS) {
			m["templates/home.html"] = &fstest.MapFile{Data: []byte(`{{define "main"}}{{.Nope`)}
		}, "templates/home.html"},
		{"unknown field in template", func(m fstest.MapFS) {
			m["templates/contact.html"] = &fstest.MapFile{Data: []byte(`{{define "title"}}x{{end}}{{define "main"}}{{.Nope}}{{end}}`)}
		}, "render contact"},
		{"missing asset", func(m fstest.MapFS) { delete(m, "static/app.js") }, "no file static/app.js"},
		{"bad campaign", func(m fstest.MapFS) { m["campaign.json"] = &fstest.MapFile{Data: []byte(`{}`)} }, "campaign.json: name: is required"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.PublicURL = "http://127.0.0.1:8080"
			cfg.Site = copyFS(c.change)
			cfg.Providers = []payment.Provider{newFakeProvider("fake", false)}
			_, err := NewServer(cfg, nil2ledger(), nil2ledger(), &fakeHealth{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want %q", err, c.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	ok := func() Config {
		c := DefaultConfig()
		c.PublicURL = "https://give.example.org"
		c.Site = site.FS()
		c.Providers = []payment.Provider{newFakeProvider("fake", false)}
		return c
	}
	if err := ok().Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, c := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no public url", func(c *Config) { c.PublicURL = "" }, "public url"},
		{"relative public url", func(c *Config) { c.PublicURL = "/give" }, "public url"},
		{"public url with path", func(c *Config) { c.PublicURL = "https://x.example/give" }, "public url"},
		{"ftp public url", func(c *Config) { c.PublicURL = "ftp://x.example" }, "public url"},
		{"no site", func(c *Config) { c.Site = nil }, "site"},
		{"no providers", func(c *Config) { c.Providers = nil }, "providers"},
		{"nil provider", func(c *Config) { c.Providers = []payment.Provider{nil} }, "providers[0]"},
		{"duplicate provider", func(c *Config) { c.Providers = append(c.Providers, newFakeProvider("fake", true)) }, "used twice"},
		{"bad provider name", func(c *Config) { c.Providers = []payment.Provider{newFakeProvider("Fake/1", false)} }, "providers[0]"},
		{"unknown default", func(c *Config) { c.DefaultProvider = "stripe" }, "default provider"},
		{"bad gateway origin", func(c *Config) { c.GatewayOrigins = []string{"checkout.example"} }, "gateway origins"},
		{"negative rate", func(c *Config) { c.RateLimit.PerMinute = -1 }, "rate limit"},
		{"return wait too long", func(c *Config) { c.ReturnWait = time.Hour }, "return wait"},
		{"write timeout too short", func(c *Config) { c.WriteTimeout = time.Second }, "write timeout"},
		{"bad proxy", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/33"} }, "trusted proxies"},
	} {
		cfg := ok()
		c.change(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}
