package web

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/surgefund/surge/donation"
	"github.com/surgefund/surge/donation/memledger"
	"github.com/surgefund/surge/payment"
	"github.com/surgefund/surge/site"
)

const testToken = "0123456789abcdef-admin"

// fakeCluster is an in-memory ClusterAdmin: three members, a settable
// leader, per-peer answers, and a record of the actions asked of it.
type fakeCluster struct {
	mu        sync.Mutex
	local     NodeStatus
	members   []ClusterMember
	peers     map[string]NodeStatus
	peerErr   map[string]error
	slow      map[string]bool // PeerStatus blocks until its context ends
	actionErr error
	snapshot  []byte
	restored  []byte
	restoreFn func(io.Reader) error
	donations []donation.Donation
	exportErr error // returned by Export after the donations
	calls     []string
}

func newFakeCluster() *fakeCluster {
	f := &fakeCluster{}
	f.init()
	return f
}

// reset puts f back to its initial state and applies setup, under the
// lock (the server's goroutines read f under it too).
func (f *fakeCluster) reset(setup func(*fakeCluster)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.init()
	if setup != nil {
		setup(f)
	}
}

// update changes f under the lock.
func (f *fakeCluster) update(change func(*fakeCluster)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

func (f *fakeCluster) init() {
	ids := []string{"11111111-aaaa-4aaa-8aaa-000000000001", "22222222-bbbb-4bbb-8bbb-000000000002", "33333333-cccc-4ccc-8ccc-000000000003"}
	f.peers, f.peerErr, f.slow = map[string]NodeStatus{}, map[string]error{}, map[string]bool{}
	f.members, f.calls, f.actionErr, f.restored, f.restoreFn = nil, nil, nil, nil, nil
	f.donations, f.exportErr = nil, nil
	for i, id := range ids {
		name := fmt.Sprintf("n%d", i+1)
		role := "voter"
		if i == 0 {
			role = "leader"
		}
		f.members = append(f.members, ClusterMember{ID: id, Name: name, GossipAddr: fmt.Sprintf("10.0.0.%d:7946", i+1),
			RaftAddr: fmt.Sprintf("10.0.0.%d:7947", i+1), HTTPAddr: fmt.Sprintf("10.0.0.%d:8080", i+1), Version: "v1", Gossip: "alive", Role: role})
		f.peers[id] = NodeStatus{ID: id, Name: name, HTTPAddr: fmt.Sprintf("10.0.0.%d:8080", i+1), Role: role, State: "Follower",
			Term: 3, CommitIndex: 100, AppliedIndex: 100, LastIndex: 100, LastContactMS: 12, LeaderID: ids[0], Version: "v1",
			RaisedMinor: 12500, Donations: 3, Currency: "EUR"}
	}
	lead := f.peers[ids[0]]
	lead.State, lead.LastContactMS = "Leader", 0
	f.peers[ids[0]] = lead
	f.local = lead
}

func (f *fakeCluster) id(i int) string { return f.members[i].ID }

// setLocal makes member i the answering node.
func (f *fakeCluster) setLocal(i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.local = f.peers[f.members[i].ID]
}

// record notes a call and returns the error actions are set to fail with.
func (f *fakeCluster) record(s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
	return f.actionErr
}

func (f *fakeCluster) restoredBytes() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restored
}

func (f *fakeCluster) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeCluster) LocalStatus() NodeStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.local
}

func (f *fakeCluster) Members() []ClusterMember {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.members)
}

func (f *fakeCluster) PeerStatus(ctx context.Context, id string) (NodeStatus, error) {
	f.mu.Lock()
	st, ok := f.peers[id]
	err, slow := f.peerErr[id], f.slow[id]
	f.mu.Unlock()
	if slow {
		<-ctx.Done()
		return NodeStatus{}, fmt.Errorf("peer status %s: %w", id, ctx.Err())
	}
	if err != nil {
		return NodeStatus{}, err
	}
	if !ok {
		return NodeStatus{}, fmt.Errorf("peer status %s: %w", id, ErrUnknownMember)
	}
	return st, nil
}

func (f *fakeCluster) Leave(context.Context) error { return f.record("leave") }

func (f *fakeCluster) RemoveServer(_ context.Context, id string) error {
	return f.record("remove " + id)
}

