package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/surgefund/surge/donation"
)

// AdminConfig configures the admin API under /admin/v1/.
type AdminConfig struct {
	// Token is the bearer token operators send (Authorization: Bearer ...).
	// Empty: the admin API answers loopback callers only.
	Token string
	// PeerTimeout bounds asking one member for its status (GET status asks
	// every member at once).
	PeerTimeout time.Duration
	// ActionTimeout bounds leave, remove and transfer-leader.
	ActionTimeout time.Duration
	// MaxLag is how many entries a member may trail the leader's commit
	// index before the status calls it lagging (degraded).
	MaxLag uint64
	// MaxRestoreBytes bounds the snapshot a restore accepts.
	MaxRestoreBytes int64
	// Logger receives the audit log of admin actions. Nil discards.
	Logger *slog.Logger
}

// DefaultAdminConfig returns the defaults: no token (loopback only), 1 s
// per peer, 30 s per action, lag threshold 1000 entries, 8 GiB restores.
func DefaultAdminConfig() AdminConfig {
	return AdminConfig{
		PeerTimeout:     time.Second,
		ActionTimeout:   30 * time.Second,
		MaxLag:          1000,
		MaxRestoreBytes: 8 << 30,
	}
}

// minTokenLen keeps guessable tokens out.
const minTokenLen = 16

// Validate names the first bad field.
func (c AdminConfig) Validate() error {
	if c.Token != "" {
		if len(c.Token) < minTokenLen {
			return fmt.Errorf("admin token: must be at least %d characters", minTokenLen)
		}
		for i := 0; i < len(c.Token); i++ {
			if b := c.Token[i]; b <= ' ' || b >= 0x7f {
				return errors.New("admin token: must be printable ASCII without spaces")
			}
		}
	}
	if c.PeerTimeout <= 0 || c.PeerTimeout > time.Minute {
		return fmt.Errorf("admin peer timeout: %s must be in (0, 1m]", c.PeerTimeout)
	}
	if c.ActionTimeout <= 0 {
		return fmt.Errorf("admin action timeout: %s must be positive", c.ActionTimeout)
	}
	if c.MaxRestoreBytes <= 0 {
		return fmt.Errorf("admin max restore bytes: %d must be positive", c.MaxRestoreBytes)
	}
	return nil
}

// NodeStatus is one node's own view of itself, as ClusterAdmin reports it.
type NodeStatus struct {
	ID, Name, HTTPAddr, RaftAddr string
	Role                         string // leader|voter|nonvoter|none
	State                        string // Raft state: Leader, Follower, Candidate, Shutdown
	Term                         uint64
	CommitIndex                  uint64
	AppliedIndex                 uint64
	LastIndex                    uint64
	LastContactMS                int64 // -1 unknown, 0 on the leader
	LeaderID                     string
	Version                      string
	RaisedMinor, Donations       int64 // the node's public total
	Currency                     string
}

// ClusterAdmin is what the admin API needs from the node (the node adapts
// the cluster and the storage FSM to it).
type ClusterAdmin interface {
	// LocalStatus is this node's own view.
	LocalStatus() NodeStatus
	// Members is the gossip view joined with the Raft configuration.
	Members() []ClusterMember
	// PeerStatus asks member id for its own view.
	PeerStatus(ctx context.Context, id string) (NodeStatus, error)
	// Leave makes this node leave the cluster gracefully.
	Leave(ctx context.Context) error
	// RemoveServer removes member id from the Raft configuration.
	RemoveServer(ctx context.Context, id string) error
	// TransferLeadership hands leadership to voter id ("" = any voter).
	TransferLeadership(ctx context.Context, id string) error
	// Snapshot opens a snapshot stream of the state; size is -1 if unknown.
	Snapshot(ctx context.Context) (size int64, rc io.ReadCloser, err error)
	// Restore replaces the whole cluster's state with the stream r (leader
	// only: ErrNotLeader / *NotLeaderError elsewhere; ErrBadSnapshot when r
	// is not a valid snapshot).
	Restore(ctx context.Context, r io.Reader) error
	// Export calls fn for every donation, in ID order.
	Export(ctx context.Context, fn func(donation.Donation) error) error
}

