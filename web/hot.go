package web

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// The hot path (DESIGN.md, "Hot path") answers the publicly cacheable
// GET/HEAD requests (pre-rendered pages, hashed assets, the total) below
// net/http, on the same listener. It accepts every connection, reads
// requests with a strict parser (hotparse.go) and writes precomputed
// answers (hotresp.go). The first request it does not fully understand
// hands the connection to net/http for good: net/http reads exactly the
// bytes the hot path has not consumed, through handoffListener.

const (
	hotReadBuf  = 4 << 10  // per connection; a request that does not fit goes to net/http
	hotMaxCopy  = 16 << 10 // larger bodies are written with writev instead of copied
	hotMaxOut   = 64 << 10 // pipelined answers are flushed when this much is pending
	hotLinger   = 500 * time.Millisecond
	maxDeadSlop = time.Second // deadlines are refreshed at most this often
)

// hotServer is the hot path of one Serve call.
type hotServer struct {
	s         *Server
	ln        net.Listener
	m         *Metrics               // nil: no metrics
	lookup    func([]byte) *hotRoute // path -> hot route, or nil
	rht, idle time.Duration          // ReadHeaderTimeout, IdleTimeout as net/http applies them
	wt        time.Duration
	maxHeader int

	accepted chan acceptResult // to net/http: handed-off connections and accept errors
	lnDone   chan struct{}     // closed when net/http closes its listener
	lnOnce   sync.Once
	killed   chan struct{} // closed by closeAll: cut lingering short
	killOnce sync.Once
	stopOnce sync.Once
	lnErr    error

	date     atomic.Pointer[hotDate]
	pool     sync.Pool
	handoffs atomic.Uint64 // connections given to net/http after the hot path read them

	mu      sync.Mutex
	conns   map[*hotConn]struct{}
	closing atomic.Bool // set under mu; read without it on the hot path
	wg      sync.WaitGroup
}

type acceptResult struct {
	c   net.Conn
	err error
}

// hotDate is the Date value of one second, with its CRLF.
type hotDate struct {
	sec  int64
	line []byte
}

// newHotServer prepares the hot path for ln. It starts nothing.
func newHotServer(s *Server, ln net.Listener) (*hotServer, error) {
	routes, err := s.newHotRoutes()
	if err != nil {
		return nil, err
	}
	h := &hotServer{
		s:         s,
		ln:        ln,
		m:         s.metrics.Load(),
		lookup:    func(p []byte) *hotRoute { return routes[string(p)] },
		rht:       s.cfg.ReadHeaderTimeout,
		idle:      s.cfg.IdleTimeout,
		wt:        s.cfg.WriteTimeout,
		maxHeader: s.cfg.MaxHeaderBytes,
		accepted:  make(chan acceptResult),
		lnDone:    make(chan struct{}),
		killed:    make(chan struct{}),
		conns:     map[*hotConn]struct{}{},
	}
	// As net/http: without a header timeout the read timeout applies,
	// without an idle timeout too.
	if h.rht <= 0 {
		h.rht = s.cfg.ReadTimeout
	}
	if h.idle <= 0 {
		h.idle = s.cfg.ReadTimeout
	}
	return h, nil
}

// start runs the accept loop.
func (h *hotServer) start() {
	h.wg.Add(1)
	go h.acceptLoop()
}

// listener is what net/http serves: the connections the hot path hands
// over, and the real listener's accept errors.
func (h *hotServer) listener() net.Listener { return handoffListener{h} }

func (h *hotServer) acceptLoop() {
	defer h.wg.Done()
	for {
		c, err := h.ln.Accept()
		if err != nil {
			if h.closing.Load() {
				return
			}
			// net/http decides: it backs off on temporary errors and calls
			// Accept again, or returns the error from Serve.
			if !h.deliver(acceptResult{err: err}) {
				return
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				continue
			}
			return
		}
		if _, ok := c.(*tls.Conn); ok {
			// Not ours to read: net/http must see the TLS connection itself.
			if !h.deliver(acceptResult{c: c}) {
				return
			}
			continue
		}
		hc := h.track(c)
		if hc == nil {
			_ = c.Close()
			continue
		}
		go hc.serve()
	}
}