// TransferLeadership moves the leader the local view reports.
func (f *fakeCluster) TransferLeadership(_ context.Context, id string) error {
	if err := f.record("transfer " + id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.members {
		if id == "" && m.ID != f.local.LeaderID || m.ID == id {
			f.local.LeaderID = m.ID
			break
		}
	}
	return nil
}

func (f *fakeCluster) Snapshot(context.Context) (int64, io.ReadCloser, error) {
	f.record("snapshot")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.actionErr != nil {
		return 0, nil, f.actionErr
	}
	return int64(len(f.snapshot)), io.NopCloser(bytes.NewReader(f.snapshot)), nil
}

func (f *fakeCluster) Restore(_ context.Context, r io.Reader) error {
	f.record("restore")
	if f.restoreFn != nil {
		return f.restoreFn(r)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(b, []byte("SNAP")) {
		return fmt.Errorf("restore: %w: bad magic", ErrBadSnapshot)
	}
	f.mu.Lock()
	f.restored = b
	f.mu.Unlock()
	return nil
}

func (f *fakeCluster) Export(ctx context.Context, fn func(donation.Donation) error) error {
	f.mu.Lock()
	ds, exportErr := f.donations, f.exportErr
	f.mu.Unlock()
	for _, d := range ds {
		if err := fn(d); err != nil {
			return err
		}
	}
	return exportErr
}

// opsHealth is always ready.
type opsHealth struct{}

func (opsHealth) Ready() error                   { return nil }
func (opsHealth) WaitSync(context.Context) error { return nil }

// newOpsServer builds a real web Server (edge, error handler, pages) over
// a memledger, for the admin API and the metrics to be mounted on.
func newOpsServer(t *testing.T, mutate func(*Config)) *Server {
	t.Helper()
	dcfg := payment.DefaultDevConfig()
	dcfg.Secret = []byte("ops-test-secret-0123456789abcdef")
	dcfg.BaseURL = "http://127.0.0.1:8080"
	dev, err := payment.NewDev(dcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dev.Close() })
	led := memledger.New()
	cfg := DefaultConfig()
	cfg.PublicURL = "http://127.0.0.1:8080"
	cfg.Site = site.FS()
	cfg.Providers = []payment.Provider{dev}
	cfg.RateLimit = RateLimit{}
	cfg.Logger = slog.New(slog.DiscardHandler)
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := NewServer(cfg, led, led, opsHealth{})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// adminServer serves the admin API, mounted on a real web Server, over a
// real listener.
func adminServer(t *testing.T, f *fakeCluster, mutate func(*AdminConfig)) (*httptest.Server, *Server) {
	t.Helper()
	ws := newOpsServer(t, nil)
	cfg := DefaultAdminConfig()
	cfg.Token = testToken
	cfg.PeerTimeout = 200 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	if err := RegisterAdmin(ws.Echo(), cfg, f); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ws.Handler())
	t.Cleanup(srv.Close)
	return srv, ws
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) errorCode(t *testing.T) string {
	t.Helper()
	var b struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(a.body, &b); err != nil || b.Error.Code == "" || b.Error.Message == "" {
		t.Fatalf("not the JSON error shape (%v): %s", err, a.body)
	}
	return b.Error.Code
}

func adminDo(t *testing.T, method, url, token, contentType string, body io.Reader, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

func TestAdminAuth(t *testing.T) {
	f := newFakeCluster()
	srv, _ := adminServer(t, f, nil)
	tests := []struct {
		name   string
		auth   string
		hdr    []string
		method string
		want   int
	}{
		{"no header", "", nil, "GET", 401},
		{"wrong token", "Bearer nope-nope-nope-nope", nil, "GET", 401},
		{"token prefix", "Bearer " + testToken[:10], nil, "GET", 401},
		{"token with suffix", "Bearer " + testToken + "x", nil, "GET", 401},
		{"basic scheme", "Basic " + testToken, nil, "GET", 401},
		{"empty bearer", "Bearer ", nil, "GET", 401},
		{"right token", "Bearer " + testToken, nil, "GET", 200},
		{"scheme is case-insensitive", "bearer " + testToken, nil, "GET", 200},
		{"cross-site post with the token", "Bearer " + testToken, []string{"Sec-Fetch-Site", "cross-site"}, "POST", 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := srv.URL + PathMembers
			if tt.method == "POST" {
				url = srv.URL + PathTransferLeader
			}
			a := adminDo(t, tt.method, url, "", "application/json", strings.NewReader("{}"), append([]string{"Authorization", tt.auth}, tt.hdr...)...)
			if a.status != tt.want {
				t.Fatalf("status %d, want %d: %s", a.status, tt.want, a.body)
			}
			if tt.want == 401 {
				if c := a.errorCode(t); c != "unauthorized" {
					t.Fatalf("code %q", c)
				}
				if !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
					t.Fatalf("WWW-Authenticate = %q", a.header.Get("WWW-Authenticate"))
				}
			}
			if tt.want == 403 && a.errorCode(t) != "cross_origin_request" {
				t.Fatalf("code %s", a.body)
			}
		})
	}
	if slices.Contains(f.called(), "transfer ") {
		t.Fatal("a refused request reached the cluster")
	}
}

