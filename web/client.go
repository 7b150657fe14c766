package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/surgefund/surge/donation"
)

// The admin API's JSON types, shared by the handlers (admin.go) and the
// Client that cmd/clusterctl uses.

// Verdicts of ClusterStatus.
const (
	VerdictHealthy     = "healthy"
	VerdictDegraded    = "degraded"
	VerdictUnavailable = "unavailable"
)

// ClusterStatus is the body of GET /admin/v1/status: the whole cluster as
// one node sees it, each member's figures asked from that member.
type ClusterStatus struct {
	NodeID   string `json:"node_id"`   // the node that answered
	LeaderID string `json:"leader_id"` // "" when no leader is known
	// Verdict is healthy (leader known, every voter and member alive,
	// reachable and caught up), degraded (leader known, something is not)
	// or unavailable (no leader: writes fail).
	Verdict string `json:"verdict"`
	// FailureTolerance is how many more voters may fail before the cluster
	// loses its quorum: healthy voters minus the quorum, never below 0.
	FailureTolerance int `json:"failure_tolerance"`
	Voters           int `json:"voters"`
	Quorum           int `json:"quorum"`
	// Problems says in words why the verdict is not healthy.
	Problems []string       `json:"problems,omitempty"`
	Members  []MemberStatus `json:"members"`
}

// MemberStatus is one member in ClusterStatus. Role and Gossip are the
// answering node's view; the figures are the member's own answer, absent
// (zero) when it was not reachable.
type MemberStatus struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Role     string `json:"role"`   // leader|voter|nonvoter|none
	Gossip   string `json:"gossip"` // alive|suspect|dead|left
	HTTPAddr string `json:"http_addr"`
	RaftAddr string `json:"raft_addr"`
	State    string `json:"state,omitempty"` // the member's Raft state
	Term     uint64 `json:"term"`

	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	LastIndex    uint64 `json:"last_index"`
	// Lag is how many entries the member's applied index trails the
	// leader's commit index.
	Lag uint64 `json:"lag"`
	// LastContact is how long ago the member last heard from the leader, as
	// a Go duration ("35ms"); "" on the leader and when unknown.
	LastContact   string `json:"last_contact"`
	LastContactMS int64  `json:"last_contact_ms"` // -1 unknown, 0 on the leader

	RaisedMinor int64  `json:"raised_minor"` // the member's public total
	Donations   int64  `json:"donations"`
	Currency    string `json:"currency,omitempty"`
	Version     string `json:"version"`
	Reachable   bool   `json:"reachable"`
	Error       string `json:"error,omitempty"` // why it was not reachable
}

// RaisedDisplay formats RaisedMinor in the member's currency ("1,234.50").
func (m MemberStatus) RaisedDisplay() string {
	c := donation.Currency(m.Currency)
	if !c.Valid() {
		return fmt.Sprint(m.RaisedMinor)
	}
	return donation.FormatMinor(m.RaisedMinor, c)
}

// ClusterMember is one entry of GET /admin/v1/members: a gossip member
// joined with its place in the Raft configuration.
type ClusterMember struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	GossipAddr string `json:"gossip_addr"`
	RaftAddr   string `json:"raft_addr"`
	HTTPAddr   string `json:"http_addr"`
	Version    string `json:"version"`
	Gossip     string `json:"gossip"` // alive|suspect|dead|left
	Role       string `json:"role"`   // leader|voter|nonvoter|none
}

// RaftPeer is one server of the Raft configuration (GET /admin/v1/peers).
type RaftPeer struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"` // voter|nonvoter
	Leader   bool   `json:"leader"`
}

type membersBody struct {
	Members []ClusterMember `json:"members"`
}

type peersBody struct {
	Peers []RaftPeer `json:"peers"`
}

// ActionResult is the body of the POST endpoints.
type ActionResult struct {
	OK       bool   `json:"ok"`
	Action   string `json:"action"`
	ID       string `json:"id,omitempty"`        // the member acted on
	LeaderID string `json:"leader_id,omitempty"` // the leader after the action, when known
	Message  string `json:"message,omitempty"`
}

