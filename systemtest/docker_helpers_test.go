package systemtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// This file holds the helpers of docker_test.go: a Docker Compose project
// run from the repository checkout, the containers' nodes as the host sees
// them, and a ledger of the donations the test's donors saw acknowledged.

// composeProject is one docker-compose project started from the repository
// root with its own project name, so it never touches a cluster started by
// `make cluster-up` (only the host ports are shared; see dockerPortsFree).
type composeProject struct {
	t       *testing.T
	name    string   // -p: prefixes containers, volumes and networks
	root    string   // repository root, where docker-compose.yml lives
	compose []string // "docker-compose" or "docker compose"
	env     []string
	token   string // SURGE_ADMIN_TOKEN given to every node

	// volumes are anonymous volumes of containers Compose removed before
	// down -v could (scaled-in extras); teardown removes them.
	volumes []string
}

// needDocker skips the test unless a Docker engine answers and a compose
// implementation and make are installed, and returns the compose command.
func needDocker(t *testing.T) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("docker system test: builds the image and runs a cluster in containers; skipped under -short")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker system test: no docker command on PATH; install Docker to run it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput()
	if err != nil {
		t.Skipf("docker system test: the Docker daemon does not answer (%v): %s", err, dockerFirstLine(out))
	}
	var compose []string
	if _, err := exec.LookPath("docker-compose"); err == nil {
		compose = []string{"docker-compose"}
	} else if err := exec.CommandContext(ctx, "docker", "compose", "version").Run(); err == nil {
		compose = []string{"docker", "compose"}
	} else {
		t.Skip("docker system test: neither docker-compose nor the docker compose plugin is installed")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("docker system test: make is not installed (the image is built with `make image`)")
	}
	return compose
}

// dockerPortsFree fails the test when a host port the compose file
// publishes is taken: the nodes' --public-url names these ports, so the
// test cannot move them.
func dockerPortsFree(t *testing.T, ports ...int) {
	t.Helper()
	for _, p := range ports {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("host port %d is busy (%v): the docker test publishes node1..node3 on 127.0.0.1:8081-8083 "+
				"as docker-compose.yml does; stop what holds it (a cluster from `make cluster-up`? run `make cluster-down`)", p, err)
		}
		l.Close()
	}
}

func newComposeProject(t *testing.T, compose []string) *composeProject {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	tok := make([]byte, 16)
	rand.Read(key)
	rand.Read(tok)
	p := &composeProject{
		t:       t,
		name:    fmt.Sprintf("surgetest%d%s", os.Getpid(), hex.EncodeToString(tok[:3])),
		root:    root,
		compose: compose,
		token:   hex.EncodeToString(tok),
	}
	// The defaults of docker-compose.yml, pinned so that the caller's
	// environment cannot move them, plus a gossip key and an admin token:
	// internal traffic is authenticated and the host may read /admin/.
	p.env = append(os.Environ(),
		"SURGE_IMAGE=surge:latest",
		"SURGE_PUBLISH_HOST=127.0.0.1",
		"SURGE_NODE1_PORT=8081", "SURGE_NODE2_PORT=8082", "SURGE_NODE3_PORT=8083",
		"SURGE_RATE_LIMIT=0",
		"SURGE_GOSSIP_KEY="+base64.StdEncoding.EncodeToString(key),
		"SURGE_ADMIN_TOKEN="+p.token,
		"SURGE_LOG_LEVEL=debug",
		"COMPOSE_PROJECT_NAME="+p.name,
	)
	t.Cleanup(p.teardown)
	return p
}

// run runs a command in the repository root with the project's environment
// and returns its combined output.
func (p *composeProject) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = p.root
	cmd.Env = p.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// must runs a command and fails the test if it fails.
