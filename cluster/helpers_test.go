package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// testFSM keeps a set of unique keys and a counter, and deduplicates by key
// like the real FSM: a command is its key. It skips entries at or below its
// applied index, as a persistent FSM does on replay.
type testFSM struct {
	mu       sync.Mutex
	restores int
	keys     map[string]int // key -> times applied (must stay 1)
	count    int
	applied  uint64
	// block, when set before the first "block:" command is proposed, holds
	// the apply of every "block:" command until it is closed.
	block chan struct{}
}

func newTestFSM() *testFSM { return &testFSM{keys: map[string]int{}} }

func (f *testFSM) Apply(l *raft.Log) any {
	if f.block != nil && strings.HasPrefix(string(l.Data), "block:") {
		<-f.block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if l.Index <= f.applied {
		return nil
	}
	f.applied = l.Index
	if l.Type != raft.LogCommand {
		return nil
	}
	k := string(l.Data)
	if strings.HasPrefix(k, "fail:") {
		return fmt.Errorf("refused %q", k)
	}
	if _, ok := f.keys[k]; ok {
		return []byte("dup:" + k)
	}
	f.keys[k] = 1
	f.count++
	return []byte(fmt.Sprintf("ok:%s:%d", k, f.count))
}

type testSnapshot struct {
	Keys    []string `json:"keys"`
	Count   int      `json:"count"`
	Applied uint64   `json:"applied"`
}

func (f *testFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &testSnapshot{Count: f.count, Applied: f.applied}
	for k := range f.keys {
		s.Keys = append(s.Keys, k)
	}
	sort.Strings(s.Keys)
	return s, nil
}

func (s *testSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *testSnapshot) Release() {}

func (f *testFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var s testSnapshot
	if err := json.NewDecoder(rc).Decode(&s); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restores++
	f.keys = map[string]int{}
	for _, k := range s.Keys {
		f.keys[k] = 1
	}
	f.count, f.applied = s.Count, s.Applied
	return nil
}

func (f *testFSM) AppliedIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

func (f *testFSM) has(k string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.keys[k] == 1
}

func (f *testFSM) restoreCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restores
}

// check verifies the FSM counted every key exactly once.
func (f *testFSM) check() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.count != len(f.keys) {
		return fmt.Errorf("count %d != %d distinct keys", f.count, len(f.keys))
	}
	for k, n := range f.keys {
		if n != 1 {
			return fmt.Errorf("key %s applied %d times", k, n)
		}
	}
	return nil
}

func (f *testFSM) size() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count
}

// testNode is one cluster node with its stores, so it can be restarted.
type testNode struct {
	t      *testing.T
	cfg    Config
	fsm    *testFSM
	logs   *raft.InmemStore
	snaps  raft.SnapshotStore
	c      *Cluster
	logBuf *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogs collects all nodes' logs of one test and prints them if it fails
// (or always with SURGE_TEST_LOG=1).
func testLogs(t *testing.T) *syncBuffer {
	t.Helper()
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("SURGE_TEST_LOG") != "" {
			out := buf.String()
			if len(out) > 200_000 {
				out = "...\n" + out[len(out)-200_000:]
			}
			t.Logf("cluster logs:\n%s", out)
		}
	})
	return buf
}

// testConfig returns a config with fast timings for 127.0.0.1.
func testConfig(name string) Config {
	cfg := DefaultConfig()
	cfg.NodeID = uuid.NewString()
	cfg.Name = name
	cfg.GossipAddr = "127.0.0.1:0"
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.AdvertiseHost = "127.0.0.1"
	cfg.HTTPAddr = "127.0.0.1:8080"
	cfg.HoldTimeout = 5 * time.Second
	cfg.ReconcileInterval = 200 * time.Millisecond
	cfg.RejoinInterval = time.Second
	cfg.StabilizationTime = 300 * time.Millisecond
	cfg.DeadNodeTimeout = time.Minute
	cfg.HeartbeatTimeout = 250 * time.Millisecond
	cfg.ElectionTimeout = 250 * time.Millisecond
	cfg.LeaderLeaseTimeout = 150 * time.Millisecond
	cfg.CommitTimeout = 10 * time.Millisecond
	cfg.ProbeInterval = 200 * time.Millisecond
	cfg.ProbeTimeout = 100 * time.Millisecond
	cfg.SuspicionMult = 2
	cfg.GossipInterval = 50 * time.Millisecond
	cfg.PushPullInterval = time.Second
	cfg.DeadNodeReclaimTime = time.Second
	cfg.Version = "test"
	return cfg
}

func newTestNode(t *testing.T, logs *syncBuffer, cfg Config) *testNode {
	t.Helper()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(t.TempDir(), 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{t: t, cfg: cfg, fsm: newTestFSM(), logs: raft.NewInmemStore(), snaps: snaps, logBuf: logs}
	return n
}

// start creates and starts the Cluster on the node's stores.
func (n *testNode) start() {
	n.t.Helper()
	cfg := n.cfg
	lvl := slog.LevelInfo
	if os.Getenv("SURGE_TEST_LOG") == "debug" {
		lvl = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(n.logBuf, &slog.HandlerOptions{Level: lvl})).With("node", cfg.Name)
	c, err := New(cfg, n.fsm, n.logs, n.logs, n.snaps)
	if err != nil {
		n.t.Fatalf("new %s: %v", cfg.Name, err)
	}
	if err := c.Start(context.Background()); err != nil {
		n.t.Fatalf("start %s: %v", cfg.Name, err)
	}
	n.c = c
	n.t.Cleanup(func() { _ = c.Close() })
}

func (n *testNode) id() string { return n.cfg.NodeID }

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s: %v", d, what, err)
}

func applyCtx(t *testing.T, c *Cluster, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := c.Apply(ctx, []byte(key))
	if err != nil {
		t.Fatalf("apply %q: %v", key, err)
	}
	return out
}
