package systemtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// adminStatus is the part of GET /admin/v1/status (design.md §7) the tests read.
type adminStatus struct {
	LeaderID string `json:"leader_id"`
	Members  []struct {
		ID           string `json:"id"`
		Name         string `json:"name"`
		Role         string `json:"role"`
		Gossip       string `json:"gossip"`
		HTTPAddr     string `json:"http_addr"`
		AppliedIndex uint64 `json:"applied_index"`
		RaisedMinor  int64  `json:"raised_minor"`
		Reachable    bool   `json:"reachable"`
	} `json:"members"`
}

func status(t *testing.T, base string) adminStatus {
	t.Helper()
	var s adminStatus
	getJSON(t, base+"/admin/v1/status", &s)
	return s
}

// startCluster starts n node processes with --bootstrap-expect n, each
// joining all the others, all at once.
func startCluster(t *testing.T, n int, extra ...string) []*proc {
	t.Helper()
	procs := make([]*proc, n)
	for i := range procs {
		procs[i] = newProc(t, fmt.Sprintf("n%d", i+1), t.TempDir())
	}
	for i, p := range procs {
		var join []string
		for j, q := range procs {
			if j != i {
				join = append(join, q.Gossip)
			}
		}
		p.args = append(p.args, append([]string{"--bootstrap-expect", fmt.Sprint(n), "--join", strings.Join(join, ",")}, extra...)...)
	}
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.start() }()
	}
	wg.Wait()
	for _, p := range procs {
		waitReady(t, p.HTTP, 60*time.Second)
	}
	return procs
}

// leaderOf returns the process whose node leads, as every live node sees it.
func leaderOf(t *testing.T, procs []*proc) *proc {
	t.Helper()
	var leader *proc
	eventually(t, 30*time.Second, func() error {
		var id string
		for _, p := range procs {
			s := status(t, p.HTTP)
			if s.LeaderID == "" || (id != "" && s.LeaderID != id) {
				return fmt.Errorf("leader ids disagree or empty: %q vs %q", id, s.LeaderID)
			}
			id = s.LeaderID
		}
		s := status(t, procs[0].HTTP)
		for _, m := range s.Members {
			if m.ID == id {
				for _, p := range procs {
					if strings.HasSuffix(p.HTTP, m.HTTPAddr) {
						leader = p
						return nil
					}
				}
			}
		}
		return fmt.Errorf("leader %s not among the processes", id)
	})
	return leader
}

// acked is one donation a client saw acknowledged.
type acked struct {
	id     string
	amount int64
	paid   bool // the return landed on /success after the notification committed
}

// donor creates and pays donations against base until ctx ends, retrying
// each request with the same idempotency key as a real client would.
func donor(ctx context.Context, base string, prefix string, out chan<- acked, failures *int64, mu *sync.Mutex) {
	for i := 0; ctx.Err() == nil; i++ {
		key := fmt.Sprintf("%s-%d", prefix, i)
		amount := int64(200 + i%7*100)
		var c created
		var err error
		for try := 0; try < 20 && ctx.Err() == nil; try++ {
			rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, err = createDonation(rctx, base, amount, key)
			cancel()
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			mu.Lock()
			*failures++
			mu.Unlock()
			continue
		}
		rctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		loc, err := pay(rctx, c.CheckoutURL, "succeeded")
		cancel()
		out <- acked{id: c.ID, amount: amount, paid: err == nil && strings.Contains(loc, "/success")}
	}
}

// TestClusterProcessesKillLeader runs three real node processes, sends
// donations to all of them, SIGKILLs the leader in the middle, restarts it
// on the same data dir, and checks that every acknowledged donation is on
// every node exactly once and that all nodes report the same total.
func TestClusterProcessesKillLeader(t *testing.T) {
	needBinaries(t)
	procs := startCluster(t, 3)
	leader := leaderOf(t, procs)

	ctx, cancel := context.WithCancel(context.Background())
	results := make(chan acked, 100000)
	var failures int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, p := range procs {
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				donor(ctx, p.HTTP, fmt.Sprintf("p%d-w%d", i, w), results, &failures, &mu)
			}()
		}
	}
	time.Sleep(2 * time.Second)

	// SIGKILL the leader and measure until a survivor acknowledges a write.
	killedAt := time.Now()
	leader.kill()
	var survivors []*proc
	for _, p := range procs {
		if p != leader {
			survivors = append(survivors, p)
		}
	}
	var recovered time.Duration
	eventually(t, 15*time.Second, func() error {
		rctx, c := context.WithTimeout(context.Background(), 2*time.Second)
		defer c()
		_, err := createDonation(rctx, survivors[0].HTTP, 200, fmt.Sprintf("probe-%d", time.Now().UnixNano()))
		if err == nil {
			recovered = time.Since(killedAt)
		}
		return err
	})
	t.Logf("first write acknowledged %s after SIGKILL of the leader", recovered)
	time.Sleep(2 * time.Second)

	// Bring the old leader back on the same data dir; it catches up by itself.
	back := newProc(t, leader.name+"-back", leader.dataDir, leader.args[len(leader.args)-4:]...)
	back.start()
	cancel()
	wg.Wait()
	close(results)
	var all []acked
	for a := range results {
		all = append(all, a)
	}
	if len(all) < 20 {
		t.Fatalf("only %d donations acknowledged (failures %d): the cluster did not take writes", len(all), failures)
	}
	nodes := append(survivors, back)
	for _, p := range nodes {
		waitReady(t, p.HTTP, 60*time.Second)
	}
	checkAgreement(t, nodes, all)
	t.Logf("%d donations acknowledged, %d client give-ups", len(all), failures)
}

// checkAgreement asserts that every node has every acknowledged donation,
// that paid ones succeeded, and that every total equals the sum of the
// succeeded donations (each counted once).
func checkAgreement(t *testing.T, nodes []*proc, all []acked) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		var want total
		for i, p := range nodes {
			var sum, count int64
			for _, a := range all {
				d, err := fetchDonation(p.HTTP, a.id)
				if err != nil {
					return fmt.Errorf("%s: donation %s: %w", p.name, a.id, err)
				}
				if a.paid && d.Status != "succeeded" {
					return fmt.Errorf("%s: paid donation %s is %s", p.name, a.id, d.Status)
				}
				if d.Status == "succeeded" {
					sum += d.AmountMinor
					count++
				}
			}
			tot := getTotal(t, p.HTTP)
			// Only the acknowledged donations were ever paid, so the total
			// must be exactly their sum: nothing lost, nothing twice.
			if tot.RaisedMinor != sum || tot.Donations != count {
				return fmt.Errorf("%s: total %+v, want the succeeded donations: %d in %d", p.name, tot, sum, count)
			}
			if i == 0 {
				want = tot
			} else if tot != want {
				return fmt.Errorf("%s reports %+v, %s reports %+v", p.name, tot, nodes[0].name, want)
			}
		}
		return nil
	})
}

func fetchDonation(base, id string) (donationView, error) {
	resp, err := client.Get(base + "/api/v1/donations/" + id)
	if err != nil {
		return donationView{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return donationView{}, errors.New(resp.Status)
	}
	var d donationView
	err = decodeJSON(resp.Body, &d)
	return d, err
}
