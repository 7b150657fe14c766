package web

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/surgefund/surge/donation/memledger"
	"github.com/surgefund/surge/payment"
	"github.com/surgefund/surge/site"
)

// hotTestServer starts a Server on 127.0.0.1:0 through Serve, with the hot
// path on unless a mutation turns it off. Every server of a test shares
// led and the same PublicURL, so hot and plain servers render the same
// bytes.
func hotTestServer(t *testing.T, led *memledger.Ledger, mutate ...func(*Config)) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := hotTestConfig()
	cfg.RateLimit = RateLimit{}
	cfg.RenderInterval = 20 * time.Millisecond
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := NewServer(cfg, led, led, &fakeHealth{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // after the server has stopped
	s.Start(ctx)
	serveUntilCleanup(t, s, ln)
	waitFor(t, "serving", 5*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.srv != nil
	})
	return s, ln.Addr().String()
}

// hotTestConfig is the configuration the hot path tests share: every
// server of a test renders the same bytes from it.
func hotTestConfig() Config {
	cfg := DefaultConfig()
	cfg.PublicURL = "http://give.example.org"
	cfg.Site = site.FS()
	cfg.Providers = []payment.Provider{newFakeProvider("fake", false)}
	return cfg
}

func noHotPath(c *Config) { c.DisableHotPath = true }

// handoffs is how many connections the hot path has given to net/http.
func handoffs(s *Server) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hot == nil {
		return 0
	}
	return s.hot.handoffs.Load()
}

// exchange writes raw on a new connection and returns every byte the
// server sends until it closes the connection.
func exchange(t *testing.T, addr, raw string) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, raw)
		werr <- err
	}()
	b, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		t.Fatalf("read: %v (after %d bytes: %q)", err, len(b), clip(b))
	}
	if err := <-werr; err != nil && !isReset(err) {
		t.Fatalf("write: %v", err)
	}
	return b
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

func clip(b []byte) []byte {
	if len(b) > 400 {
		return b[:400]
	}
	return b
}

var (
	dateRE      = regexp.MustCompile("\r\nDate: [^\r\n]*\r\n")
	requestIDRE = regexp.MustCompile("\r\nX-Request-Id: [^\r\n]*\r\n")
)

// normalize blanks the values that differ from answer to answer.
func normalize(b []byte) string {
	b = dateRE.ReplaceAll(b, []byte("\r\nDate: *\r\n"))
	b = requestIDRE.ReplaceAll(b, []byte("\r\nX-Request-Id: *\r\n"))
	return string(b)
}

// sameBytes fails unless hot and plain are equal, showing where they part.
func sameBytes(t *testing.T, what string, hot, plain []byte) {
	t.Helper()
	h, p := normalize(hot), normalize(plain)
	if h == p {
		return
	}
	i := 0
	for i < len(h) && i < len(p) && h[i] == p[i] {
		i++
	}
	from := max(i-200, 0)
	t.Errorf("%s: answers differ at byte %d of %d/%d\nhot:   %q\nplain: %q", what, i, len(h), len(p),
		h[from:min(len(h), i+200)], p[from:min(len(p), i+200)])
}

// hotPaths lists every path the hot path answers, as the test sees them.
func hotPaths(t *testing.T, s *Server) []string {
	t.Helper()
	paths := []string{pathTotal}
	for _, p := range pageRoutes {
		paths = append(paths, p.path)
	}
	for name := range s.rd.static {
		paths = append(paths, staticPrefix+name)
	}
	sort.Strings(paths)
	if len(paths) < 9 {
		t.Fatalf("only %d hot paths: %q", len(paths), paths)
	}
	return paths
}

// etagFor asks a server which ETag it sends for path under ae.
func etagFor(t *testing.T, addr, path, ae string) string {
	t.Helper()
	raw := "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
	if ae != "" {
		raw += "Accept-Encoding: " + ae + "\r\n"
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(exchange(t, addr, raw+"\r\n"))), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Get("Etag")
}