// Errors a ClusterAdmin returns (wrapped) for the admin API to map.
var (
	ErrNotLeader     = errors.New("not the leader")
	ErrUnknownMember = errors.New("unknown member")
	ErrUnsafeChange  = errors.New("change would break the quorum")
	ErrBadSnapshot   = errors.New("not a valid snapshot")
)

// NotLeaderError says which node leads, so the caller can retry there. It
// matches ErrNotLeader with errors.Is.
type NotLeaderError struct {
	LeaderID       string
	LeaderHTTPAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderHTTPAddr == "" {
		return "this node is not the leader and no leader is known"
	}
	return "this node is not the leader; the leader is at " + e.LeaderHTTPAddr
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// errTooLarge is a restore body over MaxRestoreBytes.
var errTooLarge = errors.New("request body too large")

// HeaderLeader carries the leader's HTTP address (host:port) with a
// not_leader error, so a client can retry there.
const HeaderLeader = "X-Surge-Leader"

func adminErrorf(code, format string, a ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, a...)}
}

// adminError turns what a ClusterAdmin returned into an *Error for the
// server's error handler, which maps codes to statuses in one place
// (statusFor) and writes the JSON error shape. Admin callers are
// operators: the message carries the cause.
func adminError(c echo.Context, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var nl *NotLeaderError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &nl):
		if nl.LeaderHTTPAddr != "" {
			c.Response().Header().Set(HeaderLeader, nl.LeaderHTTPAddr)
		}
		return &Error{Code: CodeNotLeader, Message: nl.Error(), Err: err}
	case errors.Is(err, ErrNotLeader):
		return &Error{Code: CodeNotLeader, Message: err.Error(), Err: err}
	case errors.Is(err, ErrUnknownMember):
		return &Error{Code: CodeNotFound, Message: err.Error(), Err: err}
	case errors.Is(err, ErrUnsafeChange):
		return &Error{Code: CodeConflict, Message: err.Error(), Err: err}
	case errors.Is(err, ErrBadSnapshot):
		return &Error{Code: CodeBadRequest, Message: err.Error(), Err: err}
	case errors.Is(err, errTooLarge), errors.As(err, &mbe):
		return &Error{Code: CodeBodyTooLarge, Message: err.Error(), Err: err}
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: CodeUnavailable, Message: err.Error(), RetryAfter: 1, Err: err}
	case errors.Is(err, context.Canceled):
		return &Error{Code: CodeUnavailable, Message: "the request was canceled", Err: err}
	}
	return &Error{Code: CodeInternal, Message: "admin: " + err.Error(), Err: err}
}

// AdminAuth is the admin API's access check, exported so other operator
// endpoints (e.g. /metrics) can share it: with a token, the request must
// carry "Authorization: Bearer <token>" (compared in constant time);
// without one, only loopback callers that name the host by IP or
// "localhost" are answered (a DNS-rebinding page cannot pass). Unsafe
// methods must not come from a browser on another origin.
func AdminAuth(cfg AdminConfig) echo.MiddlewareFunc {
	want := sha256.Sum256([]byte(cfg.Token))
	cop := http.NewCrossOriginProtection()
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			h := c.Response().Header()
			h.Set("Cache-Control", "no-store")
			if cfg.Token != "" {
				got, ok := bearerToken(r.Header.Get("Authorization"))
				sum := sha256.Sum256([]byte(got))
				if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
					h.Set("WWW-Authenticate", `Bearer realm="surge-admin"`)
					return adminErrorf(CodeUnauthorized, "missing or wrong admin token")
				}
			} else if !loopbackPeer(r.RemoteAddr) || !literalHost(r.Host) {
				h.Set("WWW-Authenticate", `Bearer realm="surge-admin"`)
				return adminErrorf(CodeUnauthorized, "no admin token is configured: the admin API answers loopback callers only")
			}
			if err := cop.Check(r); err != nil {
				return adminErrorf(CodeCrossOrigin, "cross-origin admin requests are refused")
			}
			return next(c)
		}
	}
}

