package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func TestConfigValidate(t *testing.T) {
	base := testConfig("v")
	for _, tt := range []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error; "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"default with id and host", func(c *Config) { d := DefaultConfig(); d.NodeID, d.AdvertiseHost = "x", "10.0.0.1"; *c = d }, ""},
		{"no node id", func(c *Config) { c.NodeID = "" }, "node id"},
		{"bad gossip addr", func(c *Config) { c.GossipAddr = "nope" }, "gossip addr"},
		{"bad raft port", func(c *Config) { c.RaftAddr = "127.0.0.1:99999" }, "raft addr"},
		{"unspecified advertise", func(c *Config) { c.AdvertiseHost = "0.0.0.0" }, "advertise host"},
		{"no advertise", func(c *Config) { c.AdvertiseHost = "" }, "advertise host"},
		{"bad join", func(c *Config) { c.Join = []string{"host-without-port"} }, "join"},
		{"even voters", func(c *Config) { c.Voters = 4 }, "voters"},
		{"too many voters", func(c *Config) { c.Voters = 7 }, "voters"},
		{"negative expect", func(c *Config) { c.BootstrapExpect = -1 }, "bootstrap expect"},
		{"bad key length", func(c *Config) { c.GossipKey = []byte("short") }, "gossip key"},
		{"lease above heartbeat", func(c *Config) { c.LeaderLeaseTimeout = time.Second }, "leader lease"},
		{"election below heartbeat", func(c *Config) { c.ElectionTimeout = 10 * time.Millisecond }, "election timeout"},
		{"zero hold", func(c *Config) { c.HoldTimeout = 0 }, "hold timeout"},
		{"max append", func(c *Config) { c.MaxAppendEntries = 5000 }, "max append"},
		{"huge name", func(c *Config) { c.Name = strings.Repeat("n", 129) }, "name"},
		{"meta too big", func(c *Config) { c.Name = strings.Repeat("n", 128); c.Version = strings.Repeat("v", 400) }, "gossip metadata"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mutate(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	store := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	if _, err := New(Config{}, newTestFSM(), store, store, snaps); err == nil {
		t.Fatal("New with an empty config succeeded")
	}
	if _, err := New(testConfig("x"), nil, store, store, snaps); err == nil {
		t.Fatal("New without an FSM succeeded")
	}
	c, err := New(testConfig("x"), newTestFSM(), store, store, snaps)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(context.Background(), []byte("k")); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("apply before start = %v, want ErrNotStarted", err)
	}
	if err := c.Ready(); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("ready before start = %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("close before start: %v", err)
	}
	if err := c.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("start after close = %v, want ErrClosed", err)
	}
}

func TestHandshake(t *testing.T) {
	for _, tt := range []struct {
		name       string
		client     []byte
		server     []byte
		proto      byte
		wantClient error
	}{
		{"same key rpc", []byte("k"), []byte("k"), protoRPC, nil},
		{"same key raft", nil, nil, protoRaft, nil},
		{"different keys", []byte("a"), []byte("b"), protoRPC, ErrUnauthenticated},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, s := net.Pipe()
			defer c.Close()
			defer s.Close()
			type res struct {
				proto byte
				err   error
			}
			done := make(chan res, 1)
			go func() {
				p, err := serverHandshake(s, deriveAuthKey(tt.server))
				if err != nil {
					s.Close()
				}
				done <- res{p, err}
			}()
			err := clientHandshake(c, deriveAuthKey(tt.client), tt.proto)
			if tt.wantClient == nil {
				if err != nil {
					t.Fatalf("client: %v", err)
				}
				r := <-done
				if r.err != nil || r.proto != tt.proto {
					t.Fatalf("server = %v, %v", r.proto, r.err)
				}
				return
			}
			if !errors.Is(err, tt.wantClient) {
				t.Fatalf("client err = %v, want %v", err, tt.wantClient)
			}
			c.Close()
			if r := <-done; r.err == nil {
				t.Fatal("server accepted a client that never proved itself")
			}
		})
	}
}