func (p *composeProject) must(timeout time.Duration, name string, args ...string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := p.run(ctx, name, args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

// composeArgs prefixes args with the compose command, file and project.
func (p *composeProject) composeArgs(args ...string) (string, []string) {
	all := append(append([]string{}, p.compose[1:]...), "-f", "docker-compose.yml", "-p", p.name)
	return p.compose[0], append(all, args...)
}

func (p *composeProject) composeMust(timeout time.Duration, args ...string) string {
	p.t.Helper()
	name, all := p.composeArgs(args...)
	return p.must(timeout, name, all...)
}

func (p *composeProject) dockerMust(args ...string) string {
	p.t.Helper()
	return strings.TrimSpace(p.must(60*time.Second, "docker", args...))
}

// clusterNet is the name Compose gives the file's "cluster" network.
func (p *composeProject) clusterNet() string { return p.name + "_cluster" }

// teardown saves the logs when the test failed, then removes everything the
// project created: containers, networks and volumes (down -v).
func (p *composeProject) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if p.t.Failed() {
		name, all := p.composeArgs("logs", "--no-color", "--timestamps")
		if out, err := p.run(ctx, name, all...); err == nil || out != "" {
			f := filepath.Join(os.TempDir(), p.name+".log")
			if werr := os.WriteFile(f, []byte(out), 0o644); werr == nil {
				p.t.Logf("container logs saved in %s; last lines:\n%s", f, dockerLastLines(out, 120))
			}
		}
	}
	name, all := p.composeArgs("down", "-v", "--remove-orphans", "-t", "10")
	if _, err := p.run(ctx, name, all...); err != nil {
		p.t.Errorf("tear down: %v", err)
	}
	// The network the partition step makes, in case the test stopped
	// before it removed it (down has disconnected its containers).
	p.run(ctx, "docker", "network", "rm", p.name+"_sidedoor")
	for _, v := range p.volumes {
		if _, err := p.run(ctx, "docker", "volume", "rm", v); err != nil {
			p.t.Errorf("remove volume of a scaled-in container: %v", err)
		}
	}
}

// keepVolumes notes the anonymous volumes of n's container for teardown.
func (p *composeProject) keepVolumes(n *dockerNode) {
	p.t.Helper()
	out := p.dockerMust("inspect", "-f", `{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}`, n.container)
	p.volumes = append(p.volumes, strings.Fields(out)...)
}

// dockerNode is one node container as the host reaches it.
type dockerNode struct {
	service   string // node1, node2, node3 or extra
	container string // container ID
	hostname  string // also the node's --name (node1..3) or default name (extras)
	url       string // base URL through the published port
}

func (n *dockerNode) String() string { return n.hostname + "(" + n.service + ")" }

// node looks up the index-th container of service (1-based) and its
// published HTTP port.
func (p *composeProject) node(service string, index int) *dockerNode {
	p.t.Helper()
	ids := strings.Fields(p.composeMust(time.Minute, "ps", "-q", service))
	if len(ids) < index {
		p.t.Fatalf("service %s has %d containers, want at least %d", service, len(ids), index)
	}
	addr := strings.TrimSpace(p.composeMust(time.Minute, "port", fmt.Sprintf("--index=%d", index), service, "8080"))
	if _, _, err := net.SplitHostPort(addr); err != nil {
		p.t.Fatalf("port of %s #%d: %q", service, index, addr)
	}
	// ps lists containers in no particular order; find the one whose
	// published port is addr.
	for _, id := range ids {
		out := p.dockerMust("inspect", "-f", `{{.Config.Hostname}} {{range $p, $b := .NetworkSettings.Ports}}{{range $b}}{{.HostIp}}:{{.HostPort}} {{end}}{{end}}`, id)
		f := strings.Fields(out)
		for _, a := range f[1:] {
			if a == addr {
				return &dockerNode{service: service, container: id, hostname: f[0], url: "http://" + addr}
			}
		}
	}
	p.t.Fatalf("no container of %s publishes %s", service, addr)
	return nil
}

// ipOn returns the container's address on network net, or "".
func (p *composeProject) ipOn(n *dockerNode, network string) string {
	p.t.Helper()
	return p.dockerMust("inspect", "-f", fmt.Sprintf(`{{with index .NetworkSettings.Networks %q}}{{.IPAddress}}{{end}}`, network), n.container)
}

// dockerStatus is the part of GET /admin/v1/status the docker test reads.
type dockerStatus struct {
	LeaderID string `json:"leader_id"`
	Members  []struct {
		ID     string `json:"id"`
		Name   string `json:"name"`
		Role   string `json:"role"`
		Gossip string `json:"gossip"`
	} `json:"members"`
}

// adminStatus asks a node's admin API from the host, with the bearer token.
func (p *composeProject) adminStatus(ctx context.Context, n *dockerNode) (dockerStatus, error) {
	var s dockerStatus
	req, err := http.NewRequestWithContext(ctx, "GET", n.url+"/admin/v1/status", nil)
	if err != nil {
		return s, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := client.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("admin status from %s: %d %s", n, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("admin status from %s: %v in %s", n, err, b)
	}
	return s, nil
}

// leader returns the node that leads, as all of the given nodes agree.
func (p *composeProject) leader(nodes []*dockerNode) *dockerNode {
	p.t.Helper()
	var leader *dockerNode
	eventually(p.t, 60*time.Second, func() error {
		var id, name string
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s, err := p.adminStatus(ctx, n)
			cancel()
			if err != nil {
				return err
			}
			if s.LeaderID == "" || (id != "" && s.LeaderID != id) {
				return fmt.Errorf("nodes disagree on the leader or have none: %q vs %q (from %s)", id, s.LeaderID, n)
			}
			id = s.LeaderID
			for _, m := range s.Members {
				if m.ID == id {
					name = m.Name
				}
			}
		}
		for _, n := range nodes {
			if n.hostname == name {
				leader = n
				return nil
			}
		}
		return fmt.Errorf("leader %s (%q) is none of the nodes %v", id, name, nodes)
	})
	return leader
}

// dockerCreate posts a donation and returns the body and the status code
// (0 when no answer came). A replay of the same Idempotency-Key may answer
// 200 or 201 with the same donation.
func dockerCreate(ctx context.Context, base string, amount int64, key string) (created, int, error) {
	body := fmt.Sprintf(`{"amount_minor":%d,"currency":"EUR","name":"Ada","email":"ada@example.org"}`, amount)
	req, err := http.NewRequestWithContext(ctx, "POST", base+"/api/v1/donations", strings.NewReader(body))
	if err != nil {
		return created{}, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := client.Do(req)
	if err != nil {
		return created{}, 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return created{}, resp.StatusCode, fmt.Errorf("create via %s: %d %s", base, resp.StatusCode, bytes.TrimSpace(b))
	}
	var c created
	if err := json.Unmarshal(b, &c); err != nil || c.ID == "" || c.CheckoutURL == "" {
		return created{}, resp.StatusCode, fmt.Errorf("create via %s: %d with body %s", base, resp.StatusCode, b)
	}
	return c, resp.StatusCode, nil
}

// dockerGetStatus returns the status code of GET u, or an error without answer.
func dockerGetStatus(ctx context.Context, u string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// dockerWaitReady polls /readyz of every node until all answer 200.
func dockerWaitReady(t *testing.T, within time.Duration, nodes ...*dockerNode) {
	t.Helper()
	eventually(t, within, func() error {
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			code, err := dockerGetStatus(ctx, n.url+"/readyz")
			cancel()
			if err != nil {
				return fmt.Errorf("%s /readyz: %w", n, err)
			}
			if code != http.StatusOK {
				return fmt.Errorf("%s /readyz: %d", n, code)
			}
		}
		return nil
	})
}

func dockerTotal(ctx context.Context, base string) (total, error) {
	var tot total
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/total", nil)
	if err != nil {
		return tot, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return tot, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return tot, fmt.Errorf("total from %s: %s", base, resp.Status)
	}
	return tot, decodeJSON(resp.Body, &tot)
}

// dockerDonation is one donation a donor of the test created: it got a 2xx
// with its ID. paid means the donor's payment was acknowledged: the
// gateway's return sent it to /success, which happens only after the
// signed notification committed.
type dockerDonation struct {
	id     string
	amount int64
	via    string // service the donor talked to
	paid   bool
	began  time.Time // when the donor sent its first request for it
	ackAt  time.Time // when the payment was acknowledged
}

// dockerLedger collects what the donors saw, from many goroutines.
type dockerLedger struct {
	mu   sync.Mutex
	all  []*dockerDonation
	ids  map[string]*dockerDonation
	errs []error // requests refused with a 4xx
}

func newDockerLedger() *dockerLedger {
	return &dockerLedger{ids: map[string]*dockerDonation{}}
}

func (l *dockerLedger) created(id string, amount int64, via string, began time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.ids[id]; ok {
		return
	}
	d := &dockerDonation{id: id, amount: amount, via: via, began: began}
	l.ids[id] = d
	l.all = append(l.all, d)
}

func (l *dockerLedger) markPaid(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d, ok := l.ids[id]; ok && !d.paid {
		d.paid, d.ackAt = true, time.Now()
	}
}

// snapshot copies the ledger's entries.
func (l *dockerLedger) snapshot() []dockerDonation {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]dockerDonation, len(l.all))
	for i, d := range l.all {
		out[i] = *d
	}
	return out
}

