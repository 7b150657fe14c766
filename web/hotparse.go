package web

import "bytes"

// The hot parser reads one request from the start of a buffer and accepts
// only a deliberately small subset of HTTP/1.1 (DESIGN.md, "Hot path"):
//
//	GET|HEAD SP path SP "HTTP/1.1" CRLF
//	*( token ":" *( SP / HTAB / VCHAR ) CRLF )
//	CRLF
//
// where path is one of the hot routes, byte for byte (no query, no
// percent-encoding, no dot segments). Exactly one Host header, and no
// Content-Length, Transfer-Encoding, Expect, Upgrade or Trailer. Anything
// else, including anything merely unusual, is parseHandoff: net/http gets
// the same bytes and decides. Accepting less than net/http is always safe;
// accepting more would let the two parsers disagree about where a request
// ends, which is how requests are smuggled.

// parseResult is what parseHot made of the bytes it was given.
type parseResult uint8

const (
	parseMore    parseResult = iota // a hot request may follow, but it is not complete yet
	parseOK                         // one complete hot request
	parseHandoff                    // not for the hot path: net/http must answer it
)

// Limits of the hot parser, well inside net/http's.
const (
	hotMaxHeaders = 100  // header lines per request
	hotMaxPath    = 1024 // bytes of path
)

// hotRequest is what the hot path needs from an accepted request. The
// slices point into the read buffer and are valid until it is reused.
type hotRequest struct {
	route          *hotRoute
	head           bool   // HEAD, else GET
	close          bool   // Connection: close
	acceptEncoding []byte // trimmed value; nil when absent
	ifNoneMatch    []byte // trimmed value
	hasINM         bool   // an If-None-Match header was sent (possibly empty)
}

const (
	prefixGET  = "GET "
	prefixHEAD = "HEAD "
	protoCRLF  = " HTTP/1.1\r\n"
)

