package cluster

import (
	"context"
	"fmt"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// benchCluster starts n nodes with the production Raft timings (the
// defaults) and fast gossip, and returns the leader.
func benchCluster(b *testing.B, n int) (*testCluster, *testNode) {
	b.Helper()
	tc := &testCluster{logs: &syncBuffer{}}
	d := DefaultConfig()
	prod := func(c *Config) {
		c.HeartbeatTimeout, c.ElectionTimeout = d.HeartbeatTimeout, d.ElectionTimeout
		c.LeaderLeaseTimeout, c.CommitTimeout = d.LeaderLeaseTimeout, d.CommitTimeout
		c.MaxAppendEntries = d.MaxAppendEntries
	}
	start := func(name string, mutate func(*Config)) *testNode {
		cfg := testConfig(name)
		prod(&cfg)
		if mutate != nil {
			mutate(&cfg)
		}
		node := &testNode{cfg: cfg, fsm: newTestFSM(), logBuf: tc.logs}
		node.logs = raft.NewInmemStore()
		node.snaps = raft.NewInmemSnapshotStore()
		c, err := New(cfg, node.fsm, node.logs, node.logs, node.snaps)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		node.c = c
		tc.nodes = append(tc.nodes, node)
		return node
	}
	first := start("b1", nil)
	for i := 2; i <= n; i++ {
		start(fmt.Sprintf("b%d", i), func(c *Config) { c.Join = []string{first.c.GossipAddr()} })
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, nv := configOf(first)
		if len(v) == min(n, 3) && len(v)+len(nv) == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("cluster did not form: %v %v", v, nv)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return tc, first
}

func closeAll(tc *testCluster) {
	for _, n := range tc.nodes {
		_ = n.c.kill()
	}
}

// BenchmarkFailover measures, with the production Raft timings, the time
// from killing the leader abruptly to the first acknowledged write that a
// survivor started after the kill. Reported as ms/failover (median and
// max over b.N kills). Run with -benchtime=10x.
func BenchmarkFailover(b *testing.B) {
	var samples []time.Duration
	for b.Loop() {
		b.StopTimer()
		tc, leader := benchCluster(b, 3)
		var survivor *testNode
		for _, n := range tc.nodes {
			if n != leader {
				survivor = n
			}
		}
		applyBench(b, survivor.c, "warm")
		b.StartTimer()
		killed := time.Now()
		_ = leader.c.kill()
		for i := 0; ; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := survivor.c.Apply(ctx, []byte(fmt.Sprintf("after-%d", i)))
			cancel()
			if err == nil {
				break
			}
		}
		samples = append(samples, time.Since(killed))
		b.StopTimer()
		closeAll(tc)
		b.StartTimer()
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(samples[len(samples)-1].Microseconds())/1000, "max-ms")
}

func applyBench(b *testing.B, c *Cluster, key string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Apply(ctx, []byte(key)); err != nil {
		b.Fatalf("apply: %v", err)
	}
}

// BenchmarkApply measures concurrent writes (64 goroutines) on the leader
// and forwarded from a follower, over in-memory stores (no fsync: this is
// the cluster's own overhead, not the disk's).
func BenchmarkApply(b *testing.B) {
	for _, where := range []string{"leader", "follower"} {
		b.Run(where, func(b *testing.B) {
			tc, leader := benchCluster(b, 3)
			defer closeAll(tc)
			target := leader
			if where == "follower" {
				for _, n := range tc.nodes {
					if n != leader {
						target = n
					}
				}
			}
			applyBench(b, target.c, "warm")
			term := leader.c.raft.CurrentTerm()
			defer func() {
				// Spurious elections under load show up as term changes.
				b.ReportMetric(float64(leader.c.raft.CurrentTerm()-term), "elections")
			}()
			var seq atomic.Int64
			b.SetParallelism(32) // 32 x GOMAXPROCS writers
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k := fmt.Sprintf("k%d", seq.Add(1))
					if _, err := target.c.Apply(context.Background(), []byte(k)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
