package web

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/surgefund/surge/donation"
)

// Page names: templates/<name>.html.
const (
	pageHome     = "home"
	pageDonate   = "donate"
	pageSuccess  = "success"
	pageError    = "error"
	pageContact  = "contact"
	pageAbout    = "about"
	pageNotFound = "notfound"
)

// pageRoutes are the pre-rendered pages and their paths.
var pageRoutes = []struct{ name, path string }{
	{pageHome, "/"},
	{pageDonate, "/donate"},
	{pageSuccess, "/success"},
	{pageError, "/error"},
	{pageContact, "/contact"},
	{pageAbout, "/about"},
}

// Cache lifetimes. The home page carries the live total, so browsers and
// proxies keep it only briefly; the rest change only with a deploy.
const (
	cacheHome     = "public, max-age=5"
	cachePage     = "public, max-age=300"
	cacheNotFound = "public, max-age=60"
	cacheAsset    = "public, max-age=31536000, immutable"
	cacheNone     = "no-store"
	contentHTML   = "text/html; charset=utf-8"

	maxStaticBytes = 32 << 20 // all of static/ together
)

// renderer turns templates and the campaign into page bytes.
type renderer struct {
	campaign *Campaign
	pages    map[string]*template.Template
	assets   map[string]string    // "style.css" -> "/static/style.1a2b3c4d5e6f.css"
	static   map[string]*resource // "style.1a2b3c4d5e6f.css" -> resource
}

// pageData is what every template sees.
type pageData struct {
	Page     string
	C        *Campaign
	Total    totalView
	Presets  []presetView
	Symbol   string // currency prefix for the custom amount field
	Min, Max string // formatted amount limits
	Form     formView
}

type totalView struct {
	Raised        string
	Goal          string
	Count         int64
	Percent       int64
	RaisedMinor   int64
	GoalMinor     int64
	ProgressValue int64 // raised, capped at the goal, for <progress>
}

type presetView struct {
	Minor   int64
	Label   string
	Checked bool
}

// formView is the state of the donate form: empty (with the default
// preset) when pre-rendered, the donor's input when it is shown again with
// an error.
type formView struct {
	Error     string
	Field     string // "amount", "email", "name" or "message": marks the field aria-invalid
	Amount    int64  // the checked preset
	Custom    string
	Name      string
	Email     string
	Anonymous bool
	Message   string
}

func newRenderer(fsys fs.FS, c *Campaign) (*renderer, error) {
	rd := &renderer{campaign: c, pages: map[string]*template.Template{}, assets: map[string]string{}, static: map[string]*resource{}}
	if err := rd.loadStatic(fsys); err != nil {
		return nil, err
	}
	funcs := template.FuncMap{
		"asset":      rd.asset,
		"paragraphs": paragraphs,
		"lines":      lines,
		"tel":        telURI,
		"money":      func(minor int64) string { return formatMoney(minor, c.Currency) },
	}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(fsys, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("parse templates/layout.html: %w", err)
	}
	if layout.Lookup("layout") == nil {
		return nil, errors.New(`parse templates/layout.html: it must define "layout"`)
	}
	names := []string{pageNotFound}
	for _, p := range pageRoutes {
		names = append(names, p.name)
	}
	for _, name := range names {
		t, err := layout.Clone()
		if err != nil {
			return nil, fmt.Errorf("clone layout: %w", err)
		}
		file := "templates/" + name + ".html"
		if _, err := t.ParseFS(fsys, file); err != nil {
			return nil, fmt.Errorf("parse %s: %w", file, err)
		}
		for _, block := range []string{"title", "main"} {
			if t.Lookup(block) == nil {
				return nil, fmt.Errorf("parse %s: it must define %q", file, block)
			}
		}
		rd.pages[name] = t
	}
	return rd, nil
}

// loadStatic reads every file under static/ and names it by its content
// hash, so that it can be cached forever.
func (rd *renderer) loadStatic(fsys fs.FS) error {
	total := 0
	return fs.WalkDir(fsys, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read static: %w", err)
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		if total += len(b); total > maxStaticBytes {
			return fmt.Errorf("read static: more than %d bytes of assets", maxStaticBytes)
		}
		logical := strings.TrimPrefix(p, "static/")
		sum := sha256.Sum256(b)
		hash := hex.EncodeToString(sum[:6])
		ext := path.Ext(logical)
		hashed := strings.TrimSuffix(logical, ext) + "." + hash + ext
		ctype := mime.TypeByExtension(ext)
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		res, err := newResource(b, ctype, cacheAsset, compressible(ctype))
		if err != nil {
			return fmt.Errorf("compress %s: %w", p, err)
		}
		rd.static[hashed] = res
		rd.assets[logical] = "/static/" + hashed
		return nil
	})
}