// APIError is an error answer of the admin API, decoded from the JSON
// error shape.
type APIError struct {
	Status  int    // HTTP status
	Code    string // snake_case code, e.g. "unauthorized", "not_leader"
	Message string
	// LeaderHTTPAddr comes with code not_leader (header X-Surge-Leader):
	// where to retry.
	LeaderHTTPAddr string
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%d %s", e.Status, e.Code)
	}
	return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code)
}

// Client calls a node's admin API. It is what cmd/clusterctl uses; it is
// safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// ClientOption adjusts a Client.
type ClientOption func(*Client)

// WithHTTPClient makes the Client use hc (its Timeout should be 0: the
// snapshot and export streams may take long; bound calls with a context).
func WithHTTPClient(hc *http.Client) ClientOption {
	return func(c *Client) { c.hc = hc }
}

// WithTimeout bounds connecting and waiting for response headers; it does
// not cut off a long snapshot or export stream once it flows.
func WithTimeout(d time.Duration) ClientOption {
	return func(c *Client) {
		c.hc = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: d, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   d,
			ResponseHeaderTimeout: d,
			IdleConnTimeout:       30 * time.Second,
		}}
	}
}

// NewClient returns a client for the node at baseURL ("http://host:8080";
// a bare "host:port" means http). token is the admin bearer token; empty
// sends none (the node then answers loopback callers only).
func NewClient(baseURL, token string, opts ...ClientOption) (*Client, error) {
	s := strings.TrimSpace(baseURL)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("admin address %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("admin address %q: want http(s)://host:port", baseURL)
	}
	if strings.ContainsAny(token, "\r\n") {
		return nil, errors.New("admin token: must be one line")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	c := &Client{base: u, token: token}
	WithTimeout(10 * time.Second)(c)
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// BaseURL is the node the client talks to.
func (c *Client) BaseURL() string { return c.base.String() }

// at returns a copy of the client aimed at another node's HTTP address.
func (c *Client) at(httpAddr string) *Client {
	u := *c.base
	u.Host = httpAddr
	return &Client{base: &u, token: c.token, hc: c.hc}
}

func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// send performs req and returns the response when it is 2xx; otherwise it
// decodes the error shape into an *APIError.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, decodeAPIError(resp)
}

func decodeAPIError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body errorBody
	e := &APIError{Status: resp.StatusCode, LeaderHTTPAddr: resp.Header.Get(HeaderLeader)}
	if json.Unmarshal(b, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message = body.Error.Code, body.Error.Message
		return e
	}
	e.Code = "http_" + strconv.Itoa(resp.StatusCode)
	msg := strings.TrimSpace(string(b))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e.Message = "unexpected answer from " + resp.Request.URL.Host + ": " + msg
	return e
}

// RawJSON performs a JSON call and returns the response body unparsed
// (clusterctl --json prints it). in, when not nil, is sent as the JSON
// request body.
func (c *Client) RawJSON(ctx context.Context, method, path string, in any) (json.RawMessage, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encode: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read: %w", method, path, err)
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("%s %s: the answer is not JSON", method, path)
	}
	return b, nil
}

func (c *Client) callJSON(ctx context.Context, method, path string, in, out any) error {
	raw, err := c.RawJSON(ctx, method, path, in)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: decode: %w", method, path, err)
	}
	return nil
}

// Admin API paths.
const (
	PathStatus         = "/admin/v1/status"
	PathMembers        = "/admin/v1/members"
	PathPeers          = "/admin/v1/peers"
	PathLeave          = "/admin/v1/leave"
	PathRemove         = "/admin/v1/remove"
	PathTransferLeader = "/admin/v1/transfer-leader"
	PathSnapshot       = "/admin/v1/snapshot"
	PathRestore        = "/admin/v1/restore"
	PathExport         = "/admin/v1/export"
)

// Status returns GET /admin/v1/status.
func (c *Client) Status(ctx context.Context) (ClusterStatus, error) {
	var s ClusterStatus
	err := c.callJSON(ctx, http.MethodGet, PathStatus, nil, &s)
	return s, err
}

// Members returns the gossip view (GET /admin/v1/members).
func (c *Client) Members(ctx context.Context) ([]ClusterMember, error) {
	var b membersBody
	err := c.callJSON(ctx, http.MethodGet, PathMembers, nil, &b)
	return b.Members, err
}

