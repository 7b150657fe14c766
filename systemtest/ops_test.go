package systemtest

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// ctlResult is one run of the clusterctl binary.
type ctlResult struct {
	code           int
	stdout, stderr string
}

// clusterctl runs the built clusterctl against base with no terminal
// attached (so it never prompts: destructive commands need --yes).
func clusterctl(t *testing.T, base, token string, args ...string) ctlResult {
	t.Helper()
	bin := filepath.Join(binDir, "clusterctl")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("clusterctl binary: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "SURGE_ADDR="+base, "SURGE_TOKEN="+token, "GORACE=halt_on_error=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("clusterctl %v: %v", args, err)
	}
	return ctlResult{code: code, stdout: out.String(), stderr: errb.String()}
}

// fullStatus is GET /admin/v1/status as clusterctl status --json prints it.
type fullStatus struct {
	NodeID           string   `json:"node_id"`
	LeaderID         string   `json:"leader_id"`
	Verdict          string   `json:"verdict"`
	FailureTolerance int      `json:"failure_tolerance"`
	Problems         []string `json:"problems"`
	Members          []struct {
		ID          string `json:"id"`
		Name        string `json:"name"`
		Role        string `json:"role"`
		Gossip      string `json:"gossip"`
		HTTPAddr    string `json:"http_addr"`
		RaisedMinor int64  `json:"raised_minor"`
		Reachable   bool   `json:"reachable"`
	} `json:"members"`
}

func ctlStatus(t *testing.T, base, token string) (fullStatus, int) {
	t.Helper()
	r := clusterctl(t, base, token, "status", "--json")
	var s fullStatus
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("clusterctl status --json (exit %d): %v\nstdout %s\nstderr %s", r.code, err, r.stdout, r.stderr)
	}
	return s, r.code
}

// exportIDs runs clusterctl export and returns donation id -> status.
func exportIDs(t *testing.T, base, token string) map[string]string {
	t.Helper()
	r := clusterctl(t, base, token, "export", "-")
	if r.code != 0 {
		t.Fatalf("clusterctl export: exit %d: %s", r.code, r.stderr)
	}
	rows, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	if err != nil || len(rows) == 0 || rows[0][0] != "id" {
		t.Fatalf("export is not the CSV expected (%v): %q", err, r.stdout)
	}
	out := map[string]string{}
	for _, row := range rows[1:] {
		if _, dup := out[row[0]]; dup {
			t.Fatalf("export lists donation %s twice", row[0])
		}
		out[row[0]] = row[2]
	}
	return out
}