func compressible(ctype string) bool {
	mt, _, _ := strings.Cut(ctype, ";")
	return strings.HasPrefix(mt, "text/") || strings.HasSuffix(mt, "+xml") || strings.HasSuffix(mt, "json") ||
		strings.HasSuffix(mt, "javascript") || mt == "application/xml"
}

func (rd *renderer) asset(name string) (string, error) {
	u, ok := rd.assets[name]
	if !ok {
		return "", fmt.Errorf("no file static/%s", name)
	}
	return u, nil
}

// data builds the page data for a page with the given totals and form.
func (rd *renderer) data(page string, t donation.Totals, form formView) *pageData {
	c := rd.campaign
	d := &pageData{
		Page:   page,
		C:      c,
		Total:  newTotalView(c, t),
		Symbol: currencyPrefix(c.Currency),
		Min:    formatMoney(c.MinMinor, c.Currency),
		Max:    formatMoney(c.MaxMinor, c.Currency),
		Form:   form,
	}
	for _, p := range c.PresetsMinor {
		d.Presets = append(d.Presets, presetView{Minor: p, Label: formatMoney(p, c.Currency), Checked: p == form.Amount})
	}
	return d
}

func newTotalView(c *Campaign, t donation.Totals) totalView {
	raised := max(t.RaisedMinor, 0)
	return totalView{
		Raised:        formatMoney(raised, c.Currency),
		Goal:          formatMoney(c.GoalMinor, c.Currency),
		Count:         max(t.Donations, 0),
		Percent:       percentOf(raised, c.GoalMinor),
		RaisedMinor:   raised,
		GoalMinor:     c.GoalMinor,
		ProgressValue: min(raised, c.GoalMinor),
	}
}

// render executes one page.
func (rd *renderer) render(page string, d *pageData) ([]byte, error) {
	t, ok := rd.pages[page]
	if !ok {
		return nil, fmt.Errorf("render %s: no such page", page)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", d); err != nil {
		return nil, fmt.Errorf("render %s: %w", page, err)
	}
	return buf.Bytes(), nil
}

// renderResource renders a page into a precompressed resource.
func (rd *renderer) renderResource(page string, t donation.Totals, cache string) (*resource, error) {
	b, err := rd.render(page, rd.data(page, t, formView{Amount: rd.campaign.DefaultPreset}))
	if err != nil {
		return nil, err
	}
	res, err := newResource(b, contentHTML, cache, true)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", page, err)
	}
	return res, nil
}

// renderForm renders the donate page with the donor's input and an error,
// uncached: it is the answer to one POST.
func (rd *renderer) renderForm(w http.ResponseWriter, status int, form formView) error {
	b, err := rd.render(pageDonate, rd.data(pageDonate, donation.Totals{}, form))
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", contentHTML)
	h.Set("Cache-Control", cacheNone)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, err = w.Write(b)
	return err
}

// paragraphs splits text at blank lines.
func paragraphs(s string) []string {
	var out []string
	for _, p := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n\n") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, strings.Join(strings.Fields(p), " "))
		}
	}
	return out
}

// lines splits text into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// telURI keeps the characters a tel: URI needs: "+353 1 555 0142" -> "+35315550142".
func telURI(s string) string {
	var b strings.Builder
	for i, r := range s {
		if (r >= '0' && r <= '9') || (r == '+' && i == 0) {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// handleStatic serves GET /static/<name>.<hash>.<ext>. Unknown names,
// including unhashed ones, are 404: only the names the templates link to
// exist, and each is immutable.
func (s *Server) handleStatic(c echo.Context) error {
	res, ok := s.rd.static[c.Param("*")]
	if !ok {
		return &Error{Code: CodeNotFound, Message: "There is no such file."}
	}
	res.serve(c.Response(), c.Request(), http.StatusOK)
	return nil
}
