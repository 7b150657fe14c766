package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/surgefund/surge/web"
)

// devSecret is the dev gateway secret every benchmark node shares, so the
// harness can sign notifications with payment.Sign.
const devSecret = "surge-bench-dev-secret-0123456789"

// freePorts returns n distinct free ports on 127.0.0.1, free for both TCP
// and UDP (memberlist uses both). They are released before returning, so a
// race with another program is possible but unlikely.
func freePorts(n int) ([]int, error) {
	var out []int
	var hold []io.Closer
	defer func() {
		for _, c := range hold {
			c.Close()
		}
	}()
	for tries := 0; len(out) < n; tries++ {
		if tries > 100*n {
			return nil, errors.New("free ports: none found")
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free ports: %w", err)
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
	return out, nil
}

// repoRoot finds the directory of Surge's go.mod, from the working
// directory upwards.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/surgefund/surge\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository root: no go.mod of github.com/surgefund/surge above the working directory (use --node-bin)")
		}
		dir = parent
	}
}

// buildNode compiles cmd/node into dir and returns the binary's path.
func buildNode(ctx context.Context, dir string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "node")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/node")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build node: %w\n%s", err, b)
	}
	return out, nil
}

// proc is one node process.
type proc struct {
	name    string
	bin     string
	dataDir string
	http    string // host:port
	gossip  string
	raft    string
	args    []string // extra flags (join, bootstrap-expect, ...)
	logPath string
	cgroup  string   // when set, a memory cgroup dir the process runs in from its first instruction
	env     []string // extra environment (KEY=value)

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	leader   bool      // logged "gained leadership" and not "lost leadership" since
	gains    int       // "gained leadership" lines, over all starts
	lastGain time.Time // when the last one was seen
}

func (p *proc) base() string { return "http://" + p.http }