// parseHot parses the request at the start of b. On parseOK, n is its
// length in bytes (request line and header block). lookup maps a path to
// its hot route, or nil. maxHeaderBytes bounds n (the server's
// MaxHeaderBytes).
func parseHot(b []byte, lookup func(path []byte) *hotRoute, maxHeaderBytes int) (req hotRequest, n int, res parseResult) {
	// Method.
	var i int
	switch {
	case bytes.HasPrefix(b, []byte(prefixGET)):
		i = len(prefixGET)
	case bytes.HasPrefix(b, []byte(prefixHEAD)):
		i, req.head = len(prefixHEAD), true
	case len(b) < len(prefixHEAD) && (bytes.HasPrefix([]byte(prefixGET), b) || bytes.HasPrefix([]byte(prefixHEAD), b)):
		return req, 0, parseMore
	default:
		return req, 0, parseHandoff
	}

	// Path: bytes that can appear in a hot route, then exactly one space.
	j := i
	for j < len(b) && hotPathByte[b[j]] {
		j++
	}
	if j-i > hotMaxPath {
		return req, 0, parseHandoff
	}
	if j == len(b) {
		return req, 0, parseMore
	}
	if b[j] != ' ' || j == i {
		return req, 0, parseHandoff // a query, a fragment, percent-encoding, a control byte, ...
	}
	if req.route = lookup(b[i:j]); req.route == nil {
		return req, 0, parseHandoff
	}

	// Protocol.
	rest := b[j:]
	if len(rest) < len(protoCRLF) {
		if bytes.HasPrefix([]byte(protoCRLF), rest) {
			return req, 0, parseMore
		}
		return req, 0, parseHandoff
	}
	if !bytes.HasPrefix(rest, []byte(protoCRLF)) {
		return req, 0, parseHandoff
	}
	k := j + len(protoCRLF)

	// Header lines.
	hosts, lines := 0, 0
	var haveAE, haveConn bool
	for {
		if k > maxHeaderBytes {
			return req, 0, parseHandoff
		}
		if k == len(b) {
			return req, 0, parseMore
		}
		if b[k] == '\r' {
			if k+1 == len(b) {
				return req, 0, parseMore
			}
			if b[k+1] != '\n' {
				return req, 0, parseHandoff
			}
			k += 2
			break
		}
		e := bytes.IndexByte(b[k:], '\n')
		if e < 0 {
			if len(b) > maxHeaderBytes {
				return req, 0, parseHandoff
			}
			// The line is not complete. A name that is not a token will
			// never become acceptable: give it up now.
			for _, c := range b[k:] {
				if c == ':' {
					break
				}
				if !hotTokenByte[c] {
					return req, 0, parseHandoff
				}
			}
			return req, 0, parseMore
		}
		if e == 0 || b[k+e-1] != '\r' {
			return req, 0, parseHandoff // a bare LF
		}
		line := b[k : k+e-1]
		k += e + 1
		if lines++; lines > hotMaxHeaders {
			return req, 0, parseHandoff
		}

		// Name: one or more token bytes, then a colon right away. A line
		// that starts with a space or tab (obs-fold) fails here.
		c := 0
		for c < len(line) && hotTokenByte[line[c]] {
			c++
		}
		if c == 0 || c == len(line) || line[c] != ':' {
			return req, 0, parseHandoff
		}
		name, value := line[:c], line[c+1:]
		for _, v := range value {
			if (v < 0x20 || v > 0x7e) && v != '\t' {
				return req, 0, parseHandoff // control bytes, DEL and obs-text
			}
		}
		value = trimOWS(value)

		switch len(name) {
		case len("host"):
			if bytes.EqualFold(name, []byte("host")) {
				if hosts++; hosts > 1 || !hotHostValue(value) {
					return req, 0, parseHandoff
				}
			}
		case len("accept-encoding"):
			if bytes.EqualFold(name, []byte("accept-encoding")) {
				if haveAE {
					return req, 0, parseHandoff
				}
				haveAE, req.acceptEncoding = true, value
			}
		case len("if-none-match"):
			if bytes.EqualFold(name, []byte("if-none-match")) {
				if req.hasINM {
					return req, 0, parseHandoff
				}
				req.hasINM, req.ifNoneMatch = true, value
			}
		case len("connection"):
			if bytes.EqualFold(name, []byte("connection")) {
				if haveConn {
					return req, 0, parseHandoff
				}
				haveConn = true
				switch {
				case bytes.EqualFold(value, []byte("close")):
					req.close = true
				case bytes.EqualFold(value, []byte("keep-alive")):
				default:
					return req, 0, parseHandoff
				}
			}
		case len("content-length"):
			if bytes.EqualFold(name, []byte("content-length")) {
				return req, 0, parseHandoff
			}
		case len("transfer-encoding"):
			if bytes.EqualFold(name, []byte("transfer-encoding")) {
				return req, 0, parseHandoff
			}
		case len("expect"):
			if bytes.EqualFold(name, []byte("expect")) {
				return req, 0, parseHandoff
			}
		case len("upgrade"): // and "trailer"
			if bytes.EqualFold(name, []byte("upgrade")) || bytes.EqualFold(name, []byte("trailer")) {
				return req, 0, parseHandoff
			}
		}
	}
	if hosts != 1 || k > maxHeaderBytes {
		return req, 0, parseHandoff
	}
	return req, k, parseOK
}

// trimOWS trims spaces and tabs at both ends, as net/textproto does.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// hotHostValue accepts a non-empty host[:port] of letters, digits and
// "-._:[]": every name and address a browser sends, and a strict subset of
// what net/http accepts.
func hotHostValue(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

// hotPath reports whether p may be a hot route: it starts with a slash and
// has only bytes of hotPathByte. Route paths outside this set are left to
// net/http.
func hotPath(p string) bool {
	if p == "" || p[0] != '/' || len(p) > hotMaxPath {
		return false
	}
	for i := 0; i < len(p); i++ {
		if !hotPathByte[p[i]] {
			return false
		}
	}
	return true
}

// hotPathByte: letters, digits and "-._~/". No '%' (a percent-encoded path
// has another spelling on the wire than in the route), no '?' or '#'.
var hotPathByte = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '/'
	}
	return t
}()

// hotTokenByte: tchar of RFC 9110 §5.6.2.
var hotTokenByte = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
	}
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		t[c] = true
	}
	return t
}()
