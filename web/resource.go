package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/bits"
	"net/http"
	"strconv"
	"strings"

	"github.com/andybalholm/brotli"
)

// resource is one pre-rendered response body with every header value it
// needs computed up front, in up to three encodings. Serving one costs a
// few map assignments and a Write; nothing is formatted per request.
type resource struct {
	ctype    []string
	cache    []string
	vary     bool // the body differs by Accept-Encoding
	identity *variant
	gzip     *variant // nil when compression does not pay
	br       *variant
}

// variant is one encoding of a resource.
type variant struct {
	body     []byte
	etag     []string // strong ETag, distinct per encoding
	length   []string
	encoding []string // Content-Encoding; nil for identity
}

var (
	varyAcceptEncoding = []string{"Accept-Encoding"}
	encGzip            = []string{"gzip"}
	encBr              = []string{"br"}
)

// newResource builds a resource. When compress is true it also stores gzip
// (best compression) and brotli (quality 11) variants, each kept only if it
// is smaller than the identity body.
func newResource(body []byte, ctype, cache string, compress bool) (*resource, error) {
	sum := sha256.Sum256(body)
	tag := hex.EncodeToString(sum[:12])
	r := &resource{
		ctype:    []string{ctype},
		cache:    []string{cache},
		identity: newVariant(body, tag, "", nil),
	}
	if !compress {
		return r, nil
	}
	r.vary = true
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if _, err := zw.Write(body); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if gz.Len() < len(body) {
		r.gzip = newVariant(gz.Bytes(), tag, "-gz", encGzip)
	}
	var br bytes.Buffer
	// A window just larger than the body compresses as well as the default
	// 4 MiB one and spares clearing the big hash tables for each page.
	lgwin := min(max(bits.Len(uint(len(body)))+1, 10), 24)
	bw := brotli.NewWriterOptions(&br, brotli.WriterOptions{Quality: brotli.BestCompression, LGWin: lgwin})
	if _, err := bw.Write(body); err != nil {
		return nil, fmt.Errorf("brotli: %w", err)
	}
	if err := bw.Close(); err != nil {
		return nil, fmt.Errorf("brotli: %w", err)
	}
	if br.Len() < len(body) {
		r.br = newVariant(br.Bytes(), tag, "-br", encBr)
	}
	return r, nil
}

func newVariant(body []byte, tag, suffix string, enc []string) *variant {
	return &variant{
		body:     body,
		etag:     []string{`"` + tag + suffix + `"`},
		length:   []string{strconv.Itoa(len(body))},
		encoding: enc,
	}
}

// pick chooses the variant for an Accept-Encoding header: br, then gzip,
// then identity.
func (res *resource) pick(acceptEncoding string) *variant {
	if res.br == nil && res.gzip == nil {
		return res.identity
	}
	br, gz := acceptEncodings(acceptEncoding)
	switch {
	case br && res.br != nil:
		return res.br
	case gz && res.gzip != nil:
		return res.gzip
	}
	return res.identity
}

// serve writes the resource with status. A 200 answers If-None-Match with
// 304; HEAD gets the headers only.
func (res *resource) serve(w http.ResponseWriter, r *http.Request, status int) {
	v := res.pick(headerValue(r.Header, "Accept-Encoding"))
	h := w.Header()
	h["Cache-Control"] = res.cache
	h["Etag"] = v.etag
	if res.vary {
		h["Vary"] = varyAcceptEncoding
	}
	if status == http.StatusOK {
		if inm := r.Header["If-None-Match"]; len(inm) > 0 && etagListMatch(inm, v.etag[0]) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	h["Content-Type"] = res.ctype
	if v.encoding != nil {
		h["Content-Encoding"] = v.encoding
	}
	h["Content-Length"] = v.length
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(v.body)
	}
}

// headerValue is Header.Get for a key already in canonical form, without
// the canonicalisation cost.
func headerValue(h http.Header, canonicalKey string) string {
	if v := h[canonicalKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// acceptEncodings reports whether br and gzip are acceptable under an
// Accept-Encoding header (RFC 9110 §12.5.3): listed, or covered by "*",
// with a q-value other than zero. It does not allocate.
func acceptEncodings(h string) (br, gz bool) {
	var brSet, gzSet, star, starSet bool
	for h != "" {
		var part string
		if i := strings.IndexByte(h, ','); i >= 0 {
			part, h = h[:i], h[i+1:]
		} else {
			part, h = h, ""
		}
		name, params, _ := strings.Cut(part, ";")
		name = strings.TrimSpace(name)
		ok := !qIsZero(params)
		switch {
		case strings.EqualFold(name, "br"):
			br, brSet = ok, true
		case strings.EqualFold(name, "gzip"), strings.EqualFold(name, "x-gzip"):
			gz, gzSet = ok, true
		case name == "*":
			star, starSet = ok, true
		}
	}
	if !brSet && starSet {
		br = star
	}
	if !gzSet && starSet {
		gz = star
	}
	return br, gz
}

// qIsZero reports whether the parameters of one Accept-Encoding element
// carry q=0 (or 0.0, 0.00, 0.000).
func qIsZero(params string) bool {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		p = strings.TrimSpace(p)
		if len(p) < 2 || (p[0] != 'q' && p[0] != 'Q') || p[1] != '=' {
			continue
		}
		v := p[2:]
		if v == "" || v[0] != '0' {
			return false
		}
		for i := 1; i < len(v); i++ {
			if v[i] != '0' && v[i] != '.' {
				return false
			}
		}
		return true
	}
	return false
}

// etagListMatch reports whether any If-None-Match value matches etag
// (weak comparison, RFC 9110 §13.1.2), or is "*".
func etagListMatch(values []string, etag string) bool {
	for _, h := range values {
		for h != "" {
			var t string
			if i := strings.IndexByte(h, ','); i >= 0 {
				t, h = h[:i], h[i+1:]
			} else {
				t, h = h, ""
			}
			t = strings.TrimSpace(t)
			if t == "*" {
				return true
			}
			t = strings.TrimPrefix(t, "W/")
			if t == etag {
				return true
			}
		}
	}
	return false
}
