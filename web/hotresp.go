package web

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
)

// The hot path's answers are the echo path's answers, recorded: at start
// (and when the home page or the total changes) each response variant is
// produced once by the same code the echo path runs (the edge's headers,
// then resource.serve or totalBody.setHeaders) into a header map, and that
// map is written out the way net/http writes it: status line, the keys in
// sorted order, then Date. A hot answer is that block, the current Date,
// an optional "Connection: close", CRLF and the body.

// hotKind is how a hot route finds its current bytes.
type hotKind uint8

const (
	hotFixed hotKind = iota // a page or asset rendered once
	hotHome                 // the home page: re-rendered when the total changes
	hotTotal                // GET /api/v1/total: re-encoded when the total changes
)

// hotRoute is one path the hot path answers.
type hotRoute struct {
	label string // echo's route template: the metrics' route label
	kind  hotKind
	fixed *hotResource
	home  atomic.Pointer[hotResource] // hotHome: for the resource now in Server.home
	total atomic.Pointer[hotTotalBody]
	obs   [4]atomic.Pointer[seriesObs] // [HEAD?2:0 + 304?1:0], filled on first use
}

// hotResource is a resource with the header block of each variant.
type hotResource struct {
	res  *resource
	vars [3]hotVariant // identity, gzip, br; v nil where the resource has none
}

type hotVariant struct {
	v           *variant
	ok          []byte // "HTTP/1.1 200 OK\r\n" ... "Date: "
	notModified []byte // "HTTP/1.1 304 Not Modified\r\n" ... "Date: "
}

// hotTotalBody is the header block for one encoded total.
type hotTotalBody struct {
	tb   *totalBody
	head []byte
}

// variant returns the block of v, or nil.
func (hr *hotResource) variant(v *variant) *hotVariant {
	for i := range hr.vars {
		if hr.vars[i].v == v && v != nil {
			return &hr.vars[i]
		}
	}
	return nil
}

// headerRecorder is a ResponseWriter that keeps the header map and status.
type headerRecorder struct {
	h      http.Header
	status int
}

func (w *headerRecorder) Header() http.Header { return w.h }
func (w *headerRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *headerRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(b), nil
}

// record runs fill as the edge and the handler would for a request of kind
// k and returns the status and header map.
func (s *Server) record(k respKind, r *http.Request, fill func(http.ResponseWriter, *http.Request)) (int, http.Header) {
	w := &headerRecorder{h: http.Header{}}
	s.edge.setHeaders(w.h, k)
	fill(w, r)
	return w.status, w.h
}

// hotHead writes status and h as net/http's server does for an HTTP/1.1
// request whose handler set Content-Length (or answered 304), up to and
// including "Date: ". It refuses header maps net/http would change
// (sniffed Content-Type, chunking, Date or Connection set by the handler).
func hotHead(status int, h http.Header) ([]byte, error) {
	for _, k := range []string{"Date", "Connection", "Transfer-Encoding", "Trailer"} {
		if _, ok := h[k]; ok {
			return nil, fmt.Errorf("hot path: handler set %s", k)
		}
	}
	switch status {
	case http.StatusOK:
		if len(h["Content-Length"]) != 1 || len(h["Content-Type"]) != 1 {
			return nil, errors.New("hot path: 200 without Content-Length or Content-Type")
		}
	case http.StatusNotModified:
		// net/http drops these from a 304 (suppressedHeaders).
		delete(h, "Content-Type")
		delete(h, "Content-Length")
	default:
		return nil, fmt.Errorf("hot path: status %d", status)
	}
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 ")
	b.WriteString(strconv.Itoa(status))
	b.WriteByte(' ')
	b.WriteString(http.StatusText(status))
	b.WriteString("\r\n")
	if err := h.Write(&b); err != nil { // sorted by key, as Server writes it
		return nil, err
	}
	b.WriteString("Date: ")
	return b.Bytes(), nil
}