func TestServerRejectsBadHello(t *testing.T) {
	for _, hello := range [][]byte{
		append([]byte{'X', handshakeVersion}, make([]byte, nonceLen)...),
		append([]byte{protoRPC, 99}, make([]byte, nonceLen)...),
		{protoRPC},
	} {
		c, s := net.Pipe()
		go func() { c.Write(hello); c.Close() }()
		if _, err := serverHandshake(s, deriveAuthKey(nil)); err == nil {
			t.Fatalf("hello %x accepted", hello)
		}
		s.Close()
	}
}

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	payloads := [][]byte{nil, []byte("x"), bytes.Repeat([]byte("y"), 70000)}
	for i, p := range payloads {
		if err := writeFrame(w, uint64(i+1), byte(i), p); err != nil {
			t.Fatal(err)
		}
	}
	r := bufio.NewReader(&buf)
	for i, p := range payloads {
		id, kind, got, err := readFrame(r)
		if err != nil || id != uint64(i+1) || kind != byte(i) || !bytes.Equal(got, p) {
			t.Fatalf("frame %d = %d %d %d bytes %v", i, id, kind, len(got), err)
		}
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 2})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReader(bytes.NewReader(b))
		for {
			if _, _, _, err := readFrame(r); err != nil {
				return
			}
		}
	})
}

func FuzzDecodeMeta(f *testing.F) {
	good, _ := meta{Name: "n", Raft: "127.0.0.1:7947", Expect: 3}.encode()
	f.Add(good)
	f.Add([]byte("{"))
	f.Add([]byte(`{"r":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err == nil && m.Raft == "" {
			t.Fatal("accepted metadata without a raft address")
		}
	})
}

func TestMetaFitsLimit(t *testing.T) {
	m := meta{Name: strings.Repeat("n", 128), Raft: "some-long-host-name.example.internal:65535", HTTP: "some-long-host-name.example.internal:65535", Expect: 9, Version: "v1.2.3-rc.4+build.567", State: true, Leaving: true}
	b, err := m.encode()
	if err != nil || len(b) > 512 {
		t.Fatalf("meta = %d bytes, %v", len(b), err)
	}
	got, err := decodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("round trip = %+v, %v", got, err)
	}
}

func TestRetryable(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{ErrNotLeader, true},
		{raft.ErrLeadershipLost, true},
		{&rpcError{code: codeLeadershipLost}, true},
		{&rpcError{code: codeNotLeader}, true},
		{&rpcError{code: codeClosed}, true},
		{errConnLost, true},
		{&net.OpError{Op: "dial", Err: errors.New("refused")}, true},
		{&rpcError{code: codeFSM}, false},
		{ErrTooLarge, false},
		{&rpcError{code: codeError, msg: "boom"}, false},
		{fmt.Errorf("forward apply to x: %w", ErrTimeout), false},
		{fmt.Errorf("apply: %w", raft.ErrEnqueueTimeout), true},
	} {
		if got := retryable(tt.err); got != tt.want {
			t.Errorf("retryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestLogAdapter(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := newHCLog(l, "raft", newLogLimiter(time.Hour))
	h.Info("entering follower state", "term", 3)
	h.Trace("dropped")
	h.Warn("failed to contact", "server-id", "a")
	h.Warn("failed to contact", "server-id", "a") // suppressed
	h.Warn("failed to contact", "server-id", "b")
	h.Named("sub").With("k", "v").Error("boom")
	out := buf.String()
	for _, want := range []string{
		`level=DEBUG msg="entering follower state" component=raft term=3`,
		`level=WARN msg="failed to contact" component=raft server-id=a`,
		`server-id=b`,
		`level=ERROR msg=boom component=raft sub=sub k=v`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "dropped") || strings.Count(out, "server-id=a") != 1 {
		t.Errorf("trace or repeat not dropped:\n%s", out)
	}
	var _ hclog.Logger = h

	buf.Reset()
	std := newStdLogger(l, "memberlist", nil)
	std.Printf("[DEBUG] memberlist: Stream connection from=1.2.3.4")
	std.Printf("[ERR] memberlist: Failed to send")
	std.Printf("no level")
	out = buf.String()
	for _, want := range []string{
		`level=DEBUG msg="Stream connection from=1.2.3.4" component=memberlist`,
		`level=ERROR msg="Failed to send"`,
		`level=INFO msg="no level"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

func TestQuorum(t *testing.T) {
	for n, want := range map[int]int{1: 1, 2: 2, 3: 2, 4: 3, 5: 3} {
		if got := quorum(n); got != want {
			t.Errorf("quorum(%d) = %d, want %d", n, got, want)
		}
	}
}