// Peers returns the Raft configuration (GET /admin/v1/peers).
func (c *Client) Peers(ctx context.Context) ([]RaftPeer, error) {
	var b peersBody
	err := c.callJSON(ctx, http.MethodGet, PathPeers, nil, &b)
	return b.Peers, err
}

// IDRequest is the body of remove and transfer-leader.
type IDRequest struct {
	ID string `json:"id,omitempty"`
}

// Leave makes the node the client talks to leave the cluster gracefully.
func (c *Client) Leave(ctx context.Context) (ActionResult, error) {
	var r ActionResult
	err := c.callJSON(ctx, http.MethodPost, PathLeave, struct{}{}, &r)
	return r, err
}

// Remove removes member id from the Raft configuration.
func (c *Client) Remove(ctx context.Context, id string) (ActionResult, error) {
	var r ActionResult
	err := c.callJSON(ctx, http.MethodPost, PathRemove, IDRequest{ID: id}, &r)
	return r, err
}

// TransferLeader hands leadership to voter id, or to any voter when id is "".
func (c *Client) TransferLeader(ctx context.Context, id string) (ActionResult, error) {
	var r ActionResult
	err := c.callJSON(ctx, http.MethodPost, PathTransferLeader, IDRequest{ID: id}, &r)
	return r, err
}

// Snapshot opens a snapshot stream of the cluster's state. size is -1 when
// the node did not say. The caller closes the reader.
func (c *Client) Snapshot(ctx context.Context) (rc io.ReadCloser, size int64, err error) {
	resp, err := c.stream(ctx, PathSnapshot)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// Export opens the CSV export of every donation. The caller closes it.
// Reading it to the end fails with ErrIncompleteExport when the node cut
// the stream short (its completion trailer is missing).
func (c *Client) Export(ctx context.Context) (io.ReadCloser, error) {
	resp, err := c.stream(ctx, PathExport)
	if err != nil {
		return nil, err
	}
	return &exportBody{resp: resp}, nil
}

// ErrIncompleteExport means an export stream ended without the node's
// completion trailer: rows are missing.
var ErrIncompleteExport = errors.New("export incomplete: the node cut the stream short")

type exportBody struct {
	resp *http.Response
}

func (e *exportBody) Read(p []byte) (int, error) {
	n, err := e.resp.Body.Read(p)
	if err == io.EOF && e.resp.Trailer.Get(TrailerExportComplete) != "true" {
		return n, ErrIncompleteExport
	}
	return n, err
}

func (e *exportBody) Close() error { return e.resp.Body.Close() }

func (c *Client) stream(ctx context.Context, path string) (*http.Response, error) {
	req, err := c.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "*/*")
	return c.send(req)
}

// Restore replaces the whole cluster's state with the snapshot in body.
// Only the leader restores: when the node answers not_leader with the
// leader's address, Restore rewinds body and retries there once.
func (c *Client) Restore(ctx context.Context, body io.ReadSeeker) (ActionResult, error) {
	size, err := body.Seek(0, io.SeekEnd)
	if err != nil {
		return ActionResult{}, fmt.Errorf("restore: size of the snapshot: %w", err)
	}
	r, err := c.restoreOnce(ctx, body, size)
	var ae *APIError
	if errors.As(err, &ae) && ae.Code == "not_leader" && ae.LeaderHTTPAddr != "" && ae.LeaderHTTPAddr != c.base.Host {
		return c.at(ae.LeaderHTTPAddr).restoreOnce(ctx, body, size)
	}
	return r, err
}

func (c *Client) restoreOnce(ctx context.Context, body io.ReadSeeker, size int64) (ActionResult, error) {
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return ActionResult{}, fmt.Errorf("restore: rewind the snapshot: %w", err)
	}
	req, err := c.newRequest(ctx, http.MethodPost, PathRestore, io.NopCloser(body))
	if err != nil {
		return ActionResult{}, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.send(req)
	if err != nil {
		return ActionResult{}, err
	}
	defer resp.Body.Close()
	var r ActionResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r); err != nil {
		return ActionResult{}, fmt.Errorf("restore: decode: %w", err)
	}
	return r, nil
}
