package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// The internal RPC is a small multiplexed request/response protocol over
// authenticated connections from the mux. Every frame is
//
//	length(u32, bytes that follow) id(u64) kind(u8) payload
//
// where kind is the method for requests and a result code for responses.
// Requests on one connection are handled concurrently and answered out of
// order, so many forwarded writes pipeline over a few pooled connections
// instead of serialising on one lock.

const (
	rpcHeaderLen   = 4 + 8 + 1
	rpcMaxFrame    = MaxCommandSize + 64*1024 + 4*1024*1024 // a command, or a status with app extras
	rpcPoolSize    = 4
	rpcDialTimeout = 2 * time.Second
)

// Methods.
const (
	mApply byte = iota + 1
	mStatus
	mLeaderCommit
	mBootstrapInfo
	mRemoveServer
	mTransferLeadership
)

// Result codes.
const (
	codeOK byte = iota
	codeNotLeader
	codeLeadershipLost // outcome unknown; idempotent commands may be resubmitted
	codeFSM
	codeClosed
	codeBadRequest
	codeNoLeader
	codeUnsafe
	codeUnknownServer
	codeTooLarge
	codeError
	// codeTimeout: the leader did not take or commit the entry within the
	// caller's remaining hold (ErrTimeout; outcome unknown). Added after
	// codeError so that the older codes keep their values on the wire.
	codeTimeout
)

// rpcError is an error answered by a peer.
type rpcError struct {
	code byte
	msg  string
}

func (e *rpcError) Error() string { return e.msg }

func (e *rpcError) Unwrap() error {
	switch e.code {
	case codeNotLeader:
		return ErrNotLeader
	case codeLeadershipLost:
		return errLeadershipLost
	case codeFSM:
		return ErrFSM
	case codeClosed:
		return ErrClosed
	case codeBadRequest:
		return ErrBadRequest
	case codeNoLeader:
		return ErrNoLeader
	case codeUnsafe:
		return ErrUnsafe
	case codeUnknownServer:
		return ErrUnknownServer
	case codeTooLarge:
		return ErrTooLarge
	case codeTimeout:
		return ErrTimeout
	}
	return nil
}

// codeFor maps an error from a local operation to a wire code.
func codeFor(err error) byte {
	switch {
	case errors.Is(err, ErrNotLeader):
		return codeNotLeader
	case errors.Is(err, errLeadershipLost):
		return codeLeadershipLost
	case errors.Is(err, ErrFSM):
		return codeFSM
	case errors.Is(err, ErrClosed):
		return codeClosed
	case errors.Is(err, ErrBadRequest):
		return codeBadRequest
	case errors.Is(err, ErrNoLeader):
		return codeNoLeader
	case errors.Is(err, ErrUnsafe):
		return codeUnsafe
	case errors.Is(err, ErrUnknownServer):
		return codeUnknownServer
	case errors.Is(err, ErrTooLarge):
		return codeTooLarge
	case errors.Is(err, ErrTimeout), errors.Is(err, raft.ErrEnqueueTimeout):
		// The hold ran out on the leader: raft's queue did not take the
		// entry in time, or it did not commit in time. The caller's hold
		// is spent too; it answers ErrTimeout (503), not a bare error, even
		// when its own timer has not fired yet.
		return codeTimeout
	}
	return codeError
}

// errLeadershipLost marks an outcome left unknown by a leadership change.
var errLeadershipLost = errors.New("leadership lost while committing")

func writeFrame(w *bufio.Writer, id uint64, kind byte, payload []byte) error {
	var h [rpcHeaderLen]byte
	binary.BigEndian.PutUint32(h[0:4], uint32(8+1+len(payload)))
	binary.BigEndian.PutUint64(h[4:12], id)
	h[12] = kind
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	if _, err := w.Write(payload); err != nil {
		return err
	}
	return w.Flush()
}

func readFrame(r *bufio.Reader) (id uint64, kind byte, payload []byte, err error) {
	var h [rpcHeaderLen]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return 0, 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[0:4])
	if n < 9 || n > rpcMaxFrame {
		return 0, 0, nil, fmt.Errorf("rpc frame of %d bytes out of range", n)
	}
	id = binary.BigEndian.Uint64(h[4:12])
	kind = h[12]
	payload = make([]byte, n-9)
	if _, err = io.ReadFull(r, payload); err != nil {
		return 0, 0, nil, err
	}
	return id, kind, payload, nil
}

