package web

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const headerRequestID = "X-Request-Id" // canonical form of X-Request-ID

// edge is the handler in front of echo. It runs for every request, also
// the ones echo answers with 404 or 405, and does what must never be
// forgotten: security headers, a request ID, panic recovery and the access
// log. It is a plain http.Handler rather than echo middleware so that it
// costs no closure per request.
//
// Every header costs on each response: a map insert here, a copy when
// net/http clones the map in WriteHeader, an entry in the sort before it is
// written, and its bytes. So the edge sends per kind of response only the
// headers that do something for it (DESIGN.md, "Security headers"):
// documents and errors get the full set and a request ID; the cacheable
// pages and assets the same minus the request ID; the cacheable JSON total
// only what matters for a response that is not a document.
type edge struct {
	s       *Server
	headers [numKinds][]headerValuePair
	kinds   map[string]respKind // GET/HEAD path -> kind, for the cacheable paths
	trusted []netip.Prefix
	idPre   string
	idSeq   atomic.Uint64
	pool    sync.Pool
}

// respKind is what the edge knows about a response before routing.
type respKind uint8

const (
	kindDynamic respKind = iota // anything else: forms, API writes, errors, probes, admin, gateway pages
	kindPage                    // GET/HEAD of a pre-rendered page or a hashed asset: publicly cacheable
	kindTotal                   // GET/HEAD /api/v1/total: publicly cacheable JSON
	numKinds
)

// pathTotal is the route of the public total.
const pathTotal = "/api/v1/total"

// staticPrefix is where the hashed assets live.
const staticPrefix = "/static/"

// init prepares the edge in place (it holds an atomic counter and a pool,
// which must not be copied).
func (e *edge) init(s *Server, trusted []netip.Prefix, publicOrigin string, gatewayOrigins []string) {
	formAction := []string{"'self'", publicOrigin}
	for _, o := range gatewayOrigins {
		if org, err := origin(o); err == nil {
			formAction = append(formAction, org)
		}
	}
	csp := "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
		"form-action " + strings.Join(dedupe(formAction), " ") + "; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
	// Every response: what the browser applies to any body it receives.
	base := [][2]string{
		{"Content-Security-Policy", csp},
		{"X-Content-Type-Options", "nosniff"},
	}
	if strings.HasPrefix(publicOrigin, "https://") {
		base = append(base, [2]string{"Strict-Transport-Security", "max-age=31536000; includeSubDomains"})
	}
	// Documents: what governs a page's links, windows and features.
	doc := append(base[:len(base):len(base)],
		[2]string{"Referrer-Policy", "strict-origin-when-cross-origin"},
		[2]string{"Cross-Origin-Opener-Policy", "same-origin"},
		[2]string{"Permissions-Policy", "camera=(), microphone=(), geolocation=(), browsing-topics=()"},
	)
	e.s, e.trusted = s, trusted
	e.headers[kindDynamic] = headerPairs(doc)
	e.headers[kindPage] = e.headers[kindDynamic] // the same values; only the request ID differs
	e.headers[kindTotal] = headerPairs(base)
	e.kinds = map[string]respKind{pathTotal: kindTotal}
	for _, p := range pageRoutes {
		e.kinds[p.path] = kindPage
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	e.idPre = hex.EncodeToString(b[:]) + "-"
}

func headerPairs(hs [][2]string) []headerValuePair {
	out := make([]headerValuePair, 0, len(hs))
	for _, h := range hs {
		out = append(out, headerValuePair{http.CanonicalHeaderKey(h[0]), []string{h[1]}})
	}
	return out
}

// kind classifies a request by method and path. Only GET and HEAD of the
// routes that serve publicly cacheable bytes are not dynamic; a path that
// turns out to be a 404 keeps the kind of its path (the 404 page is
// cacheable too).
func (e *edge) kind(r *http.Request) respKind {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return kindDynamic
	}
	p := r.URL.Path
	if k, ok := e.kinds[p]; ok {
		return k
	}
	if strings.HasPrefix(p, staticPrefix) {
		return kindPage
	}
	return kindDynamic
}