func bearerToken(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

func loopbackPeer(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// literalHost reports whether the Host header names an IP or localhost.
func literalHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return strings.EqualFold(host, "localhost") || net.ParseIP(host) != nil
}

// RegisterAdmin mounts the admin API under /admin/v1/ on e.
func RegisterAdmin(e *echo.Echo, cfg AdminConfig, a ClusterAdmin) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if a == nil {
		return errors.New("admin: no cluster to administer")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &adminAPI{cfg: cfg, a: a, log: log}
	// Middleware per route, not on a group: an echo group with middleware
	// answers a wrong method with 404 instead of 405.
	mw := []echo.MiddlewareFunc{AdminAuth(cfg)}
	e.GET(PathStatus, h.status, mw...)
	e.GET(PathMembers, h.members, mw...)
	e.GET(PathPeers, h.peers, mw...)
	e.POST(PathLeave, h.leave, mw...)
	e.POST(PathRemove, h.remove, mw...)
	e.POST(PathTransferLeader, h.transferLeader, mw...)
	e.GET(PathSnapshot, h.snapshot, mw...)
	e.POST(PathRestore, h.restore, mw...)
	e.GET(PathExport, h.export, mw...)
	return nil
}

type adminAPI struct {
	cfg AdminConfig
	a   ClusterAdmin
	log *slog.Logger
}

// audit records an admin action with the caller's identity (address and
// request ID; never the token).
func (h *adminAPI) audit(c echo.Context, action, target string, err error) {
	attrs := []any{"action", action, "remote", c.Request().RemoteAddr,
		"request_id", c.Response().Header().Get(echo.HeaderXRequestID)}
	if target != "" {
		attrs = append(attrs, "target", target)
	}
	if err != nil {
		h.log.Warn("admin action failed", append(attrs, "err", err)...)
		return
	}
	h.log.Info("admin action", attrs...)
}

func (h *adminAPI) status(c echo.Context) error {
	return c.JSON(http.StatusOK, BuildClusterStatus(c.Request().Context(), h.a, h.cfg.PeerTimeout, h.cfg.MaxLag))
}

func (h *adminAPI) members(c echo.Context) error {
	ms := h.a.Members()
	if ms == nil {
		ms = []ClusterMember{}
	}
	return c.JSON(http.StatusOK, membersBody{Members: ms})
}

func (h *adminAPI) peers(c echo.Context) error {
	return c.JSON(http.StatusOK, peersBody{Peers: peersOf(h.a.Members())})
}

func peersOf(ms []ClusterMember) []RaftPeer {
	out := []RaftPeer{}
	for _, m := range ms {
		p := RaftPeer{ID: m.ID, Name: m.Name, Address: m.RaftAddr}
		switch m.Role {
		case "leader":
			p.Suffrage, p.Leader = "voter", true
		case "voter":
			p.Suffrage = "voter"
		case "nonvoter":
			p.Suffrage = "nonvoter"
		default:
			continue // not in the Raft configuration
		}
		out = append(out, p)
	}
	return out
}

// maxIDLen bounds member IDs in requests (ours are 36-character UUIDs).
const maxIDLen = 128

// readIDRequest decodes {"id": "..."} strictly. An empty body is {}.
func readIDRequest(c echo.Context) (string, error) {
	r := c.Request()
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return "", adminErrorf(CodeUnsupportedMediaType, "send the body as application/json")
		}
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 4097))
	if err != nil {
		return "", adminErrorf(CodeInvalidJSON, "cannot read the body: %v", err)
	}
	if len(b) > 4096 {
		return "", adminErrorf(CodeBodyTooLarge, "the body must be under 4 KiB")
	}
	var req IDRequest
	if len(strings.TrimSpace(string(b))) > 0 {
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return "", adminErrorf(CodeInvalidJSON, "the body must be {\"id\":\"...\"}: %v", err)
		}
		if dec.More() {
			return "", adminErrorf(CodeInvalidJSON, "unexpected data after the JSON object")
		}
	}
	if len(req.ID) > maxIDLen {
		return "", adminErrorf(CodeInvalidID, "id is longer than %d characters", maxIDLen)
	}
	for i := 0; i < len(req.ID); i++ {
		if b := req.ID[i]; b <= ' ' || b >= 0x7f {
			return "", adminErrorf(CodeInvalidID, "id must be printable ASCII")
		}
	}
	return req.ID, nil
}