// rpcHandler serves one request. The returned code is codeOK with a result,
// or an error code with a message in the payload.
type rpcHandler func(ctx context.Context, method byte, payload []byte) (byte, []byte)

// rpcServer serves internal RPC connections handed over by the mux.
type rpcServer struct {
	handler rpcHandler
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func newRPCServer(h rpcHandler, log *slog.Logger) *rpcServer {
	ctx, cancel := context.WithCancel(context.Background())
	return &rpcServer{handler: h, log: log, ctx: ctx, cancel: cancel, conns: make(map[net.Conn]struct{})}
}

// serve runs on the mux's handler goroutine for the connection's lifetime.
func (s *rpcServer) serve(conn net.Conn) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return
	}
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
	}()

	r := bufio.NewReaderSize(conn, 64*1024)
	w := bufio.NewWriterSize(conn, 64*1024)
	var wmu sync.Mutex
	var reqs sync.WaitGroup
	defer reqs.Wait()
	for {
		id, method, payload, err := readFrame(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("internal rpc connection ended", "remote", conn.RemoteAddr().String(), "err", err)
			}
			return
		}
		reqs.Add(1)
		go func() {
			defer reqs.Done()
			code, out := s.handler(s.ctx, method, payload)
			wmu.Lock()
			defer wmu.Unlock()
			if err := writeFrame(w, id, code, out); err != nil {
				conn.Close() // the read loop sees it and ends
			}
		}()
	}
}