func TestAdminLoopbackOnlyWithoutToken(t *testing.T) {
	f := newFakeCluster()
	ws := newOpsServer(t, nil)
	if err := RegisterAdmin(ws.Echo(), DefaultAdminConfig(), f); err != nil {
		t.Fatal(err)
	}
	e := ws.Handler()
	tests := []struct {
		name, remote, host string
		want               int
	}{
		{"ipv4 loopback", "127.0.0.1:5555", "127.0.0.1:8080", 200},
		{"other loopback address", "127.0.0.9:5555", "127.0.0.1:8080", 200},
		{"ipv6 loopback", "[::1]:5555", "[::1]:8080", 200},
		{"localhost host", "127.0.0.1:5555", "localhost:8080", 200},
		{"remote caller", "192.0.2.7:5555", "192.0.2.1:8080", 401},
		{"private network caller", "10.1.2.3:5555", "10.1.2.1:8080", 401},
		{"dns rebinding name", "127.0.0.1:5555", "evil.example:8080", 401},
		{"garbage remote", "nonsense", "127.0.0.1:8080", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", PathMembers, nil)
			req.RemoteAddr, req.Host = tt.remote, tt.host
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
			if tt.want == 401 && !strings.Contains(rec.Body.String(), `"unauthorized"`) {
				t.Fatalf("body %s", rec.Body)
			}
		})
	}
	// A token from a remote caller is useless when none is configured.
	req := httptest.NewRequest("GET", PathMembers, nil)
	req.RemoteAddr, req.Host = "192.0.2.7:5555", "192.0.2.1:8080"
	req.Header.Set("Authorization", "Bearer "+testToken)
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != 401 {
		t.Fatalf("remote caller with a token but none configured: %d", rec.Code)
	}
}

func TestAdminConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*AdminConfig)
		wantErr string
	}{
		{"default", func(*AdminConfig) {}, ""},
		{"good token", func(c *AdminConfig) { c.Token = testToken }, ""},
		{"short token", func(c *AdminConfig) { c.Token = "short" }, "admin token"},
		{"token with space", func(c *AdminConfig) { c.Token = "0123456789 abcdef" }, "admin token"},
		{"no peer timeout", func(c *AdminConfig) { c.PeerTimeout = 0 }, "peer timeout"},
		{"no action timeout", func(c *AdminConfig) { c.ActionTimeout = 0 }, "action timeout"},
		{"no restore limit", func(c *AdminConfig) { c.MaxRestoreBytes = 0 }, "restore"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultAdminConfig()
			tt.mutate(&c)
			err := c.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if err := RegisterAdmin(echo.New(), AdminConfig{}, newFakeCluster()); err == nil {
		t.Fatal("RegisterAdmin accepted a zero config")
	}
	if err := RegisterAdmin(echo.New(), DefaultAdminConfig(), nil); err == nil {
		t.Fatal("RegisterAdmin accepted a nil cluster")
	}
}

func TestAdminStatusAsksEveryMember(t *testing.T) {
	f := newFakeCluster()
	f.setLocal(1) // ask a follower: it reports the others' own figures
	srv, _ := adminServer(t, f, nil)
	a := adminDo(t, "GET", srv.URL+PathStatus, testToken, "", nil)
	if a.status != 200 {
		t.Fatalf("status %d %s", a.status, a.body)
	}
	var s ClusterStatus
	if err := json.Unmarshal(a.body, &s); err != nil {
		t.Fatal(err)
	}
	if s.Verdict != VerdictHealthy || s.LeaderID != f.id(0) || s.NodeID != f.id(1) || s.FailureTolerance != 1 || s.Voters != 3 {
		t.Fatalf("status = %+v", s)
	}
	if len(s.Members) != 3 {
		t.Fatalf("members %+v", s.Members)
	}
	for i, m := range s.Members {
		if m.Name != fmt.Sprintf("n%d", i+1) || !m.Reachable || m.RaisedMinor != 12500 || m.Term != 3 || m.Error != "" {
			t.Fatalf("member %d = %+v", i, m)
		}
	}
	if s.Members[0].Role != "leader" || s.Members[0].LastContact != "" || s.Members[1].LastContact != "12ms" {
		t.Fatalf("leader row %+v, follower row %+v", s.Members[0], s.Members[1])
	}
	// The wire format carries the fields design.md §7 fixes.
	var raw map[string]any
	json.Unmarshal(a.body, &raw)
	m0 := raw["members"].([]any)[0].(map[string]any)
	for _, k := range []string{"id", "name", "role", "gossip", "http_addr", "raft_addr", "term", "commit_index", "applied_index",
		"last_index", "lag", "last_contact", "raised_minor", "donations", "version", "reachable"} {
		if _, ok := m0[k]; !ok {
			t.Errorf("member JSON lacks %q: %v", k, m0)
		}
	}
	for _, k := range []string{"leader_id", "node_id", "verdict", "failure_tolerance", "members"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("status JSON lacks %q", k)
		}
	}
}

