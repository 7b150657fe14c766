package cluster

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// One TCP listener on RaftAddr carries two protocols. The dialer writes one
// byte naming the protocol, then both sides run a mutual HMAC
// challenge-response keyed from the gossip key; only then do Raft or the
// internal RPC see the connection.
//
// Handshake (all fixed-size, so no framing is needed):
//
//	client -> server: proto(1) version(1) clientNonce(16)
//	server -> client: serverNonce(16) HMAC(k, "S" proto clientNonce serverNonce)(32)
//	client -> server: HMAC(k, "C" proto clientNonce serverNonce)(32)
//
// The client proves itself after it has verified the server, so neither side
// talks to an unauthenticated peer. Each connection costs one round trip
// more than a bare TCP dial; both protocols pool their connections.
const (
	protoRaft byte = 'R'
	protoRPC  byte = 'C'

	handshakeVersion byte = 1
	nonceLen              = 16
	macLen                = sha256.Size
	handshakeTimeout      = 5 * time.Second
)

// deriveAuthKey turns the gossip key into the internal RPC key so the two
// uses never share key material directly. Without a gossip key the derived
// key is a public constant: the handshake still runs (so keyed and unkeyed
// nodes fail cleanly against each other) but authenticates nothing.
func deriveAuthKey(gossipKey []byte) []byte {
	k, err := hkdf.Key(sha256.New, gossipKey, []byte("surge-cluster"), "internal rpc auth v1", 32)
	if err != nil {
		// hkdf.Key only fails for absurd key lengths.
		panic(fmt.Sprintf("derive auth key: %v", err))
	}
	return k
}

func handshakeMAC(key []byte, side byte, proto byte, cn, sn []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte{side, proto})
	m.Write(cn)
	m.Write(sn)
	return m.Sum(nil)
}

// clientHandshake authenticates an outgoing connection for proto. The
// caller sets the deadline.
func clientHandshake(conn net.Conn, key []byte, proto byte) error {
	var hello [2 + nonceLen]byte
	hello[0], hello[1] = proto, handshakeVersion
	cn := hello[2:]
	if _, err := rand.Read(cn); err != nil {
		return fmt.Errorf("handshake nonce: %w", err)
	}
	if _, err := conn.Write(hello[:]); err != nil {
		return fmt.Errorf("handshake write hello: %w", err)
	}
	var reply [nonceLen + macLen]byte
	if _, err := io.ReadFull(conn, reply[:]); err != nil {
		// A server that rejects the version or is not ours hangs up.
		return fmt.Errorf("handshake read challenge: %w (%w)", err, ErrUnauthenticated)
	}
	sn := reply[:nonceLen]
	if !hmac.Equal(reply[nonceLen:], handshakeMAC(key, 'S', proto, cn, sn)) {
		return fmt.Errorf("handshake: server proof does not match: %w", ErrUnauthenticated)
	}
	if _, err := conn.Write(handshakeMAC(key, 'C', proto, cn, sn)); err != nil {
		return fmt.Errorf("handshake write proof: %w", err)
	}
	return nil
}

// serverHandshake authenticates an incoming connection and returns the
// protocol byte the client asked for.
func serverHandshake(conn net.Conn, key []byte) (byte, error) {
	var hello [2 + nonceLen]byte
	if _, err := io.ReadFull(conn, hello[:]); err != nil {
		return 0, fmt.Errorf("handshake read hello: %w", err)
	}
	proto, ver, cn := hello[0], hello[1], hello[2:]
	if proto != protoRaft && proto != protoRPC {
		return 0, fmt.Errorf("handshake: unknown protocol byte %#x", proto)
	}
	if ver != handshakeVersion {
		return 0, fmt.Errorf("handshake: unsupported version %d", ver)
	}
	var reply [nonceLen + macLen]byte
	sn := reply[:nonceLen]
	if _, err := rand.Read(sn); err != nil {
		return 0, fmt.Errorf("handshake nonce: %w", err)
	}
	copy(reply[nonceLen:], handshakeMAC(key, 'S', proto, cn, sn))
	if _, err := conn.Write(reply[:]); err != nil {
		return 0, fmt.Errorf("handshake write challenge: %w", err)
	}
	var proof [macLen]byte
	if _, err := io.ReadFull(conn, proof[:]); err != nil {
		return 0, fmt.Errorf("handshake read proof: %w", err)
	}
	if !hmac.Equal(proof[:], handshakeMAC(key, 'C', proto, cn, sn)) {
		return 0, fmt.Errorf("handshake: client proof does not match: %w", ErrUnauthenticated)
	}
	return proto, nil
}