func TestHotPathAnswersLikeNetHTTP(t *testing.T) {
	led := memledger.New()
	hot, hotAddr := hotTestServer(t, led)
	_, plainAddr := hotTestServer(t, led, noHotPath)

	encodings := []string{"-", "gzip", "br", "gzip;q=0", "br;q=0, gzip", "gzip, deflate, br, zstd", "*", "*;q=0",
		"identity", "GZIP", "x-gzip", " gzip , br ", "br;q=0.000, *", "deflate", "", "gzip;q=0.5, br;q=0", "br;Q=0",
		"br;q=0.001", ",,,", "gzip;;q=0", "br, gzip;q=0, *;q=0"}
	for _, path := range hotPaths(t, hot) {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			var req strings.Builder
			n := 0
			for _, ae := range encodings {
				aeHeader := ""
				if ae != "-" {
					aeHeader = "Accept-Encoding: " + ae + "\r\n"
				}
				tag := etagFor(t, plainAddr, path, strings.TrimPrefix(ae, "-"))
				other := etagFor(t, plainAddr, path, "")
				for _, inm := range []string{"-", tag, `"nope"`, "*", `"nope", ` + tag, "W/" + tag, "", "xyz", other,
					tag + ", *", ` ` + tag + ` `, `"nope",` + tag + `,"nix"`} {
					req.WriteString(method + " " + path + " HTTP/1.1\r\n")
					// Vary the spelling of what does not change the answer.
					switch n % 3 {
					case 0:
						req.WriteString("Host: give.example.org\r\n" + aeHeader)
					case 1:
						req.WriteString("host:127.0.0.1:8080\r\nUser-Agent: test/1.0\r\n" + strings.ToLower(aeHeader) + "Connection: keep-alive\r\n")
					case 2:
						req.WriteString(strings.ToUpper(aeHeader) + "Accept: */*\r\nHOST: [::1]:80 \r\nX-Empty:\r\n")
					}
					if inm != "-" {
						req.WriteString("If-None-Match: " + inm + "\r\n")
					}
					req.WriteString("\r\n")
					n++
				}
			}
			// The last one closes the connection, so both servers end the stream.
			req.WriteString(method + " " + path + " HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n")
			before := handoffs(hot)
			h := exchange(t, hotAddr, req.String())
			p := exchange(t, plainAddr, req.String())
			if handoffs(hot) != before {
				t.Errorf("%s %s: the hot path handed off", method, path)
			}
			if got := bytes.Count(p, []byte("HTTP/1.1 ")); got != n+1 {
				t.Fatalf("%s %s: %d answers from net/http, want %d", method, path, got, n+1)
			}
			sameBytes(t, method+" "+path, h, p)
		}
	}
}

func TestHotPathAnswersNotModified(t *testing.T) {
	led := memledger.New()
	_, hotAddr := hotTestServer(t, led)
	tag := etagFor(t, hotAddr, "/about", "gzip")
	if !strings.HasSuffix(tag, `-gz"`) {
		t.Fatalf("etag %q", tag)
	}
	b := exchange(t, hotAddr, "GET /about HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nIf-None-Match: "+tag+"\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNotModified || resp.Header.Get("Etag") != tag || resp.Header.Get("Content-Length") != "" {
		t.Fatalf("conditional GET: %q", b)
	}
}