// newHotResource records the 200 and 304 blocks of every variant of res.
func (s *Server) newHotResource(res *resource, k respKind) (*hotResource, error) {
	hr := &hotResource{res: res}
	for i, c := range []struct {
		v  *variant
		ae string
	}{{res.identity, ""}, {res.gzip, "gzip"}, {res.br, "br"}} {
		if c.v == nil {
			continue
		}
		if res.pick(c.ae) != c.v {
			return nil, fmt.Errorf("hot path: Accept-Encoding %q does not select its variant", c.ae)
		}
		hv := hotVariant{v: c.v}
		for _, inm := range []bool{false, true} {
			r := &http.Request{Method: http.MethodGet, Header: http.Header{}}
			if c.ae != "" {
				r.Header["Accept-Encoding"] = []string{c.ae}
			}
			want := http.StatusOK
			if inm {
				r.Header["If-None-Match"] = c.v.etag
				want = http.StatusNotModified
			}
			status, h := s.record(k, r, func(w http.ResponseWriter, r *http.Request) { res.serve(w, r, http.StatusOK) })
			if status != want {
				return nil, fmt.Errorf("hot path: recorded status %d, want %d", status, want)
			}
			head, err := hotHead(status, h)
			if err != nil {
				return nil, err
			}
			if inm {
				hv.notModified = head
			} else {
				hv.ok = head
			}
		}
		hr.vars[i] = hv
	}
	return hr, nil
}

// newHotTotal records the block of the total's answer for tb.
func (s *Server) newHotTotal(tb *totalBody) (*hotTotalBody, error) {
	r := &http.Request{Method: http.MethodGet, Header: http.Header{}}
	status, h := s.record(kindTotal, r, func(w http.ResponseWriter, _ *http.Request) {
		tb.setHeaders(w.Header())
		w.WriteHeader(http.StatusOK)
	})
	head, err := hotHead(status, h)
	if err != nil {
		return nil, err
	}
	return &hotTotalBody{tb: tb, head: head}, nil
}

// newHotRoutes builds the table of hot paths: the pre-rendered pages, the
// hashed assets whose names need no escaping, and the total. Each path
// must route, in echo, to the template the table names; a path that does
// not (an operator's route shadowing it) is left to echo.
func (s *Server) newHotRoutes() (map[string]*hotRoute, error) {
	routes := map[string]*hotRoute{}
	add := func(path string, rt *hotRoute) {
		if hotPath(path) && s.routesTo(path, rt.label) {
			routes[path] = rt
		}
	}
	for _, p := range pageRoutes {
		if p.name == pageHome {
			add(p.path, &hotRoute{label: p.path, kind: hotHome})
			continue
		}
		hr, err := s.newHotResource(s.pages[p.name], kindPage)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.path, err)
		}
		add(p.path, &hotRoute{label: p.path, fixed: hr})
	}
	for name, res := range s.rd.static {
		hr, err := s.newHotResource(res, kindPage)
		if err != nil {
			return nil, fmt.Errorf("%s%s: %w", staticPrefix, name, err)
		}
		add(staticPrefix+name, &hotRoute{label: staticPrefix + "*", fixed: hr})
	}
	add(pathTotal, &hotRoute{label: pathTotal, kind: hotTotal})
	return routes, nil
}

// routesTo reports whether echo routes GET and HEAD of path to the route
// template label.
func (s *Server) routesTo(path, label string) bool {
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		c := s.echo.NewContext(nil, nil)
		s.echo.Router().Find(m, path, c)
		if c.Path() != label {
			return false
		}
	}
	return true
}

// observers returns the metric children of one answer of rt.
func (rt *hotRoute) observers(m *Metrics, head bool, status int) *seriesObs {
	i, method := 0, http.MethodGet
	if head {
		i, method = 2, http.MethodHead
	}
	if status == http.StatusNotModified {
		i++
	}
	if o := rt.obs[i].Load(); o != nil {
		return o
	}
	o := m.observers(rt.label, method, status)
	rt.obs[i].Store(o)
	return o
}
