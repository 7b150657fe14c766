package site_test

import (
	"encoding/json"
	"io/fs"
	"testing"

	"github.com/surgefund/surge/site"
)

func TestFSLayout(t *testing.T) {
	fsys := site.FS()
	for _, name := range []string{
		"campaign.json",
		"templates/layout.html", "templates/home.html", "templates/donate.html",
		"templates/success.html", "templates/error.html", "templates/contact.html",
		"templates/about.html", "templates/notfound.html",
		"static/style.css", "static/app.js", "static/logo.svg",
	} {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(b) == 0 {
			t.Errorf("%s: empty", name)
		}
	}
}

func TestCampaignIsJSONObject(t *testing.T) {
	b, err := fs.ReadFile(site.FS(), "campaign.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("campaign.json: %v", err)
	}
	for _, k := range []string{"name", "currency", "goal_minor", "presets_minor", "texts", "contact"} {
		if _, ok := m[k]; !ok {
			t.Errorf("campaign.json: missing %q", k)
		}
	}
}
