package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/surgefund/surge/web"
)

var update = flag.Bool("update", false, "rewrite the testdata/*.golden files from the current output")

const token = "clusterctl-test-token-0123456789"

// fakeNode is a node's admin API answering from testdata fixtures. It
// checks the bearer token and records what the CLI posted.
type fakeNode struct {
	t        *testing.T
	srv      *httptest.Server
	status   string // fixture file for GET status
	snapshot []byte
	csv      string
	cutCSV   bool // end the export without its completion trailer

	mu       sync.Mutex
	posts    []string // "path body"
	restored []byte
}

func newFakeNode(t *testing.T) *fakeNode {
	t.Helper()
	f := &fakeNode{t: t, status: "status_healthy.json"}
	mux := http.NewServeMux()
	fixture := func(name func() string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			b, err := os.ReadFile(filepath.Join("testdata", name()))
			if err != nil {
				t.Error(err)
				w.WriteHeader(500)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Write(b)
		}
	}
	mux.HandleFunc("GET "+web.PathStatus, fixture(func() string { return f.status }))
	mux.HandleFunc("GET "+web.PathMembers, fixture(func() string { return "members.json" }))
	mux.HandleFunc("GET "+web.PathPeers, fixture(func() string { return "peers.json" }))
	for _, p := range []string{web.PathLeave, web.PathRemove, web.PathTransferLeader} {
		mux.HandleFunc("POST "+p, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			f.mu.Lock()
			f.posts = append(f.posts, r.URL.Path+" "+string(b))
			f.mu.Unlock()
			var req web.IDRequest
			json.Unmarshal(b, &req)
			res := web.ActionResult{OK: true, Action: strings.TrimPrefix(r.URL.Path, "/admin/v1/"), ID: req.ID,
				LeaderID: "a93d0c51-7e2b-4f6a-8c1d-2b3e4f5a6b72"}
			if r.URL.Path == web.PathLeave {
				res.ID = "c27e8b40-1d5f-4a3b-9e6c-7f8a9b0c1d23"
			}
			json.NewEncoder(w).Encode(res)
		})
	}
	mux.HandleFunc("GET "+web.PathSnapshot, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(f.snapshot)))
		w.Write(f.snapshot)
	})
	mux.HandleFunc("POST "+web.PathRestore, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		f.mu.Lock()
		f.restored = b
		f.mu.Unlock()
		json.NewEncoder(w).Encode(web.ActionResult{OK: true, Action: "restore"})
	})
	mux.HandleFunc("GET "+web.PathExport, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", web.TrailerExportComplete)
		w.Header().Set("Content-Type", "text/csv")
		io.WriteString(w, f.csv)
		if !f.cutCSV {
			w.Header().Set(web.TrailerExportComplete, "true")
		}
	})
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(401)
			io.WriteString(w, `{"error":{"code":"unauthorized","message":"missing or wrong admin token"}}`)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeNode) postsMade() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.posts...)
}

// result is one run of the CLI.
type result struct {
	code           int
	stdout, stderr string
}

type runOpts struct {
	stdin     string
	stdinTTY  bool
	stderrTTY bool
	env       map[string]string
}

func runCLI(t *testing.T, o runOpts, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	clock := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	code := run(context.Background(), args, env{
		stdin: strings.NewReader(o.stdin), stdout: &out, stderr: &errb,
		stdinTTY: o.stdinTTY, stderrTTY: o.stderrTTY,
		getenv: func(k string) string { return o.env[k] },
		now: func() time.Time {
			clock = clock.Add(50 * time.Millisecond)
			return clock
		},
	})
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestGolden(t *testing.T) {
	f := newFakeNode(t)
	tests := []struct {
		name     string
		fixture  string
		args     []string
		wantCode int
	}{
		{"status_healthy.golden", "status_healthy.json", []string{"status"}, exitOK},
		{"status_degraded.golden", "status_degraded.json", []string{"status"}, exitDegraded},
		{"status_unavailable.golden", "status_unavailable.json", []string{"status"}, exitError},
		{"members.golden", "", []string{"members"}, exitOK},
		{"peers.golden", "", []string{"peers"}, exitOK},
		{"help.golden", "", []string{"help"}, exitOK},
		{"help_status.golden", "", []string{"status", "--help"}, exitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.fixture != "" {
				f.status = tt.fixture
			}
			r := runCLI(t, runOpts{}, append(tt.args, "--addr", f.srv.URL, "--token", token)...)
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr %s", r.code, tt.wantCode, r.stderr)
			}
			if r.stderr != "" {
				t.Fatalf("stderr: %s", r.stderr)
			}
			golden(t, tt.name, r.stdout)
		})
	}
}

func TestJSONPrintsTheBody(t *testing.T) {
	f := newFakeNode(t)
	for _, tc := range []struct {
		fixture, cmd string
		code         int
	}{
		{"status_healthy.json", "status", exitOK},
		{"status_degraded.json", "status", exitDegraded},
		{"status_unavailable.json", "status", exitError},
		{"members.json", "members", exitOK},
		{"peers.json", "peers", exitOK},
	} {
		if tc.cmd == "status" {
			f.status = tc.fixture
		}
		r := runCLI(t, runOpts{}, tc.cmd, "--json", "--addr", f.srv.URL, "--token", token)
		want, _ := os.ReadFile(filepath.Join("testdata", tc.fixture))
		if r.code != tc.code || r.stdout != string(want) {
			t.Fatalf("%s --json: exit %d\n%s\nwant exit %d and the body as served", tc.cmd, r.code, r.stdout, tc.code)
		}
	}
}

func TestEnvironmentAndAuth(t *testing.T) {
	f := newFakeNode(t)
	r := runCLI(t, runOpts{env: map[string]string{"SURGE_ADDR": f.srv.URL, "SURGE_TOKEN": token}}, "peers")
	if r.code != exitOK || !strings.Contains(strings.ToLower(r.stdout), "suffrage") {
		t.Fatalf("peers from env: %+v", r)
	}
	// A flag wins over the environment.
	r = runCLI(t, runOpts{env: map[string]string{"SURGE_ADDR": "http://127.0.0.1:1", "SURGE_TOKEN": "wrong"}}, "peers", "--addr", f.srv.URL, "--token", token)
	if r.code != exitOK {
		t.Fatalf("flags over env: %+v", r)
	}
	r = runCLI(t, runOpts{}, "status", "--addr", f.srv.URL)
	if r.code != exitError || !strings.Contains(r.stderr, "unauthorized") || !strings.Contains(r.stderr, "SURGE_TOKEN") {
		t.Fatalf("no token: %+v", r)
	}
	r = runCLI(t, runOpts{}, "status", "--addr", f.srv.URL, "--token", "wrong")
	if r.code != exitError || !strings.Contains(r.stderr, "check --token") {
		t.Fatalf("wrong token: %+v", r)
	}
	r = runCLI(t, runOpts{}, "status", "--addr", "http://127.0.0.1:1", "--timeout", "2s")
	if r.code != exitError || !strings.Contains(r.stderr, "is a node listening") {
		t.Fatalf("nobody listening: %+v", r)
	}
}

// TestFlagsBeforeTheCommand: the common flags work before the command as
// well as after it, as a newcomer types them.
func TestFlagsBeforeTheCommand(t *testing.T) {
	f := newFakeNode(t)
	for _, args := range [][]string{
		{"--addr", f.srv.URL, "--token", token, "peers"},
		{"--addr=" + f.srv.URL, "peers", "--token", token},
		{"--json", "--addr", f.srv.URL, "--timeout", "5s", "peers", "--token=" + token},
	} {
		r := runCLI(t, runOpts{}, args...)
		if r.code != exitOK || !strings.Contains(strings.ToLower(r.stdout), "suffrage") {
			t.Fatalf("%q: exit %d\nstdout %s\nstderr %s", args, r.code, r.stdout, r.stderr)
		}
	}
	r := runCLI(t, runOpts{}, "--addr", f.srv.URL)
	if r.code != exitError || !strings.Contains(r.stderr, "no command") {
		t.Fatalf("flags without a command: exit %d stderr %q", r.code, r.stderr)
	}
	r = runCLI(t, runOpts{}, "--addr", f.srv.URL, "--help")
	if r.code != exitOK || !strings.Contains(r.stdout, "Usage:") {
		t.Fatalf("--addr URL --help: exit %d stdout %q", r.code, r.stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "Usage:"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", []string{"status", "--frob"}, "flag provided but not defined"},
		{"extra argument", []string{"status", "now"}, "wrong number of arguments"},
		{"remove without id", []string{"remove"}, "wrong number of arguments"},
		{"snapshot without file", []string{"snapshot", "save"}, "wrong number of arguments"},
		{"snapshot bad verb", []string{"snapshot", "take", "x"}, "save or restore"},
		{"bad timeout", []string{"status", "--timeout", "-1s"}, "--timeout"},
		{"bad address", []string{"status", "--addr", "ftp://x"}, "admin address"},
		{"help for unknown", []string{"help", "nope"}, `unknown command "nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, runOpts{}, tt.args...)
			if r.code != exitError || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("exit %d stderr %q, want 2 and %q", r.code, r.stderr, tt.want)
			}
		})
	}
}

func TestRemove(t *testing.T) {
	const n3 = "c27e8b40-1d5f-4a3b-9e6c-7f8a9b0c1d23"
	tests := []struct {
		name      string
		args      []string
		o         runOpts
		wantCode  int
		wantOut   string
		wantErr   string
		wantPosts []string
	}{
		{"by prefix with --yes", []string{"remove", "c27e8b40", "--yes"}, runOpts{}, exitOK, "removed n3 (c27e8b40)", "", []string{web.PathRemove + ` {"id":"` + n3 + `"}`}},
		{"by name, flag before id", []string{"remove", "-y", "n3"}, runOpts{}, exitOK, "removed n3", "", []string{web.PathRemove + ` {"id":"` + n3 + `"}`}},
		{"no terminal, no --yes", []string{"remove", "n3"}, runOpts{}, exitError, "", "pass --yes", nil},
		{"terminal says yes", []string{"remove", "n3"}, runOpts{stdinTTY: true, stdin: "y\n"}, exitOK, "removed n3", "Remove node c27e8b40 (n3)? [y/N]", []string{web.PathRemove + ` {"id":"` + n3 + `"}`}},
		{"terminal says no", []string{"remove", "n3"}, runOpts{stdinTTY: true, stdin: "\n"}, exitError, "", "not removed", nil},
		{"ambiguous prefix", []string{"remove", "a93d", "--yes"}, runOpts{}, exitError, "", "matches 2 members", nil},
		{"unknown", []string{"remove", "zzzz", "--yes"}, runOpts{}, exitError, "", "no member matches", nil},
		{"json", []string{"remove", n3, "--yes", "--json"}, runOpts{}, exitOK, `"action":"remove"`, "", []string{web.PathRemove + ` {"id":"` + n3 + `"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeNode(t)
			r := runCLI(t, tt.o, append(tt.args, "--addr", f.srv.URL, "--token", token)...)
			if r.code != tt.wantCode || !strings.Contains(r.stdout, tt.wantOut) || !strings.Contains(r.stderr, tt.wantErr) {
				t.Fatalf("exit %d\nstdout %q\nstderr %q", r.code, r.stdout, r.stderr)
			}
			if got := f.postsMade(); strings.Join(got, "|") != strings.Join(tt.wantPosts, "|") {
				t.Fatalf("posts %q, want %q", got, tt.wantPosts)
			}
		})
	}
}

func TestTransferLeaderAndLeave(t *testing.T) {
	f := newFakeNode(t)
	r := runCLI(t, runOpts{}, "transfer-leader", "n2", "--addr", f.srv.URL, "--token", token)
	if r.code != exitOK || !strings.Contains(r.stdout, "the leader is now n2 (a93d0c51)") {
		t.Fatalf("transfer-leader n2: %+v", r)
	}
	r = runCLI(t, runOpts{}, "transfer-leader", "--addr", f.srv.URL, "--token", token)
	if r.code != exitOK {
		t.Fatalf("transfer-leader: %+v", r)
	}
	r = runCLI(t, runOpts{}, "leave", "--addr", f.srv.URL, "--token", token)
	if r.code != exitOK || !strings.Contains(r.stdout, "node c27e8b40 left the cluster") {
		t.Fatalf("leave: %+v", r)
	}
	want := []string{
		web.PathTransferLeader + ` {"id":"a93d0c51-7e2b-4f6a-8c1d-2b3e4f5a6b72"}`,
		web.PathTransferLeader + ` {}`,
		web.PathLeave + ` {}`,
	}
	if got := f.postsMade(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("posts %q\nwant %q", got, want)
	}
}

func TestSnapshotSaveAndRestore(t *testing.T) {
	f := newFakeNode(t)
	f.snapshot = bytes.Repeat([]byte("surge snapshot bytes "), 50_000) // ~1 MB
	dir := t.TempDir()
	path := filepath.Join(dir, "backup.snapshot")

	r := runCLI(t, runOpts{stderrTTY: true}, "snapshot", "save", path, "--addr", f.srv.URL, "--token", token)
	if r.code != exitOK {
		t.Fatalf("save: %+v", r)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, f.snapshot) {
		t.Fatalf("saved %d bytes (%v), want %d", len(got), err, len(f.snapshot))
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file mode %v, want 0600", st.Mode().Perm())
	}
	if !strings.Contains(r.stderr, "100%") || !strings.Contains(r.stderr, "/s") || !strings.Contains(r.stderr, "saved snapshot to") {
		t.Fatalf("progress on a terminal: %q", r.stderr)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("leftover files: %v", entries)
	}

	// Without a terminal: no progress bar.
	r = runCLI(t, runOpts{}, "snapshot", "save", path, "--addr", f.srv.URL, "--token", token)
	if r.code != exitOK || strings.Contains(r.stderr, "\r") {
		t.Fatalf("save without a terminal: %+v", r)
	}

	// Restore needs a confirmation.
	r = runCLI(t, runOpts{}, "snapshot", "restore", path, "--addr", f.srv.URL, "--token", token)
	if r.code != exitError || !strings.Contains(r.stderr, "pass --yes") {
		t.Fatalf("restore without --yes: %+v", r)
	}
	r = runCLI(t, runOpts{stderrTTY: true}, "snapshot", "restore", path, "--yes", "--addr", f.srv.URL, "--token", token)
	if r.code != exitOK || !strings.Contains(r.stdout, "restored the cluster's state") || !strings.Contains(r.stderr, "restore [") {
		t.Fatalf("restore: %+v", r)
	}
	f.mu.Lock()
	restored := f.restored
	f.mu.Unlock()
	if !bytes.Equal(restored, f.snapshot) {
		t.Fatalf("node got %d bytes, want %d", len(restored), len(f.snapshot))
	}
	r = runCLI(t, runOpts{}, "snapshot", "restore", filepath.Join(dir, "missing"), "--yes", "--addr", f.srv.URL, "--token", token)
	if r.code != exitError || !strings.Contains(r.stderr, "no such file") {
		t.Fatalf("restore of a missing file: %+v", r)
	}
}

func TestExport(t *testing.T) {
	f := newFakeNode(t)
	f.csv = "id,created_at,status\nd1,2026-03-01T12:30:00Z,succeeded\n"
	dir := t.TempDir()
	path := filepath.Join(dir, "donations.csv")
	r := runCLI(t, runOpts{}, "export", path, "--addr", f.srv.URL, "--token", token)
	if r.code != exitOK {
		t.Fatalf("export: %+v", r)
	}
	if b, _ := os.ReadFile(path); string(b) != f.csv {
		t.Fatalf("exported %q", b)
	}
	r = runCLI(t, runOpts{}, "export", "--addr", f.srv.URL, "--token", token)
	if r.code != exitOK || r.stdout != f.csv {
		t.Fatalf("export to stdout: %+v", r)
	}

	// A stream cut short is an error and leaves no file behind.
	f.cutCSV = true
	cut := filepath.Join(dir, "cut.csv")
	r = runCLI(t, runOpts{}, "export", cut, "--addr", f.srv.URL, "--token", token)
	if r.code != exitError || !strings.Contains(r.stderr, "incomplete") {
		t.Fatalf("cut export: %+v", r)
	}
	if _, err := os.Stat(cut); !os.IsNotExist(err) {
		t.Fatalf("cut export left a file: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("leftover files: %v", entries)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
