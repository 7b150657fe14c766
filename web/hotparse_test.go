package web

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// parseTestRoutes is a route table for the parser tests.
var parseTestRoutes = map[string]*hotRoute{
	"/":                         {label: "/"},
	"/about":                    {label: "/about"},
	"/api/v1/total":             {label: pathTotal, kind: hotTotal},
	"/static/style.1a2b3c.css":  {label: "/static/*"},
	"/static/img/x-y_z.9f8e.js": {label: "/static/*"},
}

func parseTestLookup(p []byte) *hotRoute { return parseTestRoutes[string(p)] }

func TestParseHot(t *testing.T) {
	const max = 4096
	for _, c := range []struct {
		name, raw string
		want      parseResult
		n         int // for parseOK: bytes consumed (0: all of raw)
		check     func(t *testing.T, r hotRequest)
	}{
		{"minimal", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", parseOK, 0, nil},
		{"head", "HEAD /about HTTP/1.1\r\nHost: x\r\n\r\n", parseOK, 0, func(t *testing.T, r hotRequest) {
			if !r.head || r.route.label != "/about" {
				t.Errorf("%+v", r)
			}
		}},
		{"values", "GET / HTTP/1.1\r\nhost:\tx \r\nACCEPT-ENCODING:  gzip, br \t\r\nIf-None-Match: \r\nConnection: Close\r\n\r\n", parseOK, 0, func(t *testing.T, r hotRequest) {
			if string(r.acceptEncoding) != "gzip, br" || !r.hasINM || len(r.ifNoneMatch) != 0 || !r.close {
				t.Errorf("%+v", r)
			}
		}},
		{"keep-alive", "GET / HTTP/1.1\r\nConnection: keep-alive\r\nHost: x\r\n\r\n", parseOK, 0, func(t *testing.T, r hotRequest) {
			if r.close || r.acceptEncoding != nil || r.hasINM {
				t.Errorf("%+v", r)
			}
		}},
		{"pipelined", "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /about HTTP/1.1\r\n", parseOK, len("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), nil},
		{"empty", "", parseMore, 0, nil},
		{"G", "G", parseMore, 0, nil},
		{"HEA", "HEA", parseMore, 0, nil},
		{"path so far", "GET /abo", parseMore, 0, nil},
		{"proto so far", "GET /about HTTP/1.", parseMore, 0, nil},
		{"line so far", "GET / HTTP/1.1\r\nHost: x\r\nAccept", parseMore, 0, nil},
		{"CR so far", "GET / HTTP/1.1\r\nHost: x\r\n\r", parseMore, 0, nil},
		{"post", "POST / HTTP/1.1\r\n", parseHandoff, 0, nil},
		{"P", "P", parseHandoff, 0, nil},
		{"lowercase", "get / HTTP/1.1\r\nHost: x\r\n\r\n", parseHandoff, 0, nil},
		{"unknown path", "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", parseHandoff, 0, nil},
		{"unknown path early", "GET /nope ", parseHandoff, 0, nil},
		{"query", "GET /? HTTP/1.1\r\nHost: x\r\n\r\n", parseHandoff, 0, nil},
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: x\r\n\r\n", parseHandoff, 0, nil},
		{"HTTP/1.0 early", "GET / HTTP/1.0", parseHandoff, 0, nil},
		{"no host", "GET / HTTP/1.1\r\n\r\n", parseHandoff, 0, nil},
		{"bad name early", "GET / HTTP/1.1\r\nHo st", parseHandoff, 0, nil},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\n\tb\r\n\r\n", parseHandoff, 0, nil},
		{"bare LF end", "GET / HTTP/1.1\r\nHost: x\r\n\n", parseHandoff, 0, nil},
		{"CR then other", "GET / HTTP/1.1\r\nHost: x\r\n\rX", parseHandoff, 0, nil},
		{"DEL", "GET / HTTP/1.1\r\nHost: x\r\nA: \x7f\r\n\r\n", parseHandoff, 0, nil},
		{"host with port", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", parseOK, 0, nil},
		{"host with userinfo", "GET / HTTP/1.1\r\nHost: u@x\r\n\r\n", parseHandoff, 0, nil},
		{"connection upgrade", "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n", parseHandoff, 0, nil},
		{"te", "GET / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: identity\r\n\r\n", parseHandoff, 0, nil},
		{"too long", "GET / HTTP/1.1\r\nHost: x\r\nA: " + strings.Repeat("b", max) + "\r\n\r\n", parseHandoff, 0, nil},
		{"too long so far", "GET / HTTP/1.1\r\nHost: x\r\nA: " + strings.Repeat("b", max), parseHandoff, 0, nil},
	} {
		r, n, res := parseHot([]byte(c.raw), parseTestLookup, max)
		if res != c.want {
			t.Errorf("%s: result %d, want %d", c.name, res, c.want)
			continue
		}
		if res != parseOK {
			continue
		}
		want := c.n
		if want == 0 {
			want = len(c.raw)
		}
		if n != want {
			t.Errorf("%s: consumed %d, want %d", c.name, n, want)
		}
		if c.check != nil {
			c.check(t, r)
		}
	}
}

func TestParseHotHonoursMaxHeaderBytes(t *testing.T) {
	raw := []byte("GET / HTTP/1.1\r\nHost: x\r\nA: bbbbbbbbbb\r\n\r\n")
	if _, _, res := parseHot(raw, parseTestLookup, len(raw)); res != parseOK {
		t.Fatalf("at the limit: %d", res)
	}
	if _, _, res := parseHot(raw, parseTestLookup, len(raw)-1); res != parseHandoff {
		t.Fatalf("one over the limit: %d", res)
	}
}

// FuzzHotParse: the hot parser never panics; whatever it accepts,
// net/http's parser reads the same way (same length, method, path and
// values of the headers the hot path uses) and net/http's server would
// accept too; whatever it waits on, net/http cannot read yet either.
func FuzzHotParse(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /about HTTP/1.1\r\nHost: give.example.org\r\nAccept-Encoding: gzip, br\r\nIf-None-Match: \"abc-gz\"\r\n\r\n",
		"GET /api/v1/total HTTP/1.1\r\nhost: [::1]:80\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n",
		"GET /static/style.1a2b3c.css HTTP/1.1\r\nHost: x\r\nUser-Agent: a\r\nCookie: a=b; c=d\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\nHost: x\n\n",
		"GET / HTTP/1.1\r\nHost: x\r\n y\r\n\r\n",
		"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /?q HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nAccept-Encoding:\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nA:\t \r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, n, res := parseHot(data, parseTestLookup, 4096)
		rd := bytes.NewReader(data)
		br := bufio.NewReader(rd)
		r, err := http.ReadRequest(br)
		switch res {
		case parseMore:
			if err == nil {
				t.Fatalf("the hot parser waits for more, net/http read %s %s from %q", r.Method, r.RequestURI, data)
			}
			return
		case parseHandoff:
			return
		}
		if err != nil {
			t.Fatalf("hot parser accepted %q, net/http: %v", data, err)
		}
		if consumed := len(data) - rd.Len() - br.Buffered(); consumed != n {
			t.Fatalf("hot parser consumed %d bytes, net/http %d, of %q", n, consumed, data)
		}
		method := http.MethodGet
		if req.head {
			method = http.MethodHead
		}
		if r.Method != method || r.Proto != "HTTP/1.1" || r.URL.RawQuery != "" || r.URL.Fragment != "" ||
			r.RequestURI != r.URL.Path || parseTestRoutes[r.URL.Path] != req.route {
			t.Fatalf("hot parser read %s %v, net/http %s %q (path %q) %s", method, req.route, r.Method, r.RequestURI, r.URL.Path, r.Proto)
		}
		if r.ContentLength != 0 || len(r.TransferEncoding) != 0 || r.Close != req.close {
			t.Fatalf("net/http: Content-Length %d, Transfer-Encoding %q, close %v; hot close %v", r.ContentLength, r.TransferEncoding, r.Close, req.close)
		}
		// What net/http's server checks after ReadRequest (conn.readRequest).
		// (ReadRequest has moved the one Host header to r.Host; it fails on two.)
		if r.Host == "" || !validHostForTest(r.Host) || r.URL.Host != "" {
			t.Fatalf("Host %q, URL host %q", r.Host, r.URL.Host)
		}
		for k, vv := range r.Header {
			if !validNameForTest(k) {
				t.Fatalf("header name %q", k)
			}
			for _, v := range vv {
				if !validValueForTest(v) {
					t.Fatalf("header %s value %q", k, v)
				}
			}
		}
		for _, k := range []string{"Expect", "Upgrade", "Trailer"} {
			if _, ok := r.Header[k]; ok {
				t.Fatalf("accepted a request with %s", k)
			}
		}
		same := func(name string, hot []byte, has bool) {
			vv := r.Header[name]
			if !has && len(vv) == 0 {
				return
			}
			if !has || len(vv) != 1 || vv[0] != string(hot) {
				t.Fatalf("%s: hot %q (present %v), net/http %q", name, hot, has, vv)
			}
		}
		same("Accept-Encoding", req.acceptEncoding, req.acceptEncoding != nil)
		same("If-None-Match", req.ifNoneMatch, req.hasINM)
	})
}

// The checks of golang.org/x/net/http/httpguts that net/http's server
// applies, written out for the test.

func validHostForTest(h string) bool { return alnumOr(h, "!$%&'()*+,-.:;=@[]_~") }

// validNameForTest is tchar (RFC 9110 §5.6.2), spelled out rather than
// taken from hotTokenByte, so that the check does not pass by construction.
func validNameForTest(k string) bool { return k != "" && alnumOr(k, "!#$%&'*+-.^_`|~") }

// alnumOr reports whether every byte of s is an ASCII letter or digit or
// one of punct.
func alnumOr(s, punct string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(punct, c) >= 0) {
			return false
		}
	}
	return true
}

func validValueForTest(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