func (h *adminAPI) actionContext(c echo.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.Request().Context(), h.cfg.ActionTimeout)
}

func (h *adminAPI) leave(c echo.Context) error {
	if _, err := readIDRequest(c); err != nil {
		return adminError(c, err)
	}
	self := h.a.LocalStatus()
	if self.Role != "none" && voterCount(h.a.Members()) <= 1 && isVoter(self.Role) {
		err := adminErrorf(CodeConflict, "this node is the only voter: the cluster would be gone (stop the node instead)")
		h.audit(c, "leave", self.ID, err)
		return adminError(c, err)
	}
	ctx, cancel := h.actionContext(c)
	defer cancel()
	err := h.a.Leave(ctx)
	h.audit(c, "leave", self.ID, err)
	if err != nil {
		return adminError(c, err)
	}
	return c.JSON(http.StatusOK, ActionResult{OK: true, Action: "leave", ID: self.ID,
		Message: "the node left the cluster; stop its process now"})
}

func (h *adminAPI) remove(c echo.Context) error {
	id, err := readIDRequest(c)
	if err != nil {
		return adminError(c, err)
	}
	if id == "" {
		return adminErrorf(CodeInvalidID, "id is required")
	}
	self := h.a.LocalStatus()
	ms := h.a.Members()
	err = checkRemove(id, self.ID, ms)
	if err == nil {
		ctx, cancel := h.actionContext(c)
		err = h.a.RemoveServer(ctx, id)
		cancel()
	}
	h.audit(c, "remove", id, err)
	if err != nil {
		return adminError(c, err)
	}
	return c.JSON(http.StatusOK, ActionResult{OK: true, Action: "remove", ID: id, LeaderID: h.a.LocalStatus().LeaderID})
}

// checkRemove refuses to remove this node (use leave on it), an unknown
// member, or the last voter.
func checkRemove(id, self string, ms []ClusterMember) error {
	if id == self {
		return adminErrorf(CodeConflict, "this node cannot remove itself: run leave on it, or remove it through another node")
	}
	i := slices.IndexFunc(ms, func(m ClusterMember) bool { return m.ID == id })
	if i < 0 {
		return fmt.Errorf("remove %s: %w", id, ErrUnknownMember)
	}
	if ms[i].Gossip == "alive" {
		// The leader's reconcile adds alive members back at once.
		return adminErrorf(CodeConflict, "%s is alive in gossip and would be added back: run leave on it, or stop it and wait until gossip declares it dead", id)
	}
	if isVoter(ms[i].Role) && voterCount(ms) <= 1 {
		return adminErrorf(CodeConflict, "%s is the only voter: removing it would end the cluster", id)
	}
	return nil
}

func isVoter(role string) bool { return role == "leader" || role == "voter" }

func voterCount(ms []ClusterMember) int {
	n := 0
	for _, m := range ms {
		if isVoter(m.Role) {
			n++
		}
	}
	return n
}

func (h *adminAPI) transferLeader(c echo.Context) error {
	id, err := readIDRequest(c)
	if err != nil {
		return adminError(c, err)
	}
	if id != "" && !slices.ContainsFunc(h.a.Members(), func(m ClusterMember) bool { return m.ID == id }) {
		err := fmt.Errorf("transfer leadership to %s: %w", id, ErrUnknownMember)
		h.audit(c, "transfer-leader", id, err)
		return adminError(c, err)
	}
	ctx, cancel := h.actionContext(c)
	defer cancel()
	before := h.a.LocalStatus().LeaderID
	err = h.a.TransferLeadership(ctx, id)
	h.audit(c, "transfer-leader", id, err)
	if err != nil {
		return adminError(c, err)
	}
	return c.JSON(http.StatusOK, ActionResult{OK: true, Action: "transfer-leader", ID: id, LeaderID: h.newLeader(ctx, before, id)})
}