// nodeID reads the node's persistent UUID from its data dir.
func (p *proc) nodeID() string {
	b, err := os.ReadFile(filepath.Join(p.dataDir, "node-id"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

var runningRE = regexp.MustCompile(`Surge is running at `)

// start launches the process and waits until it says it is running.
func (p *proc) start(ctx context.Context) error {
	p.mu.Lock()
	args := append([]string{
		"--data-dir", p.dataDir,
		"--name", p.name,
		"--http-addr", p.http,
		"--gossip-addr", p.gossip,
		"--raft-addr", p.raft,
		"--advertise", "127.0.0.1",
		"--rate-limit", "0",
		"--dev-secret", devSecret,
		"--log-level", "info",
	}, p.args...)
	cmd := exec.Command(p.bin, args...)
	if p.cgroup != "" {
		// The shell enters the cgroup, then becomes the node (same pid), so
		// every page the node touches is charged to its cgroup.
		cmd = exec.Command("/bin/sh", append([]string{"-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, p.cgroup, p.bin}, args...)...)
	}
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		p.mu.Unlock()
		return err
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.mu.Unlock()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd = cmd
	p.exited = make(chan struct{})
	p.leader = false
	exited := p.exited
	p.mu.Unlock()

	up := make(chan struct{}, 1)
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			p.observe(line)
			if runningRE.MatchString(line) {
				select {
				case up <- struct{}{}:
				default:
				}
			}
		}
		cmd.Wait()
		close(exited)
	}()
	select {
	case <-up:
		return nil
	case <-exited:
		return fmt.Errorf("%s exited during start (log %s)", p.name, p.logPath)
	case <-ctx.Done():
		p.kill()
		return ctx.Err()
	case <-time.After(60 * time.Second):
		p.kill()
		return fmt.Errorf("%s did not start within 60s (log %s)", p.name, p.logPath)
	}
}

// observe follows leadership in the node's log: the fallback to find the
// leader when the admin API cannot, and the count of leader changes.
func (p *proc) observe(line string) {
	switch {
	case strings.Contains(line, `msg="gained leadership"`):
		p.mu.Lock()
		p.leader = true
		p.gains++
		p.lastGain = time.Now()
		p.mu.Unlock()
	case strings.Contains(line, `msg="lost leadership"`):
		p.mu.Lock()
		p.leader = false
		p.mu.Unlock()
	}
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	cmd.Process.Signal(sig)
	<-exited
	p.mu.Lock()
	p.leader = false
	p.mu.Unlock()
}

// kill sends SIGKILL and waits until the process is gone.
func (p *proc) kill() { p.signal(syscall.SIGKILL) }

// stop sends SIGTERM (graceful stop) and waits.
func (p *proc) stop() { p.signal(syscall.SIGTERM) }

// procCluster is a set of node processes on 127.0.0.1.
type procCluster struct {
	dir   string
	bin   string
	procs []*proc
}

// startProcCluster starts n node processes of bin under dir that form one
// cluster with --bootstrap-expect n, and waits until all are ready.
// freePorts releases the ports it finds before the nodes bind them, so
// another program (a test running in parallel) can take one in between:
// when a node says so in its log, every node's data and log are removed and
// the cluster starts again on new ports, up to startAttempts times.
func startProcCluster(ctx context.Context, dir, bin string, n int, log *progress) (*procCluster, error) {
	c, err := newProcCluster(dir, bin, n)
	if err != nil {
		return nil, err
	}
	if err := c.startFresh(ctx, log); err != nil {
		return nil, err
	}
	return c, nil
}

// startFresh starts the nodes of a new cluster (see startProcCluster). On
// an error every node is stopped.
func (c *procCluster) startFresh(ctx context.Context, log *progress) error {
	for attempt := 1; ; attempt++ {
		log.printf("starting %d node processes in %s", len(c.procs), c.dir)
		err := c.start(ctx)
		if err == nil {
			return nil
		}
		c.close()
		if attempt == startAttempts || !slices.ContainsFunc(c.procs, (*proc).portTaken) {
			return err
		}
		log.printf("a port was taken before a node bound it (%v); starting again on new ports", err)
		for _, p := range c.procs {
			if err := p.reset(); err != nil {
				return err
			}
		}
		c.setJoinArgs()
	}
}

// newProcCluster prepares n nodes that form one cluster with
// --bootstrap-expect n; start launches them.
func newProcCluster(dir, bin string, n int) (*procCluster, error) {
	c := &procCluster{dir: dir, bin: bin}
	for i := range n {
		p, err := c.newProc(fmt.Sprintf("n%d", i+1))
		if err != nil {
			return nil, err
		}
		c.procs = append(c.procs, p)
	}
	c.setJoinArgs()
	return c, nil
}

// setJoinArgs gives every node --bootstrap-expect and the gossip addresses
// of all.
func (c *procCluster) setJoinArgs() {
	var gossips []string
	for _, p := range c.procs {
		gossips = append(gossips, p.gossip)
	}
	for _, p := range c.procs {
		p.args = []string{"--bootstrap-expect", fmt.Sprint(len(c.procs)), "--join", strings.Join(gossips, ",")}
	}
}

// newProc prepares a node with fresh ports and its own data dir.
func (c *procCluster) newProc(name string) (*proc, error) {
	p := &proc{
		name:    name,
		bin:     c.bin,
		dataDir: filepath.Join(c.dir, name),
		logPath: filepath.Join(c.dir, name+".log"),
	}
	return p, p.newPorts()
}

// newPorts gives p free ports.
func (p *proc) newPorts() error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	p.http = fmt.Sprintf("127.0.0.1:%d", ports[0])
	p.gossip = fmt.Sprintf("127.0.0.1:%d", ports[1])
	p.raft = fmt.Sprintf("127.0.0.1:%d", ports[2])
	return nil
}

// startAttempts bounds the starts of fresh nodes on new ports when one of
// theirs was taken (freePorts releases the ports before the nodes bind them).
const startAttempts = 3

// portTakenIn reports whether an error or a node's log says that a port
// could not be bound because another program holds it.
func portTakenIn(s string) bool { return strings.Contains(s, "address already in use") }

// portTaken reports whether p's log says it could not bind a port.
func (p *proc) portTaken() bool {
	b, err := os.ReadFile(p.logPath)
	return err == nil && portTakenIn(string(b))
}

// reset makes p a fresh node again after a failed first start: its data
// dir and log are removed and it gets new ports. Only for nodes that never
// ran: whatever they stored goes.
func (p *proc) reset() error {
	if err := os.RemoveAll(p.dataDir); err != nil {
		return err
	}
	if err := os.Remove(p.logPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return p.newPorts()
}

// startFresh starts p, a node that has never run, and retries on new
// ports (see startProcCluster) when one of its ports was taken.
func (p *proc) startFresh(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := p.start(ctx)
		if err == nil || attempt == startAttempts || !p.portTaken() {
			return err
		}
		if err := p.reset(); err != nil {
			return err
		}
	}
}

func (c *procCluster) start(ctx context.Context) error {
	errs := make(chan error, len(c.procs))
	for _, p := range c.procs {
		go func() { errs <- p.start(ctx) }()
	}
	var all []error
	for range c.procs {
		all = append(all, <-errs)
	}
	if err := errors.Join(all...); err != nil {
		return err
	}
	return c.waitReady(ctx, 90*time.Second)
}

// waitReady polls /readyz on every running node until all answer 200.
func (c *procCluster) waitReady(ctx context.Context, limit time.Duration) error {
	for _, p := range c.procs {
		if !p.running() {
			continue
		}
		if err := waitReady(ctx, p.base(), limit, false); err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}
	return nil
}

// close kills every node (SIGTERM first, so leadership moves cleanly).
func (c *procCluster) close() {
	var wg sync.WaitGroup
	for _, p := range c.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan struct{})
			go func() { p.stop(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				p.kill()
			}
		}()
	}
	wg.Wait()
}

func (c *procCluster) bases() []string {
	var out []string
	for _, p := range c.procs {
		out = append(out, p.base())
	}
	return out
}

// gains counts "gained leadership" over all nodes so far.
func (c *procCluster) gains() int {
	n := 0
	for _, p := range c.procs {
		p.mu.Lock()
		n += p.gains
		p.mu.Unlock()
	}
	return n
}

var pollClient = &http.Client{Timeout: 2 * time.Second}

// waitReady polls base/readyz (with ?sync when sync) until it answers 200.
func waitReady(ctx context.Context, base string, limit time.Duration, sync bool) error {
	u := base + "/readyz"
	if sync {
		u += "?sync&timeout=2s"
	}
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := pollClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("not ready within %s: %s", limit, last)
}

// adminStatus asks base for GET /admin/v1/status with the admin API's
// own client (no token: the node answers loopback callers).
func adminStatus(ctx context.Context, base string) (web.ClusterStatus, error) {
	c, err := web.NewClient(base, "", web.WithHTTPClient(pollClient))
	if err != nil {
		return web.ClusterStatus{}, err
	}
	return c.Status(ctx)
}

// leader finds the leader among the running nodes: from the admin API
// (leader_id, matched with the node ids in the data dirs, or http_addr),
// or, when no node answered it, from the "gained leadership" lines of the
// logs. how says which.
func (c *procCluster) leader(ctx context.Context) (p *proc, how string, err error) {
	sawAdmin := false
	for _, q := range c.procs {
		if !q.running() {
			continue
		}
		s, err := adminStatus(ctx, q.base())
		if err != nil {
			continue
		}
		sawAdmin = true
		if s.LeaderID == "" {
			continue
		}
		for _, r := range c.procs {
			if r.nodeID() == s.LeaderID && r.running() {
				return r, "admin", nil
			}
		}
		for _, m := range s.Members {
			if m.ID != s.LeaderID {
				continue
			}
			for _, r := range c.procs {
				if r.http == m.HTTPAddr && r.running() {
					return r, "admin", nil
				}
			}
		}
	}
	if sawAdmin {
		return nil, "admin", errors.New("no leader in admin status")
	}
	var best *proc
	for _, q := range c.procs {
		q.mu.Lock()
		ok := q.leader && q.lastGain.After(bestGain(best))
		q.mu.Unlock()
		if ok && q.running() {
			best = q
		}
	}
	if best == nil {
		return nil, "log", errors.New("no node has logged gained leadership")
	}
	return best, "log", nil
}

func bestGain(p *proc) time.Time {
	if p == nil {
		return time.Time{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastGain
}

// httpClient returns a client for load: keep-alive with up to conns idle
// connections per node, no redirects followed, no transparent gzip.
func httpClient(conns int) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        conns * 8,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// workDir returns dir, or a new temporary directory when dir is empty,
// and a cleanup that removes a temporary one unless keep.
func workDir(dir, prefix string, keep bool) (string, func(), error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", nil, err
		}
		return dir, func() {}, nil
	}
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	return d, func() {
		if !keep {
			os.RemoveAll(d)
		}
	}, nil
}

// nodeWorkDir is workDir plus the node binary to run there: bin, or
// cmd/node built into the work directory.
func nodeWorkDir(ctx context.Context, dir, prefix string, keep bool, bin string) (workdir, nodeBin string, cleanup func(), err error) {
	workdir, cleanup, err = workDir(dir, prefix, keep)
	if err != nil {
		return "", "", nil, err
	}
	if nodeBin, err = nodeBinary(ctx, bin, workdir); err != nil {
		cleanup()
		return "", "", nil, err
	}
	return workdir, nodeBin, cleanup, nil
}

// nodeBinary returns bin, or builds cmd/node into dir.
func nodeBinary(ctx context.Context, bin, dir string) (string, error) {
	if bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("node-bin: %w", err)
		}
		return filepath.Abs(bin)
	}
	return buildNode(ctx, dir)
}
