package main

import (
	"bytes"
	"context"
	"net"
	"runtime/trace"
	"strings"
	"testing"
	"time"

	"github.com/surgefund/surge/node"
)

func TestStalls(t *testing.T) {
	r := runResult{Clients: 4, Slow: map[int]int{0: 2, 1: 1, 5: 4, 9: 3}}
	windows, slow := r.stalls()
	if windows != 3 || slow != 10 {
		t.Fatalf("stalls() = %d windows, %d slow; want 3 (windows 0, 5, 9: at least half of 4 clients), 10", windows, slow)
	}
}

// TestClosedLoopCountsSlowOps runs 4 clients for 300 ms. Each client's
// first operation takes 3 × slowOp and every other one 1 ms, so all four
// slow ones start in the first window, a stall. (A loaded machine may make
// some 1-ms operations slow too, so the other windows are not checked.)
func TestClosedLoopCountsSlowOps(t *testing.T) {
	r := closedLoop(context.Background(), 4, 300*time.Millisecond, func(ctx context.Context, worker, seq int) error {
		d := time.Millisecond
		if seq == 0 {
			d = 3 * slowOp
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
		return nil
	})
	windows, slow := r.stalls()
	if r.Slow[0] < 4 || windows < 1 || slow < 4 {
		t.Fatalf("got %d slow operations in %v (%d stalls); want the 4 first ones in window 0", slow, r.Slow, windows)
	}
	if len(r.Lat) < 40 {
		t.Fatalf("only %d operations in 300 ms", len(r.Lat))
	}
}

func TestGoKind(t *testing.T) {
	for _, c := range []struct {
		frames []string
		want   string
	}{
		{[]string{"runtime.gopark", "github.com/dgraph-io/badger/v4.(*levelsController).runCompactor"}, "compaction"},
		{[]string{"github.com/dgraph-io/badger/v4.(*DB).flushMemtable", "github.com/dgraph-io/badger/v4.Open.func5"}, "flush"},
		{[]string{"github.com/hashicorp/raft.(*Raft).runFSM", "github.com/hashicorp/raft.(*raftState).goFunc.func1"}, "raft"},
		{[]string{"main.closedLoop.func1"}, "callers"},
		{[]string{"net/http.(*conn).serve"}, "other"},
	} {
		if got := goKind(c.frames); got != c.want {
			t.Errorf("goKind(%q) = %q, want %q", c.frames, got, c.want)
		}
	}
}

// TestReadTraceWindows traces 2 callers spinning for 300 ms and checks
// that tracewin attributes their CPU to "callers", window by window.
func TestReadTraceWindows(t *testing.T) {
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Skipf("execution tracing unavailable: %v", err)
	}
	r := closedLoop(context.Background(), 2, 300*time.Millisecond, func(ctx context.Context, worker, seq int) error {
		for end := time.Now().Add(time.Millisecond); time.Now().Before(end); {
		}
		return nil
	})
	trace.Stop()
	tw, err := readTraceWindows(&buf, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var callers, all float64
	for _, m := range tw.cpu {
		for k, v := range m {
			all += v
			if k == "callers" {
				callers += v
			}
		}
	}
	if len(tw.cpu) < 3 || callers < 100 || callers < all/2 {
		t.Fatalf("%d windows, callers ran %.0f ms of %.0f ms (%d operations); want ≥ 3 windows and most of the CPU in callers", len(tw.cpu), callers, all, len(r.Lat))
	}
}

// TestInprocBusyPortIsRecognised: a node that cannot bind its port fails
// with the text startFreshInproc retries on, and a fresh start succeeds.
func TestInprocBusyPortIsRecognised(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	dir := t.TempDir()
	cfgs, err := inprocConfigs(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	cfgs[0].Join = nil
	busy, err := net.Listen("tcp", cfgs[0].GossipAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if c, err := startInproc(ctx, dir, cfgs); err == nil {
		c.close()
		t.Fatal("a node started on a port another listener holds")
	} else if !portTakenIn(err.Error()) {
		t.Fatalf("busy port: %v; startFreshInproc would not retry it", err)
	}
	c, err := startFreshInproc(ctx, dir, 1, func(cfgs []node.Config) { cfgs[0].Join = nil })
	if err != nil {
		t.Fatalf("fresh start after the failed one: %v", err)
	}
	c.close()
}

// TestProcClusterRetriesATakenPort: a node process that cannot bind its
// port (another program took it after freePorts released it) exits; the
// cluster start notices it in the node's log and starts the node again,
// wiped, on new ports.
func TestProcClusterRetriesATakenPort(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts a node process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, err := buildNode(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := newProcCluster(dir, bin, 1)
	if err != nil {
		t.Fatal(err)
	}
	taken := c.procs[0].http // bound last, after the node has bootstrapped: the retry must wipe that
	busy, err := net.Listen("tcp", taken)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var out bytes.Buffer
	if err := c.startFresh(ctx, &progress{w: &out}); err != nil {
		t.Fatalf("start: %v\n%s", err, out.String())
	}
	defer c.close()
	if !strings.Contains(out.String(), "starting again on new ports") {
		t.Fatalf("the node started on a taken port without a retry:\n%s", out.String())
	}
	if c.procs[0].http == taken {
		t.Fatal("the retry kept the taken port")
	}
	if err := waitReady(ctx, c.procs[0].base(), 30*time.Second, true); err != nil {
		t.Fatal(err)
	}
}