// newLeader waits (up to 3 s) until this node knows a leader other than
// before (or id, when given) and returns it; "" if none is known yet.
func (h *adminAPI) newLeader(ctx context.Context, before, id string) string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		l := h.a.LocalStatus().LeaderID
		if l != "" && (l == id || (id == "" && l != before)) {
			return l
		}
		select {
		case <-ctx.Done():
			return l
		case <-t.C:
		}
	}
}

// unlimit lifts the server's read and write deadlines for a long stream.
func unlimit(c echo.Context, read bool) {
	rc := http.NewResponseController(c.Response())
	_ = rc.SetWriteDeadline(time.Time{})
	if read {
		_ = rc.SetReadDeadline(time.Time{})
	}
}

func (h *adminAPI) snapshot(c echo.Context) error {
	ctx := c.Request().Context()
	size, rc, err := h.a.Snapshot(ctx)
	h.audit(c, "snapshot", "", err)
	if err != nil {
		return adminError(c, err)
	}
	defer rc.Close()
	unlimit(c, false)
	hd := c.Response().Header()
	hd.Set(echo.HeaderContentType, "application/octet-stream")
	hd.Set(echo.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="surge-%s.snapshot"`, time.Now().UTC().Format("20060102T150405Z")))
	if size >= 0 {
		hd.Set(echo.HeaderContentLength, strconv.FormatInt(size, 10))
	}
	c.Response().WriteHeader(http.StatusOK)
	if n, err := io.Copy(c.Response(), rc); err != nil {
		// The status is sent; the client sees a short body (Content-Length).
		h.log.Warn("snapshot stream cut short", "bytes", n, "err", err)
	}
	return nil
}

func (h *adminAPI) restore(c echo.Context) error {
	self := h.a.LocalStatus()
	if self.Role != "leader" {
		// Refuse before reading the upload: the client retries on the leader.
		err := leaderError(self.LeaderID, h.a.Members())
		h.audit(c, "restore", "", err)
		return adminError(c, err)
	}
	r := c.Request()
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/octet-stream" {
			return adminError(c, adminErrorf(CodeUnsupportedMediaType, "send the snapshot as application/octet-stream"))
		}
	}
	if r.ContentLength > h.cfg.MaxRestoreBytes {
		return adminError(c, fmt.Errorf("restore of %d bytes (limit %d): %w", r.ContentLength, h.cfg.MaxRestoreBytes, errTooLarge))
	}
	if r.ContentLength == 0 {
		return adminError(c, fmt.Errorf("restore: empty body: %w", ErrBadSnapshot))
	}
	unlimit(c, true)
	body := &limitedBody{r: r.Body, left: h.cfg.MaxRestoreBytes}
	err := h.a.Restore(r.Context(), body)
	if body.over {
		err = fmt.Errorf("restore: over %d bytes: %w", h.cfg.MaxRestoreBytes, errTooLarge)
	}
	h.audit(c, "restore", "", err)
	if err != nil {
		return adminError(c, err)
	}
	return c.JSON(http.StatusOK, ActionResult{OK: true, Action: "restore", LeaderID: h.a.LocalStatus().LeaderID,
		Message: "the cluster's state was replaced by the snapshot"})
}

// leaderError builds the not_leader answer with the leader's HTTP address.
func leaderError(leaderID string, ms []ClusterMember) error {
	e := &NotLeaderError{LeaderID: leaderID}
	for _, m := range ms {
		if m.ID == leaderID && leaderID != "" {
			e.LeaderHTTPAddr = m.HTTPAddr
		}
	}
	return e
}

// limitedBody fails reads past left bytes and remembers that it did.
type limitedBody struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// One more byte tells "exactly at the limit" from "over it".
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			l.over = true
			return 0, errTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// Trailers of GET /admin/v1/export: a stream that lacks them was cut short.
const (
	TrailerExportRows     = "X-Surge-Export-Rows"
	TrailerExportComplete = "X-Surge-Export-Complete"
)

// ExportHeader is the CSV header row of GET /admin/v1/export.
var ExportHeader = []string{"id", "created_at", "status", "amount_minor", "refunded_minor", "currency",
	"provider", "provider_ref", "name", "email", "anonymous", "message"}

func (h *adminAPI) export(c echo.Context) error {
	ctx := c.Request().Context()
	unlimit(c, false)
	hd := c.Response().Header()
	hd.Set(echo.HeaderContentType, "text/csv; charset=utf-8")
	hd.Set(echo.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="surge-donations-%s.csv"`, time.Now().UTC().Format("20060102T150405Z")))
	hd.Set("Trailer", TrailerExportRows+", "+TrailerExportComplete)
	w := csv.NewWriter(c.Response())
	started := false
	rows := 0
	start := func() error {
		if !started {
			started = true
			c.Response().WriteHeader(http.StatusOK)
			return w.Write(ExportHeader)
		}
		return nil
	}
	err := h.a.Export(ctx, func(d donation.Donation) error {
		if err := start(); err != nil {
			return err
		}
		if err := w.Write(exportRow(d)); err != nil {
			return err
		}
		rows++
		if rows%256 == 0 {
			w.Flush()
			return w.Error()
		}
		return nil
	})
	if err == nil {
		err = start()
	}
	if err == nil {
		w.Flush()
		err = w.Error()
	}
	h.audit(c, "export", "", err)
	if err != nil {
		if !started {
			hd.Del("Trailer")
			hd.Del(echo.HeaderContentDisposition)
			return adminError(c, err)
		}
		// Headers are gone: the missing completion trailer tells the
		// client the export is incomplete.
		h.log.Warn("export cut short", "rows", rows, "err", err)
		return nil
	}
	hd.Set(TrailerExportRows, strconv.Itoa(rows))
	hd.Set(TrailerExportComplete, "true")
	return nil
}

