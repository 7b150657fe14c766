package web

import (
	"bytes"
	"compress/gzip"
	"io"
	"math"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"

	"github.com/surgefund/surge/donation"
)

func TestPages(t *testing.T) {
	e := newEnv(t)
	for _, p := range []struct {
		path, want, cache string
	}{
		{"/", "Valley Flood Relief Appeal", cacheHome},
		{"/donate", `action="/donate"`, cachePage},
		{"/success", "Thank you", cachePage},
		{"/error", "did not go through", cachePage},
		{"/contact", "mailto:appeal@riverside-aid.example.org", cachePage},
		{"/about", "Who we are", cachePage},
	} {
		t.Run(p.path, func(t *testing.T) {
			resp, identity := e.get(p.path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != contentHTML {
				t.Errorf("content type %q", ct)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != p.cache {
				t.Errorf("cache control %q, want %q", cc, p.cache)
			}
			if v := resp.Header.Get("Vary"); v != "Accept-Encoding" {
				t.Errorf("vary %q", v)
			}
			if !bytes.Contains(identity, []byte(p.want)) {
				t.Errorf("page lacks %q", p.want)
			}
			for _, must := range []string{`<html lang="en"`, `<main id="main"`, `name="viewport"`, "<nav"} {
				if !bytes.Contains(identity, []byte(must)) {
					t.Errorf("page lacks %q", must)
				}
			}
			if bytes.Contains(identity, []byte("<script>")) || bytes.Contains(identity, []byte(" style=")) {
				t.Error("inline script or style would break the CSP")
			}
			if resp.Header.Get("Content-Length") == "" {
				t.Error("no Content-Length")
			}
			etags := map[string]bool{resp.Header.Get("Etag"): true}

			// Each encoding decodes to the identity bytes and has its own ETag.
			for _, enc := range []string{"gzip", "br"} {
				resp, b := e.get(p.path, "Accept-Encoding", enc)
				if got := resp.Header.Get("Content-Encoding"); got != enc {
					t.Fatalf("%s: Content-Encoding %q", enc, got)
				}
				if len(b) >= len(identity) {
					t.Errorf("%s: %d bytes, identity %d", enc, len(b), len(identity))
				}
				var r io.Reader
				if enc == "gzip" {
					zr, err := gzip.NewReader(bytes.NewReader(b))
					if err != nil {
						t.Fatal(err)
					}
					r = zr
				} else {
					r = brotli.NewReader(bytes.NewReader(b))
				}
				plain, err := io.ReadAll(r)
				if err != nil {
					t.Fatalf("%s: decode: %v", enc, err)
				}
				if !bytes.Equal(plain, identity) {
					t.Errorf("%s: decoded body differs from identity", enc)
				}
				tag := resp.Header.Get("Etag")
				if etags[tag] {
					t.Errorf("%s: ETag %s not distinct", enc, tag)
				}
				etags[tag] = true

				// Conditional request: 304 without body, weak form too.
				resp, b = e.get(p.path, "Accept-Encoding", enc, "If-None-Match", `"nope", W/`+tag)
				if resp.StatusCode != http.StatusNotModified || len(b) != 0 {
					t.Errorf("%s: If-None-Match: %d, %d bytes", enc, resp.StatusCode, len(b))
				}
				if resp.Header.Get("Etag") != tag {
					t.Errorf("%s: 304 without ETag", enc)
				}
			}
			// HEAD: same headers, no body.
			resp, b := e.do(e.request(http.MethodHead, p.path, nil, "Accept-Encoding", "br"))
			if resp.StatusCode != http.StatusOK || len(b) != 0 || resp.Header.Get("Content-Encoding") != "br" {
				t.Errorf("HEAD: %d, %d bytes, %q", resp.StatusCode, len(b), resp.Header.Get("Content-Encoding"))
			}
		})
	}
}

func TestStaticAssets(t *testing.T) {
	e := newEnv(t)
	_, page := e.get("/")
	re := regexp.MustCompile(`/static/(style|app|logo)\.[0-9a-f]{12}\.(css|js|svg)`)
	links := re.FindAllString(string(page), -1)
	if len(links) < 3 {
		t.Fatalf("hashed asset links: %v", links)
	}
	types := map[string]string{"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8", "svg": "image/svg+xml"}
	for _, l := range links {
		resp, b := e.get(l, "Accept-Encoding", "gzip, br")
		if resp.StatusCode != http.StatusOK || len(b) == 0 {
			t.Fatalf("%s: %d", l, resp.StatusCode)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
			t.Errorf("%s: cache control %q", l, cc)
		}
		ext := l[strings.LastIndexByte(l, '.')+1:]
		if ct := resp.Header.Get("Content-Type"); ct != types[ext] {
			t.Errorf("%s: content type %q", l, ct)
		}
		if ext == "css" && resp.Header.Get("Content-Encoding") != "br" {
			t.Errorf("%s: not served precompressed: %q", l, resp.Header.Get("Content-Encoding"))
		}
	}
	for _, bad := range []string{"/static/style.css", "/static/style.000000000000.css", "/static/../campaign.json"} {
		resp, b := e.get(bad)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d", bad, resp.StatusCode)
		}
		if !bytes.Contains(b, []byte("Page not found")) {
			t.Errorf("%s: not the HTML 404 page", bad)
		}
	}
}

func TestHomeShowsTotalAndRerenders(t *testing.T) {
	e := newEnv(t)
	_, page := e.get("/")
	if !bytes.Contains(page, []byte(`data-raised>€0</strong>`)) || !bytes.Contains(page, []byte(`data-count>0</strong>`)) {
		t.Fatalf("home page does not show the empty total")
	}
	id, _ := e.create(2500)
	if resp, b := e.notifyDev("evt_home_1", id, "payment.succeeded", 2500, time.Now()); resp.StatusCode != http.StatusOK {
		t.Fatalf("notify: %d %s", resp.StatusCode, b)
	}
	waitFor(t, "home page re-render", 5*time.Second, func() bool {
		_, page := e.get("/", "Accept-Encoding", "br")
		plain, err := io.ReadAll(brotli.NewReader(bytes.NewReader(page)))
		return err == nil && bytes.Contains(plain, []byte(`data-raised>€25</strong>`)) &&
			bytes.Contains(plain, []byte(`data-count>1</strong>`)) && bytes.Contains(plain, []byte(`value="2500"`))
	})
}

func TestNotFoundPages(t *testing.T) {
	e := newEnv(t)
	resp, b := e.get("/no/such/page")
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != contentHTML || !bytes.Contains(b, []byte("Page not found")) {
		t.Errorf("HTML 404: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, b = e.get("/api/v1/nothing")
	if resp.StatusCode != http.StatusNotFound || errorCode(t, resp, b) != CodeNotFound {
		t.Errorf("API 404: %d %s", resp.StatusCode, b)
	}
	resp, b = e.do(e.request(http.MethodDelete, "/", nil))
	if resp.StatusCode != http.StatusMethodNotAllowed || errorCode(t, resp, b) != CodeMethodNotAllowed {
		t.Errorf("405: %d %s", resp.StatusCode, b)
	}
	if allow := resp.Header.Get("Allow"); !strings.Contains(allow, "GET") {
		t.Errorf("405 Allow %q", allow)
	}
}

func TestAcceptEncodings(t *testing.T) {
	for _, c := range []struct {
		h      string
		br, gz bool
	}{
		{"", false, false},
		{"gzip", false, true},
		{"br", true, false},
		{"gzip, deflate, br, zstd", true, true},
		{"GZIP;q=0.5, BR;q=1.0", true, true},
		{"br;q=0, gzip", false, true},
		{"br;q=0.000, gzip;q=0.0", false, false},
		{"br;q=0.001", true, false},
		{"*", true, true},
		{"*;q=0", false, false},
		{"*, br;q=0", false, true},
		{"identity", false, false},
		{"x-gzip", false, true},
		{" br ; q=0.8 ,gzip ; level=1", true, true},
		{",,,", false, false},
	} {
		br, gz := acceptEncodings(c.h)
		if br != c.br || gz != c.gz {
			t.Errorf("%q: br=%v gzip=%v, want %v %v", c.h, br, gz, c.br, c.gz)
		}
	}
}

func TestEtagListMatch(t *testing.T) {
	for _, c := range []struct {
		vals []string
		want bool
	}{
		{[]string{`"abc"`}, true},
		{[]string{`W/"abc"`}, true},
		{[]string{`"x", "abc"`}, true},
		{[]string{`"x"`, `"abc"`}, true},
		{[]string{`*`}, true},
		{[]string{`"abcd"`}, false},
		{[]string{`abc`}, false},
		{[]string{``}, false},
	} {
		if got := etagListMatch(c.vals, `"abc"`); got != c.want {
			t.Errorf("%q: %v", c.vals, got)
		}
	}
}

func TestFormatMoney(t *testing.T) {
	for _, c := range []struct {
		minor int64
		cur   donation.Currency
		want  string
	}{
		{0, "EUR", "€0"},
		{2500, "EUR", "€25"},
		{2550, "EUR", "€25.50"},
		{50000000, "EUR", "€500,000"},
		{1000, "JPY", "¥1,000"},
		{12345, "AED", "AED\u00a0123.45"},
		{1500, "BHD", "BHD\u00a01.500"},
		{-2500, "EUR", "-€25"},
	} {
		if got := formatMoney(c.minor, c.cur); got != c.want {
			t.Errorf("formatMoney(%d, %s) = %q, want %q", c.minor, c.cur, got, c.want)
		}
	}
	if p := percentOf(12_500, 5_000_000); p != 0 {
		t.Errorf("percent %d", p)
	}
	if p := percentOf(2_500_000, 5_000_000); p != 50 {
		t.Errorf("percent %d", p)
	}
	if p := percentOf(donation.MaxMinor*9_000, 1); p != donation.MaxMinor*900_000 {
		t.Errorf("percent of large: %d", p)
	}
	if p := percentOf(math.MaxInt64, 1); p != 1<<62 {
		t.Errorf("percent of huge: %d", p)
	}
}