// TestOperatorSurface drives the admin API through the real clusterctl
// against real node processes: status agrees on every node; a SIGKILLed
// node shows up dead and the verdict degraded; the dead node is removed;
// leadership is transferred; export lists every donation once; a snapshot
// restored into a fresh node gives the same total; a wrong or missing
// token gets 401.
func TestOperatorSurface(t *testing.T) {
	needBinaries(t)
	ctx := context.Background()
	procs := startCluster(t, 3)
	leader := leaderOf(t, procs)

	// Status from every node: the same members, one leader, healthy.
	eventually(t, 30*time.Second, func() error {
		var ids []string
		for _, p := range procs {
			s, code := ctlStatus(t, p.HTTP, "")
			var got []string
			leaders := 0
			for _, m := range s.Members {
				got = append(got, m.ID)
				if m.Role == "leader" {
					leaders++
				}
				if !m.Reachable || m.Gossip != "alive" {
					return fmt.Errorf("%s sees %s as %s, reachable %v", p.name, m.Name, m.Gossip, m.Reachable)
				}
			}
			slices.Sort(got)
			if s.Verdict != "healthy" || code != 0 || leaders != 1 || len(got) != 3 || s.FailureTolerance != 1 {
				return fmt.Errorf("%s: verdict %s (exit %d), %d leaders, members %v, tolerance %d, problems %q",
					p.name, s.Verdict, code, leaders, got, s.FailureTolerance, s.Problems)
			}
			if ids != nil && !slices.Equal(ids, got) {
				return fmt.Errorf("%s sees members %v, others %v", p.name, got, ids)
			}
			ids = got
		}
		return nil
	})
	r := clusterctl(t, procs[0].HTTP, "", "status")
	if r.code != 0 || !strings.Contains(r.stdout, "cluster healthy: leader ") || !strings.Contains(r.stdout, "3 voters, tolerates 1 failure") {
		t.Fatalf("status table (exit %d):\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Donations through every node; four of six paid.
	var ids []string
	paid := map[string]bool{}
	var want int64
	for i := range 6 {
		p := procs[i%3]
		c, err := createDonation(ctx, p.HTTP, int64(1000+100*i), fmt.Sprintf("ops-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.ID)
		if i < 4 {
			if _, err := pay(ctx, c.CheckoutURL, "succeeded"); err != nil {
				t.Fatal(err)
			}
			paid[c.ID] = true
			want += c.AmountMinor
		}
	}
	var follower *proc
	for _, p := range procs {
		if p != leader {
			follower = p
		}
	}
	eventually(t, 10*time.Second, func() error {
		if tot := getTotal(t, follower.HTTP); tot.RaisedMinor != want {
			return fmt.Errorf("total on %s is %d, want %d", follower.name, tot.RaisedMinor, want)
		}
		return nil
	})

	// Export from a follower lists every donation once, with its status.
	exported := exportIDs(t, follower.HTTP, "")
	if len(exported) != len(ids) {
		t.Fatalf("export has %d donations, want %d: %v", len(exported), len(ids), exported)
	}
	for _, id := range ids {
		wantStatus := "pending"
		if paid[id] {
			wantStatus = "succeeded"
		}
		if exported[id] != wantStatus {
			t.Fatalf("export: donation %s is %q, want %s", id, exported[id], wantStatus)
		}
	}

	// Snapshot of the state for the restore below.
	snap := filepath.Join(t.TempDir(), "cluster.snapshot")
	if r := clusterctl(t, follower.HTTP, "", "snapshot", "save", snap); r.code != 0 {
		t.Fatalf("snapshot save: exit %d: %s", r.code, r.stderr)
	}

	// SIGKILL the follower: the leader's status shows it not alive and the
	// cluster degraded (exit 1).
	var victimID string
	s, _ := ctlStatus(t, leader.HTTP, "")
	for _, m := range s.Members {
		if strings.HasSuffix(follower.HTTP, m.HTTPAddr) {
			victimID = m.ID
		}
	}
	killed := time.Now()
	follower.kill()
	var unreachableAfter, deadAfter time.Duration
	eventually(t, 60*time.Second, func() error {
		s, code := ctlStatus(t, leader.HTTP, "")
		for _, m := range s.Members {
			if m.ID != victimID {
				continue
			}
			if !m.Reachable && unreachableAfter == 0 {
				unreachableAfter = time.Since(killed)
			}
			if m.Gossip == "alive" {
				return fmt.Errorf("killed node still alive in gossip (reachable %v)", m.Reachable)
			}
			if s.Verdict != "degraded" || code != 1 || s.FailureTolerance != 0 {
				return fmt.Errorf("verdict %s (exit %d, tolerance %d) with a dead voter", s.Verdict, code, s.FailureTolerance)
			}
			deadAfter = time.Since(killed)
			return nil
		}
		return fmt.Errorf("killed node %s not listed", victimID)
	})
	t.Logf("SIGKILLed node: unreachable in status after %s, dead in gossip after %s", unreachableAfter, deadAfter)

	// Remove it by its short ID, as an operator reads it off the table.
	if r := clusterctl(t, leader.HTTP, "", "remove", victimID[:8]); r.code != 2 || !strings.Contains(r.stderr, "--yes") {
		t.Fatalf("remove without a terminal or --yes: exit %d: %s", r.code, r.stderr)
	}
	if r := clusterctl(t, leader.HTTP, "", "remove", victimID[:8], "--yes"); r.code != 0 {
		t.Fatalf("remove: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	var survivors []*proc
	for _, p := range procs {
		if p != follower {
			survivors = append(survivors, p)
		}
	}
	eventually(t, 30*time.Second, func() error {
		r := clusterctl(t, leader.HTTP, "", "peers", "--json")
		if strings.Contains(r.stdout, victimID) {
			return errors.New("removed node still in the Raft configuration")
		}
		s, code := ctlStatus(t, leader.HTTP, "")
		if s.Verdict != "healthy" || code != 0 {
			return fmt.Errorf("verdict %s (exit %d) after the removal: %q", s.Verdict, code, s.Problems)
		}
		return nil
	})

	// Transfer leadership to the other survivor, asked through it.
	var other *proc
	for _, p := range survivors {
		if p != leader {
			other = p
		}
	}
	var otherID string
	s, _ = ctlStatus(t, other.HTTP, "")
	otherID = s.NodeID
	if r := clusterctl(t, other.HTTP, "", "transfer-leader", otherID); r.code != 0 || !strings.Contains(r.stdout, "the leader is now") {
		t.Fatalf("transfer-leader: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	eventually(t, 10*time.Second, func() error {
		for _, p := range survivors {
			if s, _ := ctlStatus(t, p.HTTP, ""); s.LeaderID != otherID {
				return fmt.Errorf("%s names leader %s, want %s", p.name, s.LeaderID, otherID)
			}
		}
		return nil
	})

	// A fresh node with an admin token: wrong or missing token gets 401.
	const token = "ops-system-test-token-0123456789"
	fresh := newProc(t, "fresh", t.TempDir(), "--admin-token", token)
	fresh.start()
	waitReady(t, fresh.HTTP, 30*time.Second)
	for _, tok := range []string{"", "wrong-token-wrong-token"} {
		req, _ := http.NewRequest("GET", fresh.HTTP+"/admin/v1/status", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status with token %q: %d, want 401", tok, resp.StatusCode)
		}
		if r := clusterctl(t, fresh.HTTP, tok, "status"); r.code != 2 || !strings.Contains(r.stderr, "401") {
			t.Fatalf("clusterctl with token %q: exit %d: %s", tok, r.code, r.stderr)
		}
	}

	// Restore the snapshot into the fresh node: same total, same donations,
	// and it keeps taking writes.
	if r := clusterctl(t, fresh.HTTP, token, "snapshot", "restore", snap, "--yes"); r.code != 0 {
		t.Fatalf("snapshot restore: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if tot := getTotal(t, fresh.HTTP); tot.RaisedMinor != want || tot.Donations != int64(len(paid)) {
		t.Fatalf("total after restore %+v, want %d in %d donations", tot, want, len(paid))
	}
	if got := exportIDs(t, fresh.HTTP, token); len(got) != len(ids) {
		t.Fatalf("restored node exports %d donations, want %d", len(got), len(ids))
	}
	c, err := createDonation(ctx, fresh.HTTP, 700, "after-restore")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pay(ctx, c.CheckoutURL, "succeeded"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if tot := getTotal(t, fresh.HTTP); tot.RaisedMinor != want+700 {
			return fmt.Errorf("total %d after a new donation, want %d", tot.RaisedMinor, want+700)
		}
		return nil
	})

	// The restored state survives a restart (SIGTERM, same data dir).
	fresh.stop()
	again := newProc(t, "fresh-again", fresh.dataDir, "--admin-token", token)
	again.start()
	waitReady(t, again.HTTP, 30*time.Second)
	if tot := getTotal(t, again.HTTP); tot.RaisedMinor != want+700 {
		t.Fatalf("total after restart %d, want %d", tot.RaisedMinor, want+700)
	}
}

// TestMetricsEndpoint checks that GET /metrics serves the node's families
// (behind the admin check: loopback here) and that a request moves them.
func TestMetricsEndpoint(t *testing.T) {
	needBinaries(t)
	n := newProc(t, "metrics", t.TempDir())
	n.start()
	waitReady(t, n.HTTP, 30*time.Second)
	scrape := func() string {
		resp, err := client.Get(n.HTTP + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b.String())
		}
		return b.String()
	}
	before := scrape()
	for _, fam := range []string{"surge_raft_state{state=\"leader\"} 1", "surge_raft_term", "surge_raft_commit_index",
		"surge_gossip_members{state=\"alive\"} 1", "surge_badger_size_bytes{db=\"fsm\"", "go_goroutines"} {
		if !strings.Contains(before, fam) {
			t.Errorf("/metrics lacks %s", fam)
		}
	}
	getTotal(t, n.HTTP)
	after := scrape()
	line := `surge_http_requests_total{code="200",method="GET",route="/api/v1/total"}`
	if strings.Contains(before, line+" 1") || !strings.Contains(after, line+" 1") {
		t.Fatalf("the request counter did not move:\n%s", grepLines(after, "surge_http_requests_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestRSSLimit starts a node process with --rss-limit: the start log names
// the limit and the Go memory limit derived from it, /metrics reports the
// limit and the pager's counters, and a limit below the minimum stops the
// node with a configuration error (exit 2) before it opens anything. The
// page-out itself is tested on real mappings in storage
// (TestPagerPagesOutTablesUnderItsDir) and measured at 1 M donations in
// BENCHMARKS.md §0d.
func TestRSSLimit(t *testing.T) {
	needBinaries(t)
	n := newProc(t, "rss", t.TempDir(), "--rss-limit", "96MiB")
	n.start()
	waitReady(t, n.HTTP, 30*time.Second)
	logText := n.logText()
	for _, want := range []string{"rss_limit=96MiB", "source=rss-limit", "memory_limit=64MiB"} {
		if !strings.Contains(logText, want) {
			t.Errorf("start log lacks %q:\n%s", want, logText)
		}
	}
	resp, err := client.Get(n.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b.String())
	}
	metrics := b.String()
	if !strings.Contains(metrics, "surge_rss_limit_bytes 1.00663296e+08") {
		t.Errorf("/metrics lacks the limit:\n%s", grepLines(metrics, "surge_rss"))
	}
	for _, fam := range []string{"surge_pager_rounds_total ", "surge_pager_advised_bytes_total "} {
		if !strings.Contains(metrics, fam) {
			t.Errorf("/metrics lacks %s:\n%s", fam, grepLines(metrics, "surge_pager"))
		}
	}

	dir := t.TempDir()
	cmd := exec.Command(filepath.Join(binDir, "node"), "--data-dir", filepath.Join(dir, "data"), "--rss-limit", "16MiB",
		"--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "rss-limit: 16MiB is below") {
		t.Fatalf("--rss-limit 16MiB: %v, want exit 2 naming the flag:\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Errorf("the refused node created its data dir (%v)", err)
	}
}