// setHeaders sets the headers every response of kind k carries. The hot
// path (hotresp.go) records its answers through it too.
func (e *edge) setHeaders(h http.Header, k respKind) {
	for _, kv := range e.headers[k] {
		h[kv.key] = kv.value
	}
}

// requestID is the incoming X-Request-ID when it is acceptable, else a new
// one.
func (e *edge) requestID(r *http.Request) string {
	if id := headerValue(r.Header, headerRequestID); validRequestID(id) {
		return id
	}
	return e.idPre + strconv.FormatUint(e.idSeq.Add(1), 36)
}

// headerValuePair is a canonical header key with its precomputed value.
type headerValuePair struct {
	key   string
	value []string
}

func dedupe(ss []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func (e *edge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	k := e.kind(r)
	e.setHeaders(h, k)
	// A cacheable response carries no request ID: a shared cache would hand
	// one request's ID to everyone it serves the copy to.
	var id string
	if k == kindDynamic {
		id = e.requestID(r)
		h[headerRequestID] = []string{id}
	}
	l := e.s.log
	logReq := l.Enabled(r.Context(), slog.LevelDebug)
	var start time.Time
	if logReq {
		start = time.Now()
	}

	sw, _ := e.pool.Get().(*statusWriter)
	if sw == nil {
		sw = new(statusWriter)
	}
	sw.ResponseWriter, sw.status, sw.bytes = w, 0, 0
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			if id == "" {
				id = e.requestID(r)
			}
			l.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "request_id", id,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if sw.status == 0 {
				body := `{"error":{"code":"internal_error","message":"Something went wrong on our side. Please try again."}}` + "\n"
				h.Set("Content-Type", "application/json")
				h.Set("Cache-Control", cacheNone)
				h.Set("Content-Length", strconv.Itoa(len(body)))
				h.Del("Content-Encoding")
				h.Del("Etag")
				h[headerRequestID] = []string{id}
				sw.WriteHeader(http.StatusInternalServerError)
				_, _ = sw.Write([]byte(body))
			}
		}
		if logReq {
			if id == "" {
				id = e.requestID(r)
			}
			// No query strings, no bodies, no client address: nothing personal.
			l.LogAttrs(r.Context(), slog.LevelDebug, "http request",
				slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("status", sw.status), slog.Int64("bytes", sw.bytes),
				slog.Duration("duration", time.Since(start)), slog.String("request_id", id))
		}
		sw.ResponseWriter = nil
		e.pool.Put(sw)
	}()
	e.s.echo.ServeHTTP(sw, r)
}

// validRequestID accepts an incoming X-Request-ID of 1 to 64 characters
// from [A-Za-z0-9._:-]; anything else is replaced.
func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// statusWriter remembers the status and size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush implements http.Flusher for handlers that stream.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack implements http.Hijacker when the underlying writer does.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("hijack: not supported")
	}
	return hj.Hijack()
}

// clientIP is the address of the client: the TCP peer, unless the peer is
// a trusted proxy, in which case X-Forwarded-For is walked from the right
// and the first address that is not a trusted proxy wins. Never the
// leftmost value blindly: clients write that one themselves.
func clientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	var addr netip.Addr
	if err == nil {
		addr = ap.Addr().Unmap()
	} else if a, err := netip.ParseAddr(r.RemoteAddr); err == nil {
		addr = a.Unmap()
	} else {
		return netip.IPv4Unspecified()
	}
	if !isTrusted(addr, trusted) {
		return addr
	}
	xff := r.Header["X-Forwarded-For"]
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for v != "" {
			var part string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				part, v = v[j+1:], v[:j]
			} else {
				part, v = v, ""
			}
			a, err := netip.ParseAddr(strings.TrimSpace(part))
			if err != nil {
				return addr // a garbled hop: stop at the last address we could trust
			}
			addr = a.Unmap()
			if !isTrusted(addr, trusted) {
				return addr
			}
		}
	}
	return addr
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