func TestAdminStatusUnreachablePeers(t *testing.T) {
	f := newFakeCluster()
	f.peerErr[f.id(1)] = errors.New("dial tcp 10.0.0.2:7947: connect: connection refused")
	f.slow[f.id(2)] = true // answers nothing: the peer timeout must cut it
	f.members[1].Gossip = "dead"
	srv, _ := adminServer(t, f, func(c *AdminConfig) { c.PeerTimeout = 100 * time.Millisecond })
	a := adminDo(t, "GET", srv.URL+PathStatus, testToken, "", nil)
	var s ClusterStatus
	if err := json.Unmarshal(a.body, &s); err != nil {
		t.Fatal(err)
	}
	if s.Verdict != VerdictUnavailable {
		t.Fatalf("verdict %s (problems %q), want unavailable with 1 of 3 voters", s.Verdict, s.Problems)
	}
	if s.Members[1].Reachable || !strings.Contains(s.Members[1].Error, "connection refused") {
		t.Fatalf("n2 = %+v", s.Members[1])
	}
	if s.Members[2].Reachable || !strings.Contains(s.Members[2].Error, "deadline exceeded") {
		t.Fatalf("n3 = %+v", s.Members[2])
	}
	if !s.Members[0].Reachable {
		t.Fatal("the answering node itself is always reachable")
	}
}