// TestHotPathHandsOff: whatever the hot parser does not fully accept,
// net/http answers, with exactly the answer it gives when the hot path is
// off.
func TestHotPathHandsOff(t *testing.T) {
	led := memledger.New()
	hot, hotAddr := hotTestServer(t, led)
	_, plainAddr := hotTestServer(t, led, noHotPath)
	const tail = "GET /api/v1/total HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	big := strings.Repeat("a", 70<<10)
	cookie := strings.Repeat("c", 5000)
	for _, c := range []struct{ name, raw string }{
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: x\r\n\r\n"},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n" + tail},
		{"absolute-form", "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"query", "GET /?a=1 HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"empty query", "GET /about? HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"fragment", "GET /about#x HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"percent-encoded", "GET /%61bout HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"trailing slash", "GET /about/ HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"double slash", "GET //about HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"dot segment", "GET /static/../about HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"content-length", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" + tail},
		{"content-length zero", "GET / HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n" + tail},
		{"transfer-encoding", "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + tail},
		{"te and cl", "GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n" + tail},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n" + tail},
		{"obs-fold first", "GET / HTTP/1.1\r\n Host: x\r\n\r\n" + tail},
		{"duplicate host", "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n" + tail},
		{"missing host", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n" + tail},
		{"empty host", "GET / HTTP/1.1\r\nHost:\r\n\r\n" + tail},
		{"odd host", "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n" + tail},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n" + tail},
		{"lowercase method", "get / HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"POST", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + tail},
		{"OPTIONS", "OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"bare LF", "GET / HTTP/1.1\nHost: x\n\n" + tail},
		{"bare LF in header", "GET / HTTP/1.1\r\nHost: x\nAccept: */*\r\n\r\n" + tail},
		{"CR in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n" + tail},
		{"double space", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n" + tail},
		{"no colon", "GET / HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n" + tail},
		{"empty name", "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n" + tail},
		{"non-ASCII value", "GET / HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9\r\n\r\n" + tail},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n" + tail},
		{"two accept-encodings", "GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\naccept-encoding: br\r\n\r\n" + tail},
		{"two if-none-match", "GET /about HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"a\"\r\nIf-None-Match: *\r\n\r\n" + tail},
		{"expect", "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n" + tail},
		{"expect other", "GET / HTTP/1.1\r\nHost: x\r\nExpect: tea\r\n\r\n" + tail},
		{"upgrade", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + tail},
		{"h2c upgrade", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" + tail},
		{"trailer", "GET / HTTP/1.1\r\nHost: x\r\nTrailer: X-A\r\n\r\n" + tail},
		{"connection list", "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n" + tail},
		{"two connections", "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n" + tail},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: x\r\n\r\n" + tail},
		{"no version", "GET /\r\nHost: x\r\n\r\n" + tail},
		{"not found", "GET /no-such-page HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"unknown asset", "GET /static/nope.css HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"dynamic", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"leading CRLF", "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n" + tail},
		{"oversize header", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + big + "\r\n\r\n" + tail},
		{"header larger than the hot buffer", "GET / HTTP/1.1\r\nHost: x\r\nCookie: " + cookie + "\r\nAccept-Encoding: gzip\r\n\r\n" + tail},
		{"many headers", "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("A: b\r\n", 150) + "\r\n" + tail},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\r\n"},
	} {
		before := handoffs(hot)
		h := exchange(t, hotAddr, c.raw)
		p := exchange(t, plainAddr, c.raw)
		if handoffs(hot) != before+1 {
			t.Errorf("%s: handoffs %d -> %d, want one", c.name, before, handoffs(hot))
		}
		if len(p) == 0 {
			t.Errorf("%s: no answer at all from net/http", c.name)
		}
		sameBytes(t, c.name, h, p)
	}
}

// TestHotPathThenDynamicOnOneConnection: a browser's keep-alive connection
// asks for a page, then posts a donation, then asks for a page again.
func TestHotPathThenDynamicOnOneConnection(t *testing.T) {
	e := newEnv(t)
	addr := strings.TrimPrefix(e.base, "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	roundTrip := func(raw, method string) *http.Response {
		t.Helper()
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	before := handoffs(e.srv)
	if r := roundTrip("GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", "GET"); r.StatusCode != 200 || r.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("page: %d %v", r.StatusCode, r.Header)
	}
	if handoffs(e.srv) != before {
		t.Fatal("the page was not answered by the hot path")
	}
	body := `{"amount_minor":2500,"currency":"EUR","name":"Ada","email":"ada@example.org"}`
	r := roundTrip(fmt.Sprintf("POST /api/v1/donations HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", addr, len(body), body), "POST")
	if r.StatusCode != http.StatusCreated || r.Header.Get("X-Request-Id") == "" {
		t.Fatalf("donation: %d %v", r.StatusCode, r.Header)
	}
	if handoffs(e.srv) != before+1 {
		t.Fatal("the donation was not handed off")
	}
	if r := roundTrip("HEAD /about HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD"); r.StatusCode != 200 || r.ContentLength <= 0 {
		t.Fatalf("page after the donation: %d", r.StatusCode)
	}
}

// TestHotPathPipelined: pipelined hot and dynamic requests in one write
// are answered in order, and the same as net/http answers them.
func TestHotPathPipelined(t *testing.T) {
	led := memledger.New()
	hot, hotAddr := hotTestServer(t, led)
	_, plainAddr := hotTestServer(t, led, noHotPath)
	for _, c := range []struct {
		name, raw string
		answers   int
	}{
		{"hot, dynamic, hot", "GET /about HTTP/1.1\r\nHost: x\r\n\r\n" +
			"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" +
			"GET /api/v1/total HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3},
		{"hot, post, hot", "HEAD / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\n\r\n" +
			"POST /donate HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\nSec-Fetch-Site: same-origin\r\n\r\namount=x" +
			"GET /contact HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3},
		{"many hot then close", strings.Repeat("GET /api/v1/total HTTP/1.1\r\nHost: x\r\n\r\nGET /donate HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n", 40) +
			"GET /success HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 81},
		{"hot then a bad request line", "GET /about HTTP/1.1\r\nHost: x\r\n\r\nGET /ab\x00\r\n\r\n", 2},
	} {
		before := handoffs(hot)
		h := exchange(t, hotAddr, c.raw)
		p := exchange(t, plainAddr, c.raw)
		if got := bytes.Count(p, []byte("HTTP/1.1 ")); got != c.answers {
			t.Errorf("%s: %d answers from net/http, want %d", c.name, got, c.answers)
		}
		sameBytes(t, c.name, h, p)
		t.Logf("%s: %d handoffs", c.name, handoffs(hot)-before)
	}
}

func TestHotPathTotalFollowsTheLedger(t *testing.T) {
	e := newEnv(t)
	addr := strings.TrimPrefix(e.base, "http://")
	get := func() string {
		b := exchange(t, addr, "GET /api/v1/total HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.ContentLength != int64(len(body)) {
			t.Fatalf("Content-Length %d for %d bytes", resp.ContentLength, len(body))
		}
		return string(body)
	}
	before := handoffs(e.srv)
	if b := get(); !strings.Contains(b, `"raised_minor":0`) {
		t.Fatalf("total before: %s", b)
	}
	if handoffs(e.srv) != before {
		t.Fatal("the total was not answered by the hot path")
	}
	id, _ := e.create(2500)
	if resp, b := e.notifyDev("evt_hot", id, "payment.succeeded", 2500, time.Now()); resp.StatusCode != http.StatusOK {
		t.Fatalf("notify: %d %s", resp.StatusCode, b)
	}
	before = handoffs(e.srv)
	if b := get(); !strings.Contains(b, `"raised_minor":2500`) || !strings.Contains(b, `"donations":1`) {
		t.Fatalf("total after: %s", b)
	}
	if handoffs(e.srv) != before {
		t.Fatal("the total was not answered by the hot path")
	}
	// The home page shows the new total once it is re-rendered.
	waitFor(t, "home page re-rendered", 5*time.Second, func() bool {
		b := exchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		return bytes.Contains(b, []byte("€25"))
	})
}

// TestHotPathHandsOffWhenDebugLogging: with the access log on, every
// request goes through the edge, which writes it.
func TestHotPathHandsOffWhenDebugLogging(t *testing.T) {
	var mu sync.Mutex
	var logBuf bytes.Buffer
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logBuf.Write(p)
	})
	led := memledger.New()
	s, addr := hotTestServer(t, led, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	b := exchange(t, addr, "GET /about HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if !bytes.HasPrefix(b, []byte("HTTP/1.1 200 OK\r\n")) {
		t.Fatalf("answer %q", clip(b))
	}
	if handoffs(s) != 1 {
		t.Fatalf("handoffs %d", handoffs(s))
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logBuf.String(), `msg="http request" method=GET path=/about status=200`) {
		t.Fatalf("no access log line: %s", logBuf.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestHotPathOffServesEverything(t *testing.T) {
	led := memledger.New()
	s, addr := hotTestServer(t, led, noHotPath)
	if s.hot != nil {
		t.Fatal("hot path on")
	}
	b := exchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if !bytes.HasPrefix(b, []byte("HTTP/1.1 200 OK\r\n")) {
		t.Fatalf("answer %q", clip(b))
	}
}

// TestHotPathCountsMetrics: the hot path's answers land in the same series,
// with the same labels, as the echo path's.
func TestHotPathCountsMetrics(t *testing.T) {
	led := memledger.New()
	regs := map[bool]*prometheus.Registry{}
	addrs := map[bool]string{}
	for _, hotOn := range []bool{true, false} {
		reg := prometheus.NewRegistry()
		m, err := NewMetrics(reg)
		if err != nil {
			t.Fatal(err)
		}
		regs[hotOn] = reg
		addrs[hotOn] = metricsServer(t, led, m, !hotOn)
	}
	for _, hotOn := range []bool{true, false} {
		raw := ""
		for _, p := range []string{"/", "/about", "/api/v1/total"} {
			raw += "GET " + p + " HTTP/1.1\r\nHost: x\r\n\r\nHEAD " + p + " HTTP/1.1\r\nHost: x\r\n\r\n"
		}
		tag := etagFor(t, addrs[hotOn], "/about", "gzip")
		raw += "GET /about HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nIf-None-Match: " + tag + "\r\n\r\n"
		raw += "GET /api/v1/total HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
		exchange(t, addrs[hotOn], raw)
	}
	series := func(reg *prometheus.Registry) map[string]float64 {
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, f := range fams {
			for _, m := range f.Metric {
				key := f.GetName() + labelString(m)
				switch {
				case m.Counter != nil:
					out[key] = m.Counter.GetValue()
				case m.Histogram != nil:
					out[key+" count"] = float64(m.Histogram.GetSampleCount())
				}
			}
		}
		return out
	}
	h, p := series(regs[true]), series(regs[false])
	if fmt.Sprint(h) != fmt.Sprint(p) {
		t.Errorf("metrics differ\nhot:   %v\nplain: %v", h, p)
	}
	if h[`surge_http_requests_total{code="200",method="GET",route="/api/v1/total"}`] != 2 ||
		h[`surge_http_requests_total{code="304",method="GET",route="/about"}`] != 1 {
		t.Errorf("hot series: %v", h)
	}
}

// metricsServer starts a server with m installed before Serve, as the
// node does.
func metricsServer(t *testing.T, led *memledger.Ledger, m *Metrics, off bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := hotTestConfig()
	cfg.DisableHotPath = off
	s, err := NewServer(cfg, led, led, &fakeHealth{})
	if err != nil {
		t.Fatal(err)
	}
	s.UseMetrics(m)
	serveUntilCleanup(t, s, ln)
	return ln.Addr().String()
}

func labelString(m *dto.Metric) string {
	var parts []string
	for _, l := range m.Label {
		parts = append(parts, l.GetName()+"="+fmt.Sprintf("%q", l.GetValue()))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// readUntilClosed reads from c until the server closes it and reports how
// long that took.
func readUntilClosed(t *testing.T, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	if err != nil && !isReset(err) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the server did not close the connection within %s", limit)
		}
		t.Fatalf("read: %v", err)
	}
	return time.Since(start)
}

func TestHotPathTimeouts(t *testing.T) {
	led := memledger.New()
	const rht, idle = 300 * time.Millisecond, 600 * time.Millisecond
	s, addr := hotTestServer(t, led, func(c *Config) {
		c.ReadHeaderTimeout, c.IdleTimeout = rht, idle
	})
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("half a request line", func(t *testing.T) {
		c := dial()
		_, _ = io.WriteString(c, "GET /ab")
		if d := readUntilClosed(t, c, 5*time.Second); d < rht-50*time.Millisecond || d > rht+time.Second {
			t.Errorf("closed after %s, want about %s", d, rht)
		}
	})
	t.Run("nothing at all", func(t *testing.T) {
		c := dial()
		if d := readUntilClosed(t, c, 5*time.Second); d < rht-50*time.Millisecond || d > rht+time.Second {
			t.Errorf("closed after %s, want about %s", d, rht)
		}
	})
	t.Run("a byte at a time", func(t *testing.T) {
		// Slowloris: every byte arrives well inside the timeout, the
		// request never completes; the header deadline does not move.
		c := dial()
		start := time.Now()
		done := make(chan struct{})
		go func() {
			defer close(done)
			req := "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("s", 1000)
			for i := 0; i < len(req); i++ {
				if _, err := c.Write([]byte{req[i]}); err != nil {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		readUntilClosed(t, c, 5*time.Second)
		if d := time.Since(start); d > rht+time.Second {
			t.Errorf("closed after %s", d)
		}
		<-done
	})
	t.Run("idle after a request", func(t *testing.T) {
		c := dial()
		_, _ = io.WriteString(c, "GET /api/v1/total HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		start := time.Now()
		_ = c.SetReadDeadline(start.Add(5 * time.Second))
		if _, err := br.ReadByte(); err != io.EOF && !isReset(err) {
			t.Fatalf("read after idle: %v", err)
		}
		if d := time.Since(start); d < idle-slop(idle)-50*time.Millisecond || d > idle+time.Second {
			t.Errorf("closed after %s idle, want about %s", d, idle)
		}
	})
	t.Run("requests keep it open", func(t *testing.T) {
		c := dial()
		br := bufio.NewReader(c)
		start := time.Now()
		for time.Since(start) < 2*idle {
			if _, err := io.WriteString(c, "GET /api/v1/total HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("after %s: %v", time.Since(start), err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			time.Sleep(idle / 4)
		}
	})
	if handoffs(s) != 0 {
		t.Errorf("handoffs %d", handoffs(s))
	}
}

// TestHotPathWriteTimeout: a client that never reads is cut off after the
// write timeout.
func TestHotPathWriteTimeout(t *testing.T) {
	led := memledger.New()
	fsys := bigAssetSite(t)
	s, addr := hotTestServer(t, led, func(c *Config) {
		c.Site = fsys
		c.ReturnWait = 10 * time.Millisecond
		c.WriteTimeout = 300 * time.Millisecond
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET "+bigAssetPath(t, s)+" HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(time.Second)
	n, _ := io.Copy(io.Discard, c) // what was sent before the timeout, then EOF or a reset
	if n >= bigAssetSize {
		t.Fatalf("read %d bytes: the write did not time out", n)
	}
}

func TestHotPathShutdown(t *testing.T) {
	base := runtime.NumGoroutine()
	s, addr, served, asset := serveBigAssetSite(t)

	// idle: answered once, now waiting.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	ibr := bufio.NewReader(idle)
	_, _ = io.WriteString(idle, "GET /about HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(ibr, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("idle connection: %v", err)
	} else if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	// busy: asked for the big asset and reads nothing yet, so the hot path
	// is stuck writing it.
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// A second request is pipelined behind it: answered after Shutdown
	// began, it must say Connection: close.
	_, _ = io.WriteString(busy, "GET "+asset+" HTTP/1.1\r\nHost: x\r\n\r\nGET /api/v1/total HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(200 * time.Millisecond)

	stopped := make(chan error, 1)
	go func() { stopped <- s.Shutdown(context.Background()) }()

	// The idle one closes at once.
	rest, err := io.ReadAll(ibrWithDeadline(idle, ibr, 3*time.Second))
	if err != nil && !isReset(err) || len(rest) != 0 {
		t.Fatalf("idle connection: %q %v", rest, err)
	}
	// Shutdown waits for the busy one.
	select {
	case err := <-stopped:
		t.Fatalf("shutdown returned %v with a write in flight", err)
	case <-time.After(300 * time.Millisecond):
	}
	// New connections are refused.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.WriteString(c, "GET /about HTTP/1.1\r\nHost: x\r\n\r\n")
		if b, _ := io.ReadAll(c); len(b) != 0 {
			t.Errorf("a new connection was answered during shutdown: %q", clip(b))
		}
		c.Close()
	}
	// The busy one gets its whole answer, saying Connection: close, then EOF.
	_ = busy.SetReadDeadline(time.Now().Add(10 * time.Second))
	bbr := bufio.NewReader(busy)
	resp, err := http.ReadResponse(bbr, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != bigAssetSize || resp.Close {
		t.Fatalf("busy connection got %d bytes (close %v): %v", n, resp.Close, err)
	}
	resp, err = http.ReadResponse(bbr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("the answer written during shutdown: %d, close %v, %v", resp.StatusCode, resp.Close, err)
	}
	if _, err := bbr.ReadByte(); err != io.EOF && !isReset(err) {
		t.Errorf("busy connection after its answer: %v", err)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown did not return")
	}
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	noHotGoroutines(t, base)
}

func TestHotPathShutdownDeadlineAndClose(t *testing.T) {
	base := runtime.NumGoroutine()
	for _, how := range []string{"shutdown deadline", "close"} {
		s, addr, served, asset := serveBigAssetSite(t)
		var conns []net.Conn
		for i := 0; i < 3; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conns = append(conns, c)
		}
		_, _ = io.WriteString(conns[0], "GET "+asset+" HTTP/1.1\r\nHost: x\r\n\r\n") // busy, never read
		_, _ = io.WriteString(conns[1], "GET /ab")                                   // half a request
		// conns[2] sent nothing
		time.Sleep(200 * time.Millisecond)
		start := time.Now()
		var err error
		if how == "close" {
			err = s.Close()
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			err = s.Shutdown(ctx)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s: %v, want the deadline", how, err)
			}
			err = nil
		}
		if err != nil {
			t.Errorf("%s: %v", how, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%s took %s", how, d)
		}
		if err := <-served; err != nil {
			t.Errorf("%s: serve: %v", how, err)
		}
		// conns[0] may still be receiving what the kernel buffered.
		for i, c := range conns[1:] {
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil && !isReset(err) {
				t.Errorf("%s: connection %d not closed: %v", how, i, err)
			}
		}
	}
	noHotGoroutines(t, base)
}

// noHotGoroutines waits until no goroutine of the hot path is left and the
// count is back to base.
func noHotGoroutines(t *testing.T, base int) {
	t.Helper()
	var stacks string
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		hot := strings.Contains(stacks, "web.(*hotConn)") || strings.Contains(stacks, "web.(*hotServer)")
		if !hot && runtime.NumGoroutine() <= base {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("goroutines left: %d, were %d\n%s", runtime.NumGoroutine(), base, stacks)
}

func ibrWithDeadline(c net.Conn, br *bufio.Reader, d time.Duration) io.Reader {
	_ = c.SetReadDeadline(time.Now().Add(d))
	return br
}

const bigAssetSize = 20 << 20

// serveBigAssetSite serves bigAssetSite on a new loopback listener: the
// server, its address, Serve's result and the path of the big asset.
func serveBigAssetSite(t *testing.T) (s *Server, addr string, served chan error, asset string) {
	led := memledger.New()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := hotTestConfig()
	cfg.Site = bigAssetSite(t)
	if s, err = NewServer(cfg, led, led, &fakeHealth{}); err != nil {
		t.Fatal(err)
	}
	served = make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	return s, ln.Addr().String(), served, bigAssetPath(t, s)
}

// bigAssetSite is the example site plus static/big.bin, an asset large
// enough that writing it blocks on a client that does not read.
func bigAssetSite(t *testing.T) fs.FS {
	t.Helper()
	m := fstest.MapFS{}
	err := fs.WalkDir(site.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(site.FS(), p)
		m[p] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	m["static/big.bin"] = &fstest.MapFile{Data: make([]byte, bigAssetSize)}
	return m
}

func bigAssetPath(t *testing.T, s *Server) string {
	t.Helper()
	p, err := s.rd.asset("big.bin")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHotPathPassesTLSThrough: on a TLS listener the hot path reads
// nothing; net/http gets the *tls.Conn itself.
func TestHotPathPassesTLSThrough(t *testing.T) {
	ts := httptest.NewUnstartedServer(http.NotFoundHandler())
	ts.StartTLS()
	tlsCfg, client := ts.TLS.Clone(), ts.Client()
	ts.Close()
	s, _ := newTestServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(tls.NewListener(ln, tlsCfg)) }()
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	resp, err := client.Get("https://" + ln.Addr().String() + "/about")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.TLS == nil || !bytes.Contains(b, []byte("About the appeal")) {
		t.Fatalf("%d %q", resp.StatusCode, clip(b))
	}
	if handoffs(s) != 0 {
		t.Fatalf("handoffs %d: the hot path read a TLS connection", handoffs(s))
	}
}

// TestHotPathAnswersLikeNetHTTPOverHTTPS: with an https PublicURL (HSTS)
// and gateway origins in the CSP, the recorded headers follow.
func TestHotPathAnswersLikeNetHTTPOverHTTPS(t *testing.T) {
	led := memledger.New()
	https := func(c *Config) {
		c.PublicURL = "https://give.example.org"
		c.GatewayOrigins = []string{"https://checkout.psp.example/pay"}
	}
	hot, hotAddr := hotTestServer(t, led, https)
	_, plainAddr := hotTestServer(t, led, https, noHotPath)
	raw := ""
	for _, p := range []string{"/", "/donate", pathTotal} {
		raw += "GET " + p + " HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\n\r\nHEAD " + p + " HTTP/1.1\r\nHost: x\r\n\r\n"
	}
	raw += "GET /about HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	h, p := exchange(t, hotAddr, raw), exchange(t, plainAddr, raw)
	if handoffs(hot) != 0 || !bytes.Contains(h, []byte("\r\nStrict-Transport-Security: ")) {
		t.Fatalf("handoffs %d, answer %q", handoffs(hot), clip(h))
	}
	sameBytes(t, "https", h, p)
}