func exportRow(d donation.Donation) []string {
	return []string{
		d.ID,
		time.Unix(0, d.CreatedAt).UTC().Format(time.RFC3339),
		string(d.Status),
		strconv.FormatInt(d.Amount.Minor, 10),
		strconv.FormatInt(d.RefundedMinor, 10),
		string(d.Amount.Currency),
		csvText(d.Provider),
		csvText(d.ProviderRef),
		csvText(d.Name),
		csvText(d.Email),
		strconv.FormatBool(d.Anonymous),
		csvText(d.Message),
	}
}

// csvText defuses spreadsheet formulas in text typed by donors (OWASP "CSV
// injection"): a cell starting with = + - @ or a control character gets a
// leading apostrophe, which spreadsheets show as text.
func csvText(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r', '\n':
		return "'" + s
	}
	return s
}

// BuildClusterStatus assembles GET /admin/v1/status: this node's member
// list, each member's own figures asked concurrently (each bounded by
// peerTimeout), and the verdict. A member that does not answer is marked
// unreachable with the error.
func BuildClusterStatus(ctx context.Context, a ClusterAdmin, peerTimeout time.Duration, maxLag uint64) ClusterStatus {
	local := a.LocalStatus()
	ms := a.Members()
	if !slices.ContainsFunc(ms, func(m ClusterMember) bool { return m.ID == local.ID }) {
		ms = append(ms, ClusterMember{ID: local.ID, Name: local.Name, HTTPAddr: local.HTTPAddr, RaftAddr: local.RaftAddr,
			Version: local.Version, Gossip: "alive", Role: local.Role})
	}
	out := make([]MemberStatus, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		out[i] = MemberStatus{ID: m.ID, Name: m.Name, Role: m.Role, Gossip: m.Gossip, HTTPAddr: m.HTTPAddr,
			RaftAddr: m.RaftAddr, Version: m.Version, LastContactMS: -1}
		switch {
		case m.ID == local.ID:
			out[i].fill(local)
		case m.Gossip == "left":
			out[i].Error = "left the cluster"
		default:
			wg.Add(1)
			go func(ms *MemberStatus) {
				defer wg.Done()
				pctx, cancel := context.WithTimeout(ctx, peerTimeout)
				defer cancel()
				st, err := a.PeerStatus(pctx, ms.ID)
				if err != nil {
					ms.Error = err.Error()
					return
				}
				ms.fill(st)
			}(&out[i])
		}
	}
	wg.Wait()
	return judge(local, out, maxLag)
}