func (s *rpcServer) close() {
	s.mu.Lock()
	s.closed = true
	s.cancel()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// rpcClient pools authenticated connections per peer address.
type rpcClient struct {
	key []byte
	log *slog.Logger

	mu     sync.Mutex
	peers  map[string]*peerConns
	closed bool
	wg     sync.WaitGroup // background dials and reader goroutines
}

type peerConns struct {
	mu      sync.Mutex
	conns   []*rpcConn
	next    uint32
	dialing bool
}

func newRPCClient(key []byte, log *slog.Logger) *rpcClient {
	return &rpcClient{key: key, log: log, peers: make(map[string]*peerConns)}
}

// call sends one request to addr and waits for the answer or ctx.
func (c *rpcClient) call(ctx context.Context, addr string, method byte, payload []byte) ([]byte, error) {
	conn, err := c.conn(ctx, addr)
	if err != nil {
		return nil, err
	}
	return conn.call(ctx, method, payload)
}

func (c *rpcClient) conn(ctx context.Context, addr string) (*rpcConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	p := c.peers[addr]
	if p == nil {
		p = &peerConns{}
		c.peers[addr] = p
	}
	c.mu.Unlock()

	p.mu.Lock()
	live := p.conns[:0]
	for _, cn := range p.conns {
		if !cn.isDead() {
			live = append(live, cn)
		}
	}
	clear(p.conns[len(live):])
	p.conns = live
	if n := len(p.conns); n > 0 {
		cn := p.conns[p.next%uint32(n)]
		p.next++
		if n < rpcPoolSize && !p.dialing {
			// Grow the pool in the background so callers never wait on a dial
			// while a working connection exists.
			p.dialing = true
			c.mu.Lock()
			if !c.closed {
				c.wg.Add(1)
				go func() {
					defer c.wg.Done()
					nc, err := c.dial(addr, rpcDialTimeout)
					p.mu.Lock()
					p.dialing = false
					if err == nil {
						p.conns = append(p.conns, nc)
					}
					p.mu.Unlock()
				}()
			} else {
				p.dialing = false
			}
			c.mu.Unlock()
		}
		p.mu.Unlock()
		return cn, nil
	}
	p.mu.Unlock()

	timeout := rpcDialTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	nc, err := c.dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.conns = append(p.conns, nc)
	p.mu.Unlock()
	return nc, nil
}

func (c *rpcClient) dial(addr string, timeout time.Duration) (*rpcConn, error) {
	conn, err := dialAuth(addr, c.key, protoRPC, timeout)
	if err != nil {
		return nil, fmt.Errorf("dial internal rpc %s: %w", addr, err)
	}
	rc := &rpcConn{
		conn:    conn,
		w:       bufio.NewWriterSize(conn, 64*1024),
		pending: make(map[uint64]chan rpcResult),
		dead:    make(chan struct{}),
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return nil, ErrClosed
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		rc.readLoop()
	}()
	return rc, nil
}

func (c *rpcClient) close() {
	c.mu.Lock()
	c.closed = true
	peers := c.peers
	c.peers = map[string]*peerConns{}
	c.mu.Unlock()
	for _, p := range peers {
		p.mu.Lock()
		for _, cn := range p.conns {
			cn.kill(ErrClosed)
		}
		p.mu.Unlock()
	}
	c.wg.Wait()
	// Connections dialled while closing are killed by their dial path.
	for _, p := range peers {
		p.mu.Lock()
		for _, cn := range p.conns {
			cn.kill(ErrClosed)
		}
		p.mu.Unlock()
	}
}

type rpcResult struct {
	code    byte
	payload []byte
}

// rpcConn is one pooled client connection with requests in flight.
type rpcConn struct {
	conn   net.Conn
	wmu    sync.Mutex
	w      *bufio.Writer
	nextID atomic.Uint64

	pmu     sync.Mutex
	pending map[uint64]chan rpcResult
	err     error
	dead    chan struct{}
	once    sync.Once
}

func (rc *rpcConn) isDead() bool {
	select {
	case <-rc.dead:
		return true
	default:
		return false
	}
}

func (rc *rpcConn) kill(err error) {
	rc.once.Do(func() {
		rc.pmu.Lock()
		rc.err = err
		close(rc.dead)
		rc.pmu.Unlock()
		rc.conn.Close()
	})
}

func (rc *rpcConn) readLoop() {
	r := bufio.NewReaderSize(rc.conn, 64*1024)
	for {
		id, code, payload, err := readFrame(r)
		if err != nil {
			rc.kill(err)
			return
		}
		rc.pmu.Lock()
		ch := rc.pending[id]
		delete(rc.pending, id)
		rc.pmu.Unlock()
		if ch != nil {
			ch <- rpcResult{code: code, payload: payload}
		}
	}
}

// errConnLost marks a request whose connection failed: the peer may or may
// not have executed it.
var errConnLost = errors.New("internal rpc connection lost")

func (rc *rpcConn) call(ctx context.Context, method byte, payload []byte) ([]byte, error) {
	id := rc.nextID.Add(1)
	ch := make(chan rpcResult, 1)
	rc.pmu.Lock()
	if rc.err != nil {
		err := rc.err
		rc.pmu.Unlock()
		return nil, fmt.Errorf("%w: %w", errConnLost, err)
	}
	rc.pending[id] = ch
	rc.pmu.Unlock()

	rc.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		_ = rc.conn.SetWriteDeadline(dl)
	} else {
		_ = rc.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	}
	err := writeFrame(rc.w, id, method, payload)
	rc.wmu.Unlock()
	if err != nil {
		rc.kill(err)
		rc.forget(id)
		return nil, fmt.Errorf("%w: %w", errConnLost, err)
	}

	select {
	case res := <-ch:
		if res.code != codeOK {
			return nil, &rpcError{code: res.code, msg: string(res.payload)}
		}
		return res.payload, nil
	case <-rc.dead:
		rc.forget(id)
		// The answer may have arrived just before the connection died.
		select {
		case res := <-ch:
			if res.code != codeOK {
				return nil, &rpcError{code: res.code, msg: string(res.payload)}
			}
			return res.payload, nil
		default:
		}
		rc.pmu.Lock()
		err := rc.err
		rc.pmu.Unlock()
		return nil, fmt.Errorf("%w: %w", errConnLost, err)
	case <-ctx.Done():
		rc.forget(id)
		return nil, ctx.Err()
	}
}

func (rc *rpcConn) forget(id uint64) {
	rc.pmu.Lock()
	delete(rc.pending, id)
	rc.pmu.Unlock()
}