// deliver passes r to net/http. It fails, closing the connection, once
// net/http has closed its listener.
func (h *hotServer) deliver(r acceptResult) bool {
	select {
	case h.accepted <- r:
		return true
	case <-h.lnDone:
		if r.c != nil {
			_ = r.c.Close()
		}
		return false
	}
}

// track registers a new connection, unless the server is stopping.
func (h *hotServer) track(c net.Conn) *hotConn {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing.Load() {
		return nil
	}
	hc, _ := h.pool.Get().(*hotConn)
	if hc == nil {
		hc = &hotConn{out: make([]byte, 0, hotReadBuf)}
	}
	hc.h, hc.c = h, c
	h.conns[hc] = struct{}{}
	h.wg.Add(1)
	return hc
}

func (h *hotServer) untrack(hc *hotConn) {
	h.mu.Lock()
	delete(h.conns, hc)
	h.mu.Unlock()
}

// stopAccepting closes the real listener and marks the server stopping:
// connections that go idle from now on close.
func (h *hotServer) stopAccepting() {
	h.mu.Lock()
	h.closing.Store(true)
	h.mu.Unlock()
	h.closeListener()
}

func (h *hotServer) closeListener() error {
	h.stopOnce.Do(func() { h.lnErr = h.ln.Close() })
	return h.lnErr
}

// closeIdle closes the connections waiting for a request. The others
// close after the answer they are writing (which says Connection: close).
func (h *hotServer) closeIdle() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for hc := range h.conns {
		if hc.state.CompareAndSwap(connIdle, connClosed) {
			_ = hc.c.Close()
		}
	}
}

// closeAll closes every connection the hot path still holds.
func (h *hotServer) closeAll() {
	h.killOnce.Do(func() { close(h.killed) })
	h.mu.Lock()
	defer h.mu.Unlock()
	for hc := range h.conns {
		hc.state.Store(connClosed)
		_ = hc.c.Close()
	}
}

// wait waits for the accept loop and every hot connection to finish. When
// ctx ends first it closes what is left, waits for that, and returns
// ctx's error.
func (h *hotServer) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		h.closeAll()
		<-done
		return ctx.Err()
	}
}

// dateLine is the Date value for now followed by CRLF, formatted once a
// second.
func (h *hotServer) dateLine(now time.Time) []byte {
	sec := now.Unix()
	if d := h.date.Load(); d != nil && d.sec == sec {
		return d.line
	}
	d := &hotDate{sec: sec, line: append(now.UTC().AppendFormat(make([]byte, 0, 32), http.TimeFormat), '\r', '\n')}
	h.date.Store(d)
	return d.line
}

// debugLogging reports whether requests are logged (then every request
// goes to net/http, whose edge writes the access log).
func (h *hotServer) debugLogging() bool {
	return h.s.log.Enabled(context.Background(), slog.LevelDebug)
}

// handoffListener is the net.Listener net/http serves.
type handoffListener struct{ h *hotServer }

func (l handoffListener) Accept() (net.Conn, error) {
	select {
	case <-l.h.lnDone:
		return nil, net.ErrClosed
	default:
	}
	select {
	case r := <-l.h.accepted:
		return r.c, r.err
	case <-l.h.lnDone:
		return nil, net.ErrClosed
	}
}

// Close is net/http closing its listener (Shutdown, Close, or Serve
// returning): the real listener closes and handoffs stop.
func (l handoffListener) Close() error {
	l.h.lnOnce.Do(func() { close(l.h.lnDone) })
	return l.h.closeListener()
}

func (l handoffListener) Addr() net.Addr { return l.h.ln.Addr() }

// Connection states, for Shutdown.
const (
	connActive int32 = iota // parsing, answering, writing
	connIdle                // waiting for bytes
	connClosed              // closed by Shutdown or Close
)

// hotConn is one connection the hot path reads.
type hotConn struct {
	h     *hotServer
	c     net.Conn
	state atomic.Int32

	in   [hotReadBuf]byte
	r, w int // unread bytes are in[r:w]
	out  []byte

	rdl      time.Time // read deadline set on c
	rdlIdle  bool      // rdl is an idle deadline (else a header deadline)
	hdrArmed bool      // a header deadline runs for the request being read
	wdl      time.Time // write deadline set on c
}