func TestJudge(t *testing.T) {
	const leader = "L"
	row := func(id, role, gossip string, reach bool, applied uint64) MemberStatus {
		return MemberStatus{ID: id, Name: strings.ToLower(id), Role: role, Gossip: gossip, Reachable: reach, AppliedIndex: applied, CommitIndex: applied}
	}
	local := NodeStatus{ID: leader, LeaderID: leader, CommitIndex: 500}
	tests := []struct {
		name      string
		local     NodeStatus
		rows      []MemberStatus
		verdict   string
		tolerance int
		voters    int
		problem   string
	}{
		{"three healthy voters", local, []MemberStatus{row(leader, "leader", "alive", true, 500), row("B", "voter", "alive", true, 500), row("C", "voter", "alive", true, 499)}, VerdictHealthy, 1, 3, ""},
		{"single node", local, []MemberStatus{row(leader, "leader", "alive", true, 500)}, VerdictHealthy, 0, 1, ""},
		{"five voters and a non-voter", local, []MemberStatus{row(leader, "leader", "alive", true, 500), row("B", "voter", "alive", true, 500), row("C", "voter", "alive", true, 500), row("D", "voter", "alive", true, 500), row("E", "voter", "alive", true, 500), row("F", "nonvoter", "alive", true, 500)}, VerdictHealthy, 2, 5, ""},
		{"dead voter", local, []MemberStatus{row(leader, "leader", "alive", true, 500), row("B", "voter", "dead", false, 0), row("C", "voter", "alive", true, 500)}, VerdictDegraded, 0, 3, "b is dead in gossip"},
		{"suspect voter still answering", local, []MemberStatus{row(leader, "leader", "alive", true, 500), row("B", "voter", "suspect", true, 500), row("C", "voter", "alive", true, 500)}, VerdictDegraded, 0, 3, "b is suspect"},
		{"unreachable but alive", local, []MemberStatus{row(leader, "leader", "alive", true, 500), row("B", "voter", "alive", false, 0), row("C", "voter", "alive", true, 500)}, VerdictDegraded, 0, 3, "b is unreachable"},
		{"dead non-voter keeps tolerance", local, []MemberStatus{row(leader, "leader", "alive", true, 500), row("B", "voter", "alive", true, 500), row("C", "voter", "alive", true, 500), row("D", "nonvoter", "dead", false, 0)}, VerdictDegraded, 1, 3, "d is dead"},
		{"lagging member", local, []MemberStatus{row(leader, "leader", "alive", true, 5000), row("B", "voter", "alive", true, 3000), row("C", "voter", "alive", true, 5000)}, VerdictDegraded, 1, 3, "trails the leader by 2000"},
		{"alive but not yet added", local, []MemberStatus{row(leader, "leader", "alive", true, 500), row("N", "none", "alive", true, 0)}, VerdictDegraded, 0, 1, "not in the Raft configuration"},
		{"removed dead node is ignored", local, []MemberStatus{row(leader, "leader", "alive", true, 500), row("B", "voter", "alive", true, 500), row("C", "voter", "alive", true, 500), row("X", "none", "dead", false, 0), row("Y", "none", "left", false, 0)}, VerdictHealthy, 1, 3, ""},
		{"no leader", NodeStatus{ID: "B"}, []MemberStatus{row("B", "voter", "alive", true, 500), row("C", "voter", "alive", true, 500)}, VerdictUnavailable, 0, 2, "no leader"},
		{"quorum lost", local, []MemberStatus{row(leader, "leader", "alive", true, 500), row("B", "voter", "dead", false, 0), row("C", "voter", "dead", false, 0)}, VerdictUnavailable, 0, 3, "only 1 of 3 voters"},
		{"leader not listed", NodeStatus{ID: "B", LeaderID: "Z"}, []MemberStatus{row("B", "voter", "alive", true, 500)}, VerdictDegraded, 0, 1, "not among the members"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := judge(tt.local, slices.Clone(tt.rows), 1000)
			if s.Verdict != tt.verdict || s.FailureTolerance != tt.tolerance || s.Voters != tt.voters {
				t.Fatalf("verdict %s tolerance %d voters %d, want %s %d %d; problems %q", s.Verdict, s.FailureTolerance, s.Voters, tt.verdict, tt.tolerance, tt.voters, s.Problems)
			}
			joined := strings.Join(s.Problems, "; ")
			if tt.problem == "" && joined != "" || !strings.Contains(joined, tt.problem) {
				t.Fatalf("problems %q, want one containing %q", s.Problems, tt.problem)
			}
		})
	}
}

func TestAdminMembersAndPeers(t *testing.T) {
	f := newFakeCluster()
	f.members = append(f.members, ClusterMember{ID: "gone", Name: "old", Gossip: "dead", Role: "none"},
		ClusterMember{ID: "spare", Name: "n4", RaftAddr: "10.0.0.4:7947", Gossip: "alive", Role: "nonvoter"})
	srv, _ := adminServer(t, f, nil)
	c, err := NewClient(srv.URL, testToken)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ms, err := c.Members(ctx)
	if err != nil || len(ms) != 5 || ms[3].Gossip != "dead" {
		t.Fatalf("members = %+v, %v", ms, err)
	}
	ps, err := c.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []RaftPeer{
		{ID: f.id(0), Name: "n1", Address: "10.0.0.1:7947", Suffrage: "voter", Leader: true},
		{ID: f.id(1), Name: "n2", Address: "10.0.0.2:7947", Suffrage: "voter"},
		{ID: f.id(2), Name: "n3", Address: "10.0.0.3:7947", Suffrage: "voter"},
		{ID: "spare", Name: "n4", Address: "10.0.0.4:7947", Suffrage: "nonvoter"},
	}
	if !slices.Equal(ps, want) {
		t.Fatalf("peers = %+v\nwant %+v", ps, want)
	}
}

func TestAdminActions(t *testing.T) {
	const js = "application/json"
	type tc struct {
		name      string
		path      string
		ctype     string
		body      string
		setup     func(*fakeCluster)
		want      int
		code      string
		wantCalls []string
	}
	f0 := newFakeCluster()
	n2, n3 := f0.id(1), f0.id(2)
	n2dead := func(f *fakeCluster) { f.members[1].Gossip = "dead" }
	n3dead := func(f *fakeCluster) { f.members[2].Gossip = "dead" }
	tests := []tc{
		{name: "remove a dead voter", path: PathRemove, ctype: js, body: `{"id":"` + n3 + `"}`, setup: n3dead, want: 200, wantCalls: []string{"remove " + n3}},
		{name: "remove without content type", path: PathRemove, body: `{"id":"` + n3 + `"}`, setup: n3dead, want: 200, wantCalls: []string{"remove " + n3}},
		{name: "remove an alive member", path: PathRemove, ctype: js, body: `{"id":"` + n3 + `"}`, want: 409, code: "conflict"},
		{name: "remove self", path: PathRemove, ctype: js, body: `{"id":"` + f0.id(0) + `"}`, want: 409, code: "conflict"},
		{name: "remove unknown", path: PathRemove, ctype: js, body: `{"id":"nope"}`, want: 404, code: "not_found"},
		{name: "remove missing id", path: PathRemove, ctype: js, body: `{}`, want: 400, code: "invalid_id"},
		{name: "remove empty body", path: PathRemove, ctype: js, body: ``, want: 400, code: "invalid_id"},
		{name: "remove bad json", path: PathRemove, ctype: js, body: `{"id":`, want: 400, code: "invalid_json"},
		{name: "remove wrong type", path: PathRemove, ctype: js, body: `{"id":7}`, want: 400, code: "invalid_json"},
		{name: "remove unknown field", path: PathRemove, ctype: js, body: `{"id":"x","force":true}`, want: 400, code: "invalid_json"},
		{name: "remove trailing data", path: PathRemove, ctype: js, body: `{"id":"x"} {}`, want: 400, code: "invalid_json"},
		{name: "remove control chars", path: PathRemove, ctype: js, body: `{"id":"a\u0000b"}`, want: 400, code: "invalid_id"},
		{name: "remove long id", path: PathRemove, ctype: js, body: `{"id":"` + strings.Repeat("a", 200) + `"}`, want: 400, code: "invalid_id"},
		{name: "remove huge body", path: PathRemove, ctype: js, body: `{"id":"` + strings.Repeat("a", 10000) + `"}`, want: 413, code: "body_too_large"},
		{name: "remove form body", path: PathRemove, ctype: "application/x-www-form-urlencoded", body: `id=x`, want: 415, code: "unsupported_media_type"},
		{name: "remove breaks quorum", path: PathRemove, ctype: js, body: `{"id":"` + n2 + `"}`, setup: func(f *fakeCluster) {
			n2dead(f)
			f.actionErr = fmt.Errorf("remove: %w", ErrUnsafeChange)
		}, want: 409, code: "conflict", wantCalls: []string{"remove " + n2}},
		{name: "remove the last voter", path: PathRemove, ctype: js, body: `{"id":"` + n2 + `"}`, setup: func(f *fakeCluster) {
			n2dead(f)
			f.members[0].Role, f.members[2].Role = "nonvoter", "nonvoter"
			f.members[1].Role = "leader"
		}, want: 409, code: "conflict"},
		{name: "remove with no leader", path: PathRemove, ctype: js, body: `{"id":"` + n2 + `"}`, setup: func(f *fakeCluster) {
			n2dead(f)
			f.actionErr = fmt.Errorf("x: %w", ErrUnavailable)
		}, want: 503, code: "unavailable", wantCalls: []string{"remove " + n2}},
		{name: "transfer to any", path: PathTransferLeader, ctype: js, body: ``, want: 200, wantCalls: []string{"transfer "}},
		{name: "transfer to any with {}", path: PathTransferLeader, ctype: js, body: `{}`, want: 200, wantCalls: []string{"transfer "}},
		{name: "transfer to n2", path: PathTransferLeader, ctype: js, body: `{"id":"` + n2 + `"}`, want: 200, wantCalls: []string{"transfer " + n2}},
		{name: "transfer to unknown", path: PathTransferLeader, ctype: js, body: `{"id":"ghost"}`, want: 404, code: "not_found"},
		{name: "transfer refused by cluster", path: PathTransferLeader, ctype: js, body: `{"id":"` + n2 + `"}`, setup: func(f *fakeCluster) { f.actionErr = errors.New("boom") }, want: 500, code: "internal_error", wantCalls: []string{"transfer " + n2}},
		{name: "leave", path: PathLeave, ctype: js, body: `{}`, want: 200, wantCalls: []string{"leave"}},
		{name: "leave with no body", path: PathLeave, body: ``, want: 200, wantCalls: []string{"leave"}},
		{name: "leave form post", path: PathLeave, ctype: "text/plain", body: `x`, want: 415, code: "unsupported_media_type"},
		{name: "leave as the only voter", path: PathLeave, ctype: js, body: `{}`, setup: func(f *fakeCluster) {
			f.members = f.members[:1]
		}, want: 409, code: "conflict"},
	}
	f := newFakeCluster()
	srv, _ := adminServer(t, f, nil) // one server; the fake is reset per case
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.reset(tt.setup)
			a := adminDo(t, "POST", srv.URL+tt.path, testToken, tt.ctype, strings.NewReader(tt.body))
			if a.status != tt.want {
				t.Fatalf("status %d, want %d: %s", a.status, tt.want, a.body)
			}
			if tt.code != "" {
				if c := a.errorCode(t); c != tt.code {
					t.Fatalf("code %q, want %q", c, tt.code)
				}
			} else {
				var r ActionResult
				if err := json.Unmarshal(a.body, &r); err != nil || !r.OK {
					t.Fatalf("result %s (%v)", a.body, err)
				}
			}
			if got := f.called(); !slices.Equal(got, tt.wantCalls) {
				t.Fatalf("calls %q, want %q", got, tt.wantCalls)
			}
			if a.header.Get("Cache-Control") != "no-store" {
				t.Fatalf("Cache-Control %q", a.header.Get("Cache-Control"))
			}
		})
	}
}