// dialAuth dials addr and authenticates the connection for proto within
// timeout.
func dialAuth(addr string, key []byte, proto byte, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if err := clientHandshake(conn, key, proto); err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// mux owns the TCP listener and routes authenticated connections.
type mux struct {
	ln        net.Listener
	key       []byte
	log       *slog.Logger
	limit     *logLimiter
	raft      *streamLayer
	serveRPC  func(net.Conn)
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu      sync.Mutex
	pending map[net.Conn]struct{} // connections still in the handshake
}

func newMux(ln net.Listener, advertise net.Addr, key []byte, log *slog.Logger, limit *logLimiter, serveRPC func(net.Conn)) *mux {
	m := &mux{
		ln: ln, key: key, log: log, limit: limit, serveRPC: serveRPC,
		closing: make(chan struct{}),
		pending: make(map[net.Conn]struct{}),
	}
	m.raft = &streamLayer{mux: m, addr: advertise, accept: make(chan net.Conn), closed: make(chan struct{})}
	return m
}

func (m *mux) start() {
	m.wg.Add(1)
	go m.acceptLoop()
}

func (m *mux) acceptLoop() {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closing:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || !errors.Is(err, net.ErrClosed) {
				// Temporary failure (e.g. out of file descriptors): back off.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				m.log.Warn("accept internal connection", "err", err, "retry_in", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-m.closing:
					return
				}
			}
			return
		}
		backoff = 0
		m.mu.Lock()
		m.pending[conn] = struct{}{}
		m.mu.Unlock()
		m.wg.Add(1)
		go m.handle(conn)
	}
}

func (m *mux) handle(conn net.Conn) {
	defer m.wg.Done()
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	proto, err := serverHandshake(conn, m.key)
	m.mu.Lock()
	delete(m.pending, conn)
	m.mu.Unlock()
	if err != nil {
		if ok, dropped := m.limit.allow("rejected internal connection"); ok {
			m.log.Warn("rejected internal connection (wrong gossip key, or not a cluster node)",
				"remote", conn.RemoteAddr().String(), "err", err, "repeats_suppressed", dropped)
		}
		conn.Close()
		return
	}
	_ = conn.SetDeadline(time.Time{})
	switch proto {
	case protoRaft:
		select {
		case m.raft.accept <- conn:
		case <-m.raft.closed:
			conn.Close()
		case <-m.closing:
			conn.Close()
		}
	case protoRPC:
		m.serveRPC(conn)
	}
}

// close stops accepting, closes connections still in the handshake and
// waits for the handlers. RPC connections are closed by their server.
func (m *mux) close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.closing)
		err = m.ln.Close()
		m.mu.Lock()
		for c := range m.pending {
			c.Close()
		}
		m.mu.Unlock()
	})
	m.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// streamLayer is the raft.StreamLayer over the mux.
type streamLayer struct {
	mux       *mux
	addr      net.Addr
	accept    chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.accept:
		return c, nil
	case <-s.closed:
		return nil, net.ErrClosed
	case <-s.mux.closing:
		return nil, net.ErrClosed
	}
}

// Close stops handing connections to raft; the listener belongs to the mux.
func (s *streamLayer) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return nil
}

// Addr is the advertised address raft puts in its configuration.
func (s *streamLayer) Addr() net.Addr { return s.addr }

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return dialAuth(string(address), s.mux.key, protoRaft, timeout)
}

// advertiseAddr is a net.Addr whose String is the advertised host:port.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }
