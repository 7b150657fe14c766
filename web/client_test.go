package web

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

func TestNewClient(t *testing.T) {
	tests := []struct {
		in, token string
		want      string
		wantErr   bool
	}{
		{"http://127.0.0.1:8080", "", "http://127.0.0.1:8080", false},
		{"http://127.0.0.1:8080/", "", "http://127.0.0.1:8080", false},
		{"127.0.0.1:8080", "", "http://127.0.0.1:8080", false},
		{"https://admin.example.org", "", "https://admin.example.org", false},
		{" http://node1:8080?x=1#f ", "", "http://node1:8080", false},
		{"ftp://node1", "", "", true},
		{"http://", "", "", true},
		{"http://[::1", "", "", true},
		{"http://node1:8080", "tok\nInjected: 1", "", true},
	}
	for _, tt := range tests {
		c, err := NewClient(tt.in, tt.token)
		if tt.wantErr {
			if err == nil {
				t.Errorf("NewClient(%q) accepted", tt.in)
			}
			continue
		}
		if err != nil || c.BaseURL() != tt.want {
			t.Errorf("NewClient(%q) = %v, %v; want %s", tt.in, c, err, tt.want)
		}
	}
}

func TestClientDecodesErrors(t *testing.T) {
	f := newFakeCluster()
	srv, _ := adminServer(t, f, nil)
	ctx := context.Background()

	c, _ := NewClient(srv.URL, "wrong-token-wrong-token")
	_, err := c.Status(ctx)
	if !isAPIError(err, 401, "unauthorized") {
		t.Fatalf("status with a wrong token = %v", err)
	}
	if !strings.Contains(err.Error(), "admin token") {
		t.Fatalf("error text %q should say what is wrong", err)
	}

	c, _ = NewClient(srv.URL, testToken)
	if _, err := c.Remove(ctx, "ghost"); !isAPIError(err, 404, "not_found") {
		t.Fatalf("remove ghost = %v", err)
	}

	// Something that is not a Surge node: the status and body are reported.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad gateway from a proxy", http.StatusBadGateway)
	}))
	defer plain.Close()
	c, _ = NewClient(plain.URL, "")
	_, err = c.Members(ctx)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 502 || !strings.Contains(ae.Message, "bad gateway from a proxy") {
		t.Fatalf("non-JSON error = %v", err)
	}

	// A 200 that is not JSON is an error, not a zero value.
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("<html>hello</html>"))
	}))
	defer html.Close()
	c, _ = NewClient(html.URL, "")
	if _, err := c.Status(ctx); err == nil || !strings.Contains(err.Error(), "not JSON") {
		t.Fatalf("status from an HTML page = %v", err)
	}

	// Nobody listening.
	c, _ = NewClient("http://127.0.0.1:1", "", WithTimeout(time.Second))
	if _, err := c.Status(ctx); err == nil {
		t.Fatal("status from a closed port succeeded")
	}
}

func TestClientActions(t *testing.T) {
	f := newFakeCluster()
	srv, _ := adminServer(t, f, nil)
	c, _ := NewClient(srv.URL, testToken)
	ctx := context.Background()
	if r, err := c.Leave(ctx); err != nil || !r.OK || r.Action != "leave" {
		t.Fatalf("leave = %+v %v", r, err)
	}
	if _, err := c.Remove(ctx, f.id(2)); !isAPIError(err, 409, "conflict") {
		t.Fatalf("remove of an alive member = %v", err)
	}
	f.update(func(f *fakeCluster) { f.members[2].Gossip = "dead" })
	if r, err := c.Remove(ctx, f.id(2)); err != nil || r.ID != f.id(2) {
		t.Fatalf("remove = %+v %v", r, err)
	}
	if r, err := c.TransferLeader(ctx, ""); err != nil || r.LeaderID != f.id(1) {
		t.Fatalf("transfer = %+v %v", r, err)
	}
	raw, err := c.RawJSON(ctx, http.MethodGet, PathStatus, nil)
	if err != nil || !bytes.Contains(raw, []byte(`"verdict":"degraded"`)) || !bytes.Contains(raw, []byte(`n3 is dead in gossip`)) {
		t.Fatalf("raw status = %s %v", raw, err)
	}
	want := []string{"leave", "remove " + f.id(2), "transfer "}
	if got := f.called(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("calls %q, want %q", got, want)
	}
}

// TestClientRestoreFollowsLeader asks a follower first: it answers
// not_leader with the leader's address and the client sends the whole
// snapshot again to the leader.
func TestClientRestoreFollowsLeader(t *testing.T) {
	leader := newFakeCluster()
	leaderSrv, _ := adminServer(t, leader, nil)

	follower := newFakeCluster()
	follower.setLocal(1)
	follower.members[0].HTTPAddr = strings.TrimPrefix(leaderSrv.URL, "http://")
	var followerHits atomic.Int32
	fws := newOpsServer(t, nil)
	fws.Echo().Pre(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error { followerHits.Add(1); return next(c) }
	})
	cfg := DefaultAdminConfig()
	cfg.Token = testToken
	if err := RegisterAdmin(fws.Echo(), cfg, follower); err != nil {
		t.Fatal(err)
	}
	followerSrv := httptest.NewServer(fws.Handler())
	defer followerSrv.Close()

	snap := append([]byte("SNAP"), bytes.Repeat([]byte("x"), 100_000)...)
	c, _ := NewClient(followerSrv.URL, testToken)
	r, err := c.Restore(context.Background(), bytes.NewReader(snap))
	if err != nil || !r.OK {
		t.Fatalf("restore via follower = %+v %v", r, err)
	}
	if got := leader.restoredBytes(); !bytes.Equal(got, snap) {
		t.Fatalf("leader restored %d bytes, want %d", len(got), len(snap))
	}
	if followerHits.Load() != 1 || len(follower.called()) != 0 {
		t.Fatalf("follower hits %d calls %q", followerHits.Load(), follower.called())
	}
}

// readSeekCounter counts the bytes read, to show a retry rewinds.
type readSeekCounter struct {
	io.ReadSeeker
	n int
}

func (r *readSeekCounter) Read(p []byte) (int, error) {
	n, err := r.ReadSeeker.Read(p)
	r.n += n
	return n, err
}

func TestClientRestoreNoLeaderKnown(t *testing.T) {
	f := newFakeCluster()
	f.setLocal(1)
	f.local.LeaderID = ""
	srv, _ := adminServer(t, f, nil)
	c, _ := NewClient(srv.URL, testToken)
	body := &readSeekCounter{ReadSeeker: bytes.NewReader([]byte("SNAP"))}
	_, err := c.Restore(context.Background(), body)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "not_leader" || ae.LeaderHTTPAddr != "" {
		t.Fatalf("restore with no leader = %v", err)
	}
}