func TestAdminWrongMethodAndPath(t *testing.T) {
	f := newFakeCluster()
	srv, _ := adminServer(t, f, nil)
	if a := adminDo(t, "GET", srv.URL+PathRemove, testToken, "", nil); a.status != http.StatusMethodNotAllowed {
		t.Fatalf("GET remove: %d", a.status)
	}
	if a := adminDo(t, "GET", srv.URL+"/admin/v1/nothing", testToken, "", nil); a.status != http.StatusNotFound {
		t.Fatalf("unknown admin path: %d", a.status)
	}
	if len(f.called()) != 0 {
		t.Fatalf("calls %q", f.called())
	}
}

func TestAdminSnapshotAndRestore(t *testing.T) {
	f := newFakeCluster()
	f.snapshot = append([]byte("SNAP"), bytes.Repeat([]byte{1, 2, 3, 4}, 50000)...)
	srv, _ := adminServer(t, f, func(c *AdminConfig) { c.MaxRestoreBytes = 300_000 })
	c, err := NewClient(srv.URL, testToken)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rc, size, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, f.snapshot) || size != int64(len(f.snapshot)) {
		t.Fatalf("snapshot: %d bytes (size %d, err %v), want %d", len(got), size, err, len(f.snapshot))
	}
	res, err := c.Restore(ctx, bytes.NewReader(f.snapshot))
	if err != nil || !res.OK {
		t.Fatalf("restore: %+v %v", res, err)
	}
	if got := f.restoredBytes(); !bytes.Equal(got, f.snapshot) {
		t.Fatalf("restored %d bytes, want the %d sent", len(got), len(f.snapshot))
	}

	tests := []struct {
		name  string
		ctype string
		body  io.Reader
		want  int
		code  string
	}{
		{"bad snapshot", "application/octet-stream", strings.NewReader("garbage"), 400, "bad_request"},
		{"empty", "application/octet-stream", strings.NewReader(""), 400, "bad_request"},
		{"json content type", "application/json", strings.NewReader("SNAP"), 415, "unsupported_media_type"},
		{"too large with length", "application/octet-stream", bytes.NewReader(make([]byte, 300_001)), 413, "body_too_large"},
		{"too large chunked", "application/octet-stream", io.MultiReader(strings.NewReader("SNAP"), bytes.NewReader(make([]byte, 400_000))), 413, "body_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := adminDo(t, "POST", srv.URL+PathRestore, testToken, tt.ctype, tt.body)
			if a.status != tt.want || a.errorCode(t) != tt.code {
				t.Fatalf("status %d body %s, want %d %s", a.status, a.body, tt.want, tt.code)
			}
		})
	}
	// A snapshot the cluster cannot take is a JSON error, not a stream.
	f.update(func(f *fakeCluster) { f.actionErr = fmt.Errorf("snapshot: %w", ErrUnavailable) })
	if _, _, err := c.Snapshot(ctx); !isAPIError(err, 503, "unavailable") {
		t.Fatalf("snapshot failure = %v", err)
	}
}

func isAPIError(err error, status int, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == status && ae.Code == code
}