// paidAfter counts the donations begun after t through the given services
// whose payment was acknowledged, and returns the earliest of those
// acknowledgements. Donations already under way at t do not count: a
// recovery time measured from them would be too short.
func (l *dockerLedger) paidAfter(t time.Time, via ...string) (int, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, first := 0, time.Time{}
	for _, d := range l.all {
		if !d.paid || !d.began.After(t) {
			continue
		}
		for _, v := range via {
			if d.via == v {
				n++
				if first.IsZero() || d.ackAt.Before(first) {
					first = d.ackAt
				}
			}
		}
	}
	return n, first
}

// donate creates one donation through n and pays it through the dev
// gateway like a browser, retrying each step with the same Idempotency-Key
// (as a real client would) until it is acknowledged or ctx ends.
func (l *dockerLedger) donate(ctx context.Context, n *dockerNode, key string, amount int64) error {
	var c created
	var err error
	began := time.Now()
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var code int
		c, code, err = dockerCreate(rctx, n.url, amount, key)
		cancel()
		if err == nil {
			break
		}
		if code >= 400 && code < 500 && code != http.StatusTooManyRequests {
			// A client mistake: retrying the same request cannot help.
			return fmt.Errorf("create %s: %w: %w", key, errRefused, err)
		}
		if !dockerPause(ctx, 200*time.Millisecond) {
			return fmt.Errorf("create %s: %w", key, err)
		}
	}
	if c.AmountMinor != 0 && c.AmountMinor != amount {
		return fmt.Errorf("create %s: amount %d, asked %d", key, c.AmountMinor, amount)
	}
	l.created(c.ID, amount, n.service, began)
	for {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		var loc string
		loc, err = pay(rctx, c.CheckoutURL, "succeeded")
		cancel()
		if err == nil && strings.Contains(loc, "/success") {
			l.markPaid(c.ID)
			return nil
		}
		if err == nil {
			err = fmt.Errorf("the return sent the donor to %s", loc)
		}
		if !dockerPause(ctx, 200*time.Millisecond) {
			return fmt.Errorf("pay %s: %w", c.ID, err)
		}
	}
}

