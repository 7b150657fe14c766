package systemtest

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binaries built once for the whole package.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if testing.Short() {
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "surge-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binDir = dir
		for _, pkg := range []string{"node", "clusterctl"} {
			if _, err := os.Stat(filepath.Join("..", "cmd", pkg, "main.go")); err != nil {
				continue
			}
			cmd := exec.Command("go", "build", "-race", "-o", filepath.Join(dir, pkg), "./cmd/"+pkg)
			cmd.Dir = ".."
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n", pkg, err)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

func needBinaries(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("system test: builds and runs the real binaries; skipped under -short")
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1 that are also
// free for UDP (memberlist uses both).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	var hold []io.Closer
	defer func() {
		for _, c := range hold {
			c.Close()
		}
	}()
	for len(out) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			l.Close()
			continue
		}
		hold = append(hold, l, u)
		out = append(out, port)
	}
	return out
}

// proc is one node process.
type proc struct {
	t       *testing.T
	name    string
	dataDir string
	args    []string
	HTTP    string // base URL
	Gossip  string // host:port
	cmd     *exec.Cmd
	mu      sync.Mutex
	log     strings.Builder
	exited  chan struct{}
}

// newProc prepares a node with fresh ports and the given data dir.
func newProc(t *testing.T, name, dataDir string, extra ...string) *proc {
	t.Helper()
	ports := freePorts(t, 3)
	p := &proc{
		t:       t,
		name:    name,
		dataDir: dataDir,
		HTTP:    fmt.Sprintf("http://127.0.0.1:%d", ports[0]),
		Gossip:  fmt.Sprintf("127.0.0.1:%d", ports[1]),
	}
	p.args = append([]string{
		"--data-dir", dataDir,
		"--name", name,
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"--gossip-addr", p.Gossip,
		"--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"--rate-limit", "0",
		"--log-level", "debug",
	}, extra...)
	return p
}

var runningRE = regexp.MustCompile(`Surge is running at (http://\S+)`)

// start runs the process and waits until it prints that it is running.
func (p *proc) start() {
	p.t.Helper()
	p.cmd = exec.Command(filepath.Join(binDir, "node"), p.args...)
	p.cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1")
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	p.exited = make(chan struct{})
	up := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := runningRE.FindStringSubmatch(line); m != nil {
				select {
				case up <- m[1]:
				default:
				}
			}
		}
	}()
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()
	p.t.Cleanup(func() {
		p.kill()
		if p.t.Failed() {
			p.t.Logf("--- log of %s ---\n%s", p.name, p.logText())
		}
	})
	select {
	case <-up:
	case <-p.exited:
		p.t.Fatalf("%s exited during start: %s\n%s", p.name, p.cmd.ProcessState, p.logText())
	case <-time.After(60 * time.Second):
		p.t.Fatalf("%s did not start within 60s\n%s", p.name, p.logText())
	}
}

func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// kill sends SIGKILL and waits for the process to go.
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("%s did not stop within 30s after SIGTERM", p.name)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		p.t.Fatalf("%s exited with %d after SIGTERM\n%s", p.name, code, p.logText())
	}
}

// client does not follow redirects: the tests check every hop.
var client = &http.Client{
	Timeout: 15 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// waitReady polls /readyz until 200.
func waitReady(t *testing.T, base string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready within %s: %s", base, within, last)
}

type total struct {
	Currency    string `json:"currency"`
	RaisedMinor int64  `json:"raised_minor"`
	GoalMinor   int64  `json:"goal_minor"`
	Donations   int64  `json:"donations"`
}

func getTotal(t *testing.T, base string) total {
	t.Helper()
	var tot total
	getJSON(t, base+"/api/v1/total", &tot)
	return tot
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := client.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v in %s", u, err, b)
	}
}

type created struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
	CheckoutURL string `json:"checkout_url"`
}

// createDonation posts a donation and returns the 201 body, or an error
// for anything else (so callers under failure can count what failed).
func createDonation(ctx context.Context, base string, amount int64, key string) (created, error) {
	body := fmt.Sprintf(`{"amount_minor":%d,"currency":"EUR","name":"Ada","email":"ada@example.org","anonymous":false,"message":"hang in there"}`, amount)
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/api/v1/donations", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return created{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return created{}, fmt.Errorf("create: %d %s", resp.StatusCode, b)
	}
	var c created
	if err := json.Unmarshal(b, &c); err != nil {
		return created{}, fmt.Errorf("create: %v in %s", err, b)
	}
	return c, nil
}

// pay drives the dev gateway like a browser: open the hosted page, press
// Pay or Decline, follow the 303 to the return URL, and return where the
// return handler sends the donor.
func pay(ctx context.Context, checkoutURL, outcome string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", checkoutURL, nil)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("checkout page: %d", resp.StatusCode)
	}
	form := url.Values{"outcome": {outcome}}
	req, _ = http.NewRequestWithContext(ctx, "POST", checkoutURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = client.Do(req)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		return "", fmt.Errorf("gateway post: %d", resp.StatusCode)
	}
	ret, err := resp.Location()
	if err != nil {
		return "", err
	}
	req, _ = http.NewRequestWithContext(ctx, "GET", ret.String(), nil)
	resp, err = client.Do(req)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		return "", fmt.Errorf("return: %d", resp.StatusCode)
	}
	return resp.Header.Get("Location"), nil
}

type donationView struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
}

func getDonation(t *testing.T, base, id string) donationView {
	t.Helper()
	var d donationView
	getJSON(t, base+"/api/v1/donations/"+id, &d)
	return d
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("not within %s: %v", within, err)
}

func decodeJSON(r io.Reader, v any) error {
	return json.NewDecoder(r).Decode(v)
}