// fill copies a member's own answer into its row.
func (m *MemberStatus) fill(s NodeStatus) {
	m.Reachable = true
	if m.Name == "" {
		m.Name = s.Name
	}
	if m.HTTPAddr == "" {
		m.HTTPAddr = s.HTTPAddr
	}
	if m.RaftAddr == "" {
		m.RaftAddr = s.RaftAddr
	}
	if s.Version != "" {
		m.Version = s.Version
	}
	m.State = s.State
	m.Term, m.CommitIndex, m.AppliedIndex, m.LastIndex = s.Term, s.CommitIndex, s.AppliedIndex, s.LastIndex
	m.LastContactMS = s.LastContactMS
	if s.LastContactMS >= 0 && s.State != "Leader" && s.Role != "leader" {
		m.LastContact = (time.Duration(s.LastContactMS) * time.Millisecond).String()
	}
	m.RaisedMinor, m.Donations, m.Currency = s.RaisedMinor, s.Donations, s.Currency
}

// judge computes lag, the verdict and the failure tolerance.
//
//   - unavailable: no leader known, or fewer healthy voters than a quorum;
//   - degraded: a leader, but some member that belongs to the cluster is
//     not alive in gossip, not reachable, lagging, not yet in the Raft
//     configuration, or the leader does not answer;
//   - healthy otherwise.
//
// Members that are out of the Raft configuration and dead or gone from
// gossip (removed nodes that gossip still remembers) are listed but do not
// count.
func judge(local NodeStatus, ms []MemberStatus, maxLag uint64) ClusterStatus {
	s := ClusterStatus{NodeID: local.ID, LeaderID: local.LeaderID}
	slices.SortFunc(ms, func(a, b MemberStatus) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	commit := local.CommitIndex
	leaderListed := false
	for _, m := range ms {
		if m.ID == s.LeaderID {
			leaderListed = true
			if m.Reachable {
				commit = m.CommitIndex
			}
		}
	}
	healthy := 0
	for i := range ms {
		m := &ms[i]
		if m.Reachable && commit > m.AppliedIndex {
			m.Lag = commit - m.AppliedIndex
		}
		label := m.Name
		if label == "" {
			label = shortID(m.ID)
		}
		inConfig := m.Role != "none" && m.Role != ""
		if !inConfig && m.Gossip != "alive" && m.Gossip != "suspect" {
			continue // removed; gossip will forget it
		}
		if isVoter(m.Role) {
			s.Voters++
			if m.Gossip == "alive" && m.Reachable {
				healthy++
			}
		}
		switch {
		case m.Gossip != "alive":
			s.Problems = append(s.Problems, fmt.Sprintf("%s is %s in gossip", label, orUnknown(m.Gossip)))
		case !m.Reachable:
			s.Problems = append(s.Problems, fmt.Sprintf("%s is unreachable: %s", label, m.Error))
		case !inConfig:
			s.Problems = append(s.Problems, fmt.Sprintf("%s is alive but not in the Raft configuration yet", label))
		case m.Lag > maxLag:
			s.Problems = append(s.Problems, fmt.Sprintf("%s trails the leader by %d entries", label, m.Lag))
		}
	}
	s.Members = ms
	if s.Voters > 0 {
		s.Quorum = s.Voters/2 + 1
		s.FailureTolerance = max(0, healthy-s.Quorum)
	}
	switch {
	case s.LeaderID == "":
		s.Verdict = VerdictUnavailable
		s.Problems = append([]string{"no leader is known: writes are failing"}, s.Problems...)
	case healthy < s.Quorum:
		s.Verdict = VerdictUnavailable
		s.Problems = append([]string{fmt.Sprintf("only %d of %d voters are healthy; a quorum needs %d", healthy, s.Voters, s.Quorum)}, s.Problems...)
	case !leaderListed:
		s.Verdict = VerdictDegraded
		s.Problems = append(s.Problems, "the leader "+shortID(s.LeaderID)+" is not among the members")
	case len(s.Problems) > 0:
		s.Verdict = VerdictDegraded
	default:
		s.Verdict = VerdictHealthy
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// shortID is the first 8 characters of an ID, as the CLI shows it.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