func TestAdminRestoreOnFollower(t *testing.T) {
	f := newFakeCluster()
	f.setLocal(1)
	srv, _ := adminServer(t, f, nil)
	a := adminDo(t, "POST", srv.URL+PathRestore, testToken, "application/octet-stream", strings.NewReader("SNAPxyz"))
	if a.status != 409 || a.errorCode(t) != "not_leader" {
		t.Fatalf("restore on a follower: %d %s", a.status, a.body)
	}
	if got := a.header.Get(HeaderLeader); got != "10.0.0.1:8080" {
		t.Fatalf("leader address header %q", got)
	}
	if slices.Contains(f.called(), "restore") {
		t.Fatal("a follower passed the restore on")
	}
}

func TestAdminExport(t *testing.T) {
	f := newFakeCluster()
	at := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC).UnixNano()
	f.donations = []donation.Donation{
		{ID: "d1", Amount: donation.Money{Minor: 2500, Currency: "EUR"}, Status: donation.StatusSucceeded, Provider: "dev", ProviderRef: "ref-1",
			Name: "Ada, \"the first\"", Email: "ada@example.org", Message: "line one\nline two", CreatedAt: at},
		{ID: "d2", Amount: donation.Money{Minor: 1000, Currency: "EUR"}, RefundedMinor: 400, Status: donation.StatusSucceeded, Provider: "dev",
			Name: "=HYPERLINK(\"http://x\")", Email: "-x@example.org", Anonymous: true, Message: "@SUM(A1)", CreatedAt: at + 1},
		{ID: "d3", Amount: donation.Money{Minor: 500, Currency: "EUR"}, Status: donation.StatusPending, Provider: "dev", CreatedAt: at + 2},
	}
	srv, _ := adminServer(t, f, nil)
	c, _ := NewClient(srv.URL, testToken)
	rc, err := c.Export(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(rc).ReadAll()
	rc.Close()
	if err != nil {
		t.Fatalf("read export: %v", err)
	}
	want := [][]string{
		ExportHeader,
		{"d1", "2026-03-01T12:30:00Z", "succeeded", "2500", "0", "EUR", "dev", "ref-1", "Ada, \"the first\"", "ada@example.org", "false", "line one\nline two"},
		{"d2", "2026-03-01T12:30:00Z", "succeeded", "1000", "400", "EUR", "dev", "", "'=HYPERLINK(\"http://x\")", "'-x@example.org", "true", "'@SUM(A1)"},
		{"d3", "2026-03-01T12:30:00Z", "pending", "500", "0", "EUR", "dev", "", "", "", "false", ""},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %q", len(rows), len(want), rows)
	}
	for i := range want {
		if !slices.Equal(rows[i], want[i]) {
			t.Fatalf("row %d = %q\nwant %q", i, rows[i], want[i])
		}
	}

	// Empty ledger: the header alone, complete.
	f.update(func(f *fakeCluster) { f.donations = nil })
	rc, err = c.Export(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rows, err = csv.NewReader(rc).ReadAll()
	rc.Close()
	if err != nil || len(rows) != 1 {
		t.Fatalf("empty export: %q %v", rows, err)
	}

	// Cut short after rows were sent: the client notices.
	many := make([]donation.Donation, 600)
	for i := range many {
		many[i] = donation.Donation{ID: fmt.Sprintf("x%04d", i), Amount: donation.Money{Minor: 100, Currency: "EUR"}, Status: donation.StatusSucceeded}
	}
	f.update(func(f *fakeCluster) { f.donations, f.exportErr = many, errors.New("disk on fire") })
	rc, err = c.Export(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, ErrIncompleteExport) {
		t.Fatalf("cut export read = %v, want ErrIncompleteExport", err)
	}

	// Failing before the first row: a JSON error.
	f.update(func(f *fakeCluster) { f.donations = nil })
	if _, err := c.Export(context.Background()); !isAPIError(err, 500, "internal_error") {
		t.Fatalf("failed export = %v", err)
	}
}

func TestCSVText(t *testing.T) {
	for in, want := range map[string]string{"": "", "Ada": "Ada", "=1+1": "'=1+1", "+33": "'+33", "-": "'-", "@x": "'@x",
		"\tx": "'\tx", "a=b": "a=b", "Zoë": "Zoë"} {
		if got := csvText(in); got != want {
			t.Errorf("csvText(%q) = %q, want %q", in, got, want)
		}
	}
}
