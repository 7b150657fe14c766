package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// TestGossipKeyRequired: a node without the key, or with another key,
// cannot join a keyed cluster; a node with the key can.
func TestGossipKeyRequired(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	key := bytes.Repeat([]byte{7}, 32)
	other := bytes.Repeat([]byte{9}, 16)
	tc := newTestCluster(t)
	a := tc.add("keyed", func(c *Config) { c.GossipKey = key })
	waitFor(t, 5*time.Second, "keyed node ready", a.c.Ready)

	intruders := []*testNode{
		tc.add("nokey", func(c *Config) { c.Join = []string{a.c.GossipAddr()} }),
		tc.add("wrongkey", func(c *Config) { c.GossipKey = other; c.Join = []string{a.c.GossipAddr()} }),
	}
	friend := tc.add("friend", func(c *Config) { c.GossipKey = key; c.Join = []string{a.c.GossipAddr()} })
	tc.waitConfig(10*time.Second, "friend added", func(v, nv []string) error {
		if len(v)+len(nv) != 2 {
			return fmt.Errorf("voters %v non-voters %v", v, nv)
		}
		return nil
	})
	time.Sleep(time.Second) // the intruders' join retries run meanwhile
	v, nv := configOf(a)
	if len(v)+len(nv) != 2 {
		t.Fatalf("configuration grew beyond the keyed nodes: voters %v non-voters %v", v, nv)
	}
	for _, m := range a.c.Members() {
		for _, in := range intruders {
			if m.ID == in.id() {
				t.Fatalf("intruder %s is a member: %+v", in.cfg.Name, m)
			}
		}
	}
	for _, in := range intruders {
		if _, id := in.c.raft.LeaderWithID(); id != "" {
			t.Fatalf("intruder %s knows leader %s", in.cfg.Name, id)
		}
	}
	applyCtx(t, friend.c, "friendly")
}

// TestInternalAuth: the Raft/RPC port refuses connections that fail the
// handshake, whatever the protocol byte.
func TestInternalAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	tc := newTestCluster(t)
	key := bytes.Repeat([]byte{1}, 16)
	a := tc.add("a", func(c *Config) { c.GossipKey = key })
	waitFor(t, 5*time.Second, "ready", a.c.Ready)

	for _, tt := range []struct {
		name  string
		key   []byte
		proto byte
		ok    bool
	}{
		{"rpc right key", key, protoRPC, true},
		{"raft right key", key, protoRaft, true},
		{"rpc no key", nil, protoRPC, false},
		{"raft wrong key", bytes.Repeat([]byte{2}, 16), protoRaft, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := dialAuth(a.c.RaftAddr(), deriveAuthKey(tt.key), tt.proto, time.Second)
			if tt.ok {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				conn.Close()
				return
			}
			if err == nil {
				conn.Close()
				t.Fatal("handshake with the wrong key succeeded")
			}
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("err = %v, want ErrUnauthenticated", err)
			}
		})
	}

	// A client with the wrong key cannot ask for status; one with the right
	// key can.
	bad := newRPCClient(deriveAuthKey(nil), a.c.log)
	defer bad.close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := bad.call(ctx, a.c.RaftAddr(), mStatus, nil); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("status with the wrong key = %v, want ErrUnauthenticated", err)
	}
	good := newRPCClient(deriveAuthKey(key), a.c.log)
	defer good.close()
	if _, err := good.call(ctx, a.c.RaftAddr(), mStatus, nil); err != nil {
		t.Fatalf("status with the right key: %v", err)
	}

	// Garbage instead of a handshake is dropped without harming the node.
	conn, err := net.Dial("tcp", a.c.RaftAddr())
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("node answered garbage with %q", buf[:n])
	}
	conn.Close()
	applyCtx(t, a.c, "still-fine")
}