// serve runs the connection until it closes or is handed off.
func (c *hotConn) serve() {
	h := c.h
	handedOff := false
	defer func() {
		if p := recover(); p != nil {
			h.s.log.Error("panic in the hot path", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			handedOff = false
		}
		if !handedOff {
			_ = c.c.Close()
		}
		h.untrack(c)
		c.release()
		h.wg.Done()
	}()
	now := time.Now()
	c.setReadDeadline(now.Add(h.rht), false)
	c.hdrArmed = true
	for {
		now = time.Now()
		date := h.dateLine(now)
		debugLog := h.debugLogging()
		for c.r < c.w {
			req, n, res := parseHot(c.in[c.r:c.w], h.lookup, h.maxHeader)
			if res == parseMore {
				break
			}
			if res == parseOK && !debugLog {
				closeAfter := req.close || h.closing.Load()
				ok, err := c.answer(&req, date, closeAfter, now)
				if err != nil {
					return
				}
				if ok {
					c.r += n
					c.hdrArmed = false
					if closeAfter {
						c.closeAfterReply(now)
						return
					}
					if len(c.out) >= hotMaxOut && !c.flush(now) {
						return
					}
					continue
				}
			}
			handedOff = c.handoff(now)
			return
		}
		switch {
		case c.r == c.w:
			c.r, c.w = 0, 0
		case c.r > 0:
			c.w = copy(c.in[:], c.in[c.r:c.w])
			c.r = 0
		}
		if c.w == len(c.in) {
			// A request larger than the hot path buffers: net/http reads
			// the rest under its own limits.
			handedOff = c.handoff(now)
			return
		}
		if !c.flush(now) {
			return
		}
		c.armReadDeadline(now)
		// Waiting for bytes is idle, as in net/http, whose Shutdown closes
		// connections that have not sent a whole request.
		c.state.Store(connIdle)
		if h.closing.Load() {
			return
		}
		n, err := c.c.Read(c.in[c.w:])
		if !c.state.CompareAndSwap(connIdle, connActive) {
			return // closed by Shutdown while idle
		}
		if err != nil {
			return // EOF, a timeout or a reset: net/http closes silently too
		}
		c.w += n
	}
}

// armReadDeadline sets the read deadline for the wait ahead: the header
// deadline once a request has begun (fixed from its first bytes, so a slow
// sender cannot extend it), else the idle deadline, refreshed only when it
// has fallen behind by more than a small slop.
func (c *hotConn) armReadDeadline(now time.Time) {
	h := c.h
	if c.w > 0 {
		if !c.hdrArmed {
			c.setReadDeadline(now.Add(h.rht), false)
			c.hdrArmed = true
		}
		return
	}
	if c.hdrArmed {
		return // a new connection: its first request runs under the header deadline from accept
	}
	want := now.Add(h.idle)
	if !c.rdlIdle || want.Sub(c.rdl) > slop(h.idle) {
		c.setReadDeadline(want, true)
	}
}

func (c *hotConn) setReadDeadline(t time.Time, idle bool) {
	_ = c.c.SetReadDeadline(t)
	c.rdl, c.rdlIdle = t, idle
}

// slop is how stale a deadline of d may get before it is set again.
func slop(d time.Duration) time.Duration {
	return min(maxDeadSlop, d/8)
}

// answer appends the answer to req to the output. ok is false when the
// hot path cannot answer it after all (then nothing was appended and the
// request goes to net/http); err is a failed write.
func (c *hotConn) answer(req *hotRequest, date []byte, closeAfter bool, now time.Time) (ok bool, err error) {
	h := c.h
	var start time.Duration
	if h.m != nil {
		start = time.Since(h.m.epoch)
	}
	rt := req.route
	status := http.StatusOK
	var head, body []byte
	switch rt.kind {
	case hotTotal:
		tb := h.s.currentTotal()
		ht := rt.total.Load()
		if ht == nil || ht.tb != tb {
			if ht, err = h.s.newHotTotal(tb); err != nil {
				return false, nil
			}
			rt.total.Store(ht)
		}
		head, body = ht.head, tb.body
	default:
		hr := rt.fixed
		if rt.kind == hotHome {
			res := h.s.home.Load().res
			if hr = rt.home.Load(); hr == nil || hr.res != res {
				if hr, err = h.s.newHotResource(res, kindPage); err != nil {
					return false, nil
				}
				rt.home.Store(hr)
			}
		}
		hv := hr.variant(hr.res.pick(string(req.acceptEncoding)))
		if hv == nil {
			return false, nil
		}
		if req.hasINM && etagListMatch([]string{string(req.ifNoneMatch)}, hv.v.etag[0]) {
			head, status = hv.notModified, http.StatusNotModified
		} else {
			head, body = hv.ok, hv.v.body
		}
	}
	c.out = append(c.out, head...)
	c.out = append(c.out, date...)
	if closeAfter {
		c.out = append(c.out, "Connection: close\r\n"...)
	}
	c.out = append(c.out, '\r', '\n')
	if !req.head && len(body) > 0 {
		if len(body) > hotMaxCopy {
			if !c.flushWith(now, body) {
				return true, net.ErrClosed
			}
		} else {
			c.out = append(c.out, body...)
		}
	}
	if m := h.m; m != nil {
		o := rt.observers(m, req.head, status)
		o.requests.Inc()
		o.duration.Observe((time.Since(m.epoch) - start).Seconds())
	}
	return true, nil
}

// flush writes the pending output.
func (c *hotConn) flush(now time.Time) bool {
	if len(c.out) == 0 {
		return true
	}
	c.armWriteDeadline(now)
	_, err := c.c.Write(c.out)
	c.out = c.out[:0]
	return err == nil
}

// flushWith writes the pending output and body in one writev.
func (c *hotConn) flushWith(now time.Time, body []byte) bool {
	c.armWriteDeadline(now)
	bufs := net.Buffers{c.out, body}
	_, err := bufs.WriteTo(c.c)
	c.out = c.out[:0]
	return err == nil
}

func (c *hotConn) armWriteDeadline(now time.Time) {
	wt := c.h.wt
	if wt <= 0 {
		return
	}
	if want := now.Add(wt); want.Sub(c.wdl) > slop(wt) {
		_ = c.c.SetWriteDeadline(want)
		c.wdl = want
	}
}

// closeAfterReply ends the connection as net/http does after an answer
// that said Connection: close: flush, half-close, give the client a moment
// to read before the close would reset the connection, close.
func (c *hotConn) closeAfterReply(now time.Time) {
	if !c.flush(now) {
		return
	}
	if cw, ok := c.c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	t := time.NewTimer(hotLinger)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.h.killed:
	}
}