// errRefused marks a donation a node refused with a 4xx: a bug in the test
// or in the node, never a fault to ride out.
var errRefused = errors.New("refused")

// donor donates through n until ctx ends. It stops at the first 4xx and
// records it; see refused.
func (l *dockerLedger) donor(ctx context.Context, n *dockerNode, prefix string) {
	for i := 0; ctx.Err() == nil; i++ {
		// The campaign's default minimum is 2.00 EUR.
		err := l.donate(ctx, n, fmt.Sprintf("%s-%d", prefix, i), int64(500+(i%7)*100))
		if errors.Is(err, errRefused) {
			l.mu.Lock()
			l.errs = append(l.errs, fmt.Errorf("donor through %s: %w", n, err))
			l.mu.Unlock()
			return
		}
		dockerPause(ctx, 50*time.Millisecond)
	}
}

// refused returns what the donors' requests were refused with.
func (l *dockerLedger) refused() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Join(l.errs...)
}

// donors runs one donor per node until the returned stop is called; stop
// waits for them.
func (l *dockerLedger) donors(prefix string, nodes ...*dockerNode) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.donor(ctx, n, prefix+"-"+n.hostname)
		}()
	}
	return func() { cancel(); wg.Wait() }
}

// dockerPause waits d or until ctx ends; it reports whether ctx is still live.
func dockerPause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// dockerAgreement checks that every node holds every donation of the ledger, that
// each paid one succeeded, and that every node's total is exactly the sum
// of the ledger's succeeded donations, each counted once. The cluster is
// fresh and only the test's donors wrote to it, so a donation counted twice
// or lost shows up as a total that differs from that sum.
func dockerAgreement(ctx context.Context, nodes []*dockerNode, ds []dockerDonation) error {
	var want total
	for i, n := range nodes {
		var sum, count int64
		for _, d := range ds {
			v, err := fetchDonation(n.url, d.id)
			if err != nil {
				return fmt.Errorf("%s: donation %s (via %s): %w", n, d.id, d.via, err)
			}
			if v.AmountMinor != d.amount {
				return fmt.Errorf("%s: donation %s has amount %d, created with %d", n, d.id, v.AmountMinor, d.amount)
			}
			if d.paid && v.Status != "succeeded" {
				return fmt.Errorf("%s: donation %s was acknowledged as paid but is %s", n, d.id, v.Status)
			}
			if v.Status == "succeeded" {
				sum += v.AmountMinor
				count++
			}
		}
		tot, err := dockerTotal(ctx, n.url)
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		if tot.RaisedMinor != sum || tot.Donations != count {
			return fmt.Errorf("%s: total %d in %d donations, want the succeeded donations: %d in %d", n, tot.RaisedMinor, tot.Donations, sum, count)
		}
		if i == 0 {
			want = tot
		} else if tot != want {
			return fmt.Errorf("%s reports %+v, %s reports %+v", n, tot, nodes[0], want)
		}
	}
	return nil
}

// dockerSummary describes a ledger: donations, how many were paid, their sum.
func dockerSummary(ds []dockerDonation) string {
	paid, sum := 0, int64(0)
	via := map[string]int{}
	for _, d := range ds {
		if d.paid {
			paid++
			sum += d.amount
			via[d.via]++
		}
	}
	keys := make([]string, 0, len(via))
	for k := range via {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, via[k]))
	}
	return fmt.Sprintf("%d created, %d paid (%s), %d.%02d EUR", len(ds), paid, strings.Join(parts, ", "), sum/100, sum%100)
}

func dockerFirstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func dockerLastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