// handoff flushes what the hot path has answered and gives the connection,
// with the bytes it has read but not consumed, to net/http. It reports
// whether net/http took it.
func (c *hotConn) handoff(now time.Time) bool {
	if !c.flush(now) {
		return false
	}
	// Leave net/http clean deadlines: it sets its own per request.
	_ = c.c.SetDeadline(time.Time{})
	var conn net.Conn = c.c
	if c.r < c.w {
		conn = &handoffConn{Conn: c.c, pending: append([]byte(nil), c.in[c.r:c.w]...)}
	}
	c.h.untrack(c)
	c.state.Store(connActive)
	c.h.handoffs.Add(1)
	return c.h.deliver(acceptResult{c: conn})
}

func (c *hotConn) release() {
	h := c.h
	c.h, c.c = nil, nil
	c.r, c.w = 0, 0
	c.out = c.out[:0]
	if cap(c.out) > 4*hotReadBuf {
		c.out = make([]byte, 0, hotReadBuf)
	}
	c.rdl, c.wdl, c.rdlIdle, c.hdrArmed = time.Time{}, time.Time{}, false, false
	c.state.Store(connActive)
	h.pool.Put(c)
}

// handoffConn is a connection whose first bytes were already read: Read
// returns them before reading from the socket again.
type handoffConn struct {
	net.Conn
	pending []byte
}

func (c *handoffConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite lets net/http half-close the connection, as it does for a
// *net.TCPConn.
func (c *handoffConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
