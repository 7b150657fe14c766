package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/surgefund/surge/cluster"
	"github.com/surgefund/surge/donation"
	"github.com/surgefund/surge/payment"
	"github.com/surgefund/surge/site"
	"github.com/surgefund/surge/storage"
	"github.com/surgefund/surge/web"
)

// Node is one running Surge node.
type Node struct {
	cfg    Config
	logger *slog.Logger
	site   fs.FS

	mu        sync.Mutex
	started   bool
	closed    bool
	cancel    context.CancelFunc
	httpLn    net.Listener
	logs      *storage.LogStore
	fsm       *storage.FSM
	pager     *storage.Pager
	cluster   *cluster.Cluster
	dev       *payment.Dev
	web       *web.Server
	serveDone chan error
	id        string
	currency  donation.Currency
}

// New validates cfg and the campaign content. It touches no sockets and
// writes nothing, so a bad configuration stops the node before it opens
// any store.
func New(cfg Config, logger *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var fsys fs.FS = site.FS()
	if cfg.SiteDir != "" {
		st, err := os.Stat(cfg.SiteDir)
		if err != nil || !st.IsDir() {
			return nil, fmt.Errorf("site: %q is not a directory", cfg.SiteDir)
		}
		fsys = os.DirFS(cfg.SiteDir)
	}
	camp, err := web.LoadCampaign(fsys)
	if err != nil {
		return nil, err
	}
	return &Node{cfg: cfg, logger: logger, site: fsys, currency: camp.Currency}, nil
}

// Start opens the stores, starts the cluster and begins serving HTTP.
func (n *Node) Start(ctx context.Context) (err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started || n.closed {
		return errors.New("node: already started or closed")
	}
	n.started = true
	defer func() {
		if err != nil {
			n.closeLocked()
		}
	}()
	ctx, n.cancel = context.WithCancel(ctx)

	if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if n.id, err = loadNodeID(n.cfg.DataDir); err != nil {
		return err
	}
	// Before the stores open: opening reads every table through its
	// mapping, and the pager pages them out as it goes.
	if n.pager, err = storage.StartPager(n.cfg.DataDir, n.cfg.RSSLimit, 0, n.logger.With("component", "pager")); err != nil {
		return err
	}
	if n.pager != nil {
		n.logger.Info("rss limit", "rss_limit", (&ByteSize{N: n.cfg.RSSLimit}).String())
	}
	if n.logs, err = storage.OpenLogStore(filepath.Join(n.cfg.DataDir, "raft"), n.logger.With("component", "raftlog")); err != nil {
		return err
	}
	if n.fsm, err = storage.OpenFSM(filepath.Join(n.cfg.DataDir, "fsm"), n.logger.With("component", "fsm")); err != nil {
		return err
	}
	snaps, err := cluster.OpenSnapshotStore(n.cfg.DataDir, n.logger)
	if err != nil {
		return err
	}
	if err := n.fsm.RestoreFromSnapshotStore(snaps); err != nil {
		return err
	}

	// Listen first: with port 0 the real address is known only now, and it
	// travels in gossip metadata.
	if n.httpLn, err = net.Listen("tcp", n.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("listen http %s: %w", n.cfg.HTTPAddr, err)
	}
	adv := n.cfg.advertiseHost()
	_, httpPort, _ := net.SplitHostPort(n.httpLn.Addr().String())
	httpAdv := net.JoinHostPort(adv, httpPort)
	publicURL := n.cfg.PublicURL
	if publicURL == "" {
		publicURL = "http://" + httpAdv
		if bindHost, _, _ := net.SplitHostPort(n.cfg.HTTPAddr); len(n.cfg.Join) == 0 && isAnyOrLoopback(bindHost) {
			// The embedded single-node default: the donor is on this
			// machine, so keep them on localhost through the gateway.
			publicURL = "http://" + net.JoinHostPort("localhost", httpPort)
		}
	}
	publicURL = strings.TrimRight(publicURL, "/")

	key, _ := n.cfg.gossipKey()
	ccfg := cluster.DefaultConfig()
	ccfg.NodeID = n.id
	ccfg.Name = n.cfg.Name
	ccfg.GossipAddr = n.cfg.GossipAddr
	ccfg.RaftAddr = n.cfg.RaftAddr
	ccfg.AdvertiseHost = adv
	ccfg.HTTPAddr = httpAdv
	ccfg.Join = n.cfg.Join
	ccfg.BootstrapExpect = n.cfg.BootstrapExpect
	ccfg.Voters = n.cfg.Voters
	ccfg.DeadNodeTimeout = n.cfg.DeadNodeTimeout
	ccfg.GossipKey = key
	ccfg.Version = n.cfg.Version
	ccfg.Logger = n.logger.With("component", "cluster")
	ccfg.StatusExtra = n.statusExtra
	m := time.Duration(n.cfg.RaftMultiplier)
	ccfg.HeartbeatTimeout *= m
	ccfg.ElectionTimeout *= m
	ccfg.LeaderLeaseTimeout *= m
	reg, err := newMetricsRegistry()
	if err != nil {
		return err
	}
	nm, err := newNodeMetrics(reg, n.fsm, n.logs, n.pager)
	if err != nil {
		return err
	}
	ccfg.OnApply = nm.ObserveApply
	if n.cluster, err = cluster.New(ccfg, n.fsm, n.logs, n.logs, snaps); err != nil {
		return err
	}
	nm.setCluster(n.cluster)

	dcfg := payment.DefaultDevConfig()
	dcfg.Secret = []byte(n.cfg.DevSecret)
	dcfg.BaseURL = publicURL
	dcfg.Duplicate = n.cfg.DevDuplicate
	dcfg.Reorder = n.cfg.DevReorder
	dcfg.Delay = n.cfg.DevDelay
	dcfg.Fallback = n.memberURLs
	dcfg.Logger = n.logger.With("component", "devgateway")
	if n.dev, err = payment.NewDev(dcfg); err != nil {
		return err
	}

	wcfg := web.DefaultConfig()
	wcfg.PublicURL = publicURL
	wcfg.Site = n.site
	wcfg.Providers = []payment.Provider{n.dev}
	wcfg.DefaultProvider = n.dev.Name()
	wcfg.RateLimit.PerMinute = n.cfg.RateLimit
	wcfg.DisableHotPath = !n.cfg.HotPath
	wcfg.Logger = n.logger.With("component", "web")
	wcfg.Version = n.cfg.Version
	if n.web, err = web.NewServer(wcfg, n.fsm, n, n.cluster); err != nil {
		return err
	}
	if err := n.mountOperatorSurface(reg); err != nil {
		return err
	}

	if err := n.cluster.Start(ctx); err != nil {
		return err
	}
	n.dev.Start(ctx)
	n.web.Start(ctx)
	n.serveDone = make(chan error, 1)
	go func() { n.serveDone <- n.web.Serve(n.httpLn) }()
	n.logger.Info("node started", "id", n.id, "name", n.cfg.Name, "http", n.httpLn.Addr().String(),
		"public_url", publicURL, "gossip", n.cluster.GossipAddr(), "raft", n.cluster.RaftAddr())
	return nil
}

// Propose replicates cmd through Raft and returns the ledger's result. It
// implements web.Proposer.
func (n *Node) Propose(ctx context.Context, cmd donation.Command) (donation.Result, error) {
	b, err := donation.Encode(cmd)
	if err != nil {
		return donation.Result{}, err
	}
	resp, err := n.cluster.Apply(ctx, b)
	if err != nil {
		if errors.Is(err, cluster.ErrNoLeader) || errors.Is(err, cluster.ErrClosed) ||
			errors.Is(err, cluster.ErrNotStarted) || errors.Is(err, context.DeadlineExceeded) {
			return donation.Result{}, fmt.Errorf("%w: %v", web.ErrUnavailable, err)
		}
		return donation.Result{}, err
	}
	return donation.DecodeResult(resp)
}

// mountOperatorSurface adds the admin API and /metrics to the web server.
// The HTTP metrics middleware goes first (Pre) so it also sees the final
// status of 404 and 405 answers. /metrics sits behind the admin check:
// Prometheus needs the bearer token, or must scrape from loopback when no
// token is set.
func (n *Node) mountOperatorSurface(reg *prometheus.Registry) error {
	httpMetrics, err := web.NewMetrics(reg)
	if err != nil {
		return err
	}
	e := n.web.Echo()
	n.web.UseMetrics(httpMetrics) // echo Pre middleware, and the hot path counts into the same series
	acfg := web.DefaultAdminConfig()
	acfg.Token = n.cfg.AdminToken
	acfg.Logger = n.logger.With("component", "admin")
	admin := newClusterAdmin(n.cluster, n.fsm, n.cfg.DataDir, n.logger.With("component", "admin"))
	if err := web.RegisterAdmin(e, acfg, admin); err != nil {
		return err
	}
	e.GET("/metrics", echo.WrapHandler(web.MetricsHandler(reg)), web.AdminAuth(acfg))
	return nil
}

// HTTPAddr is the address the HTTP server listens on.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// ID is the node's persistent UUID.
func (n *Node) ID() string { return n.id }

// statusExtra is this node's application view for cluster status: the
// total as this node sees it.
func (n *Node) statusExtra() json.RawMessage {
	t := n.fsm.Totals(n.currency)
	b, _ := json.Marshal(struct {
		RaisedMinor int64  `json:"raised_minor"`
		Donations   int64  `json:"donations"`
		Currency    string `json:"currency"`
	}{t.RaisedMinor, t.Donations, string(t.Currency)})
	return b
}

// memberURLs lists the HTTP base URLs of the live members, for the dev
// gateway to deliver notifications when the public URL fails.
func (n *Node) memberURLs() []string {
	var out []string
	for _, m := range n.cluster.Members() {
		if m.Gossip == "alive" && m.HTTPAddr != "" {
			out = append(out, "http://"+m.HTTPAddr)
		}
	}
	return out
}

// Close stops the node in the order of design.md §4.5 and returns every
// error met on the way.
func (n *Node) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closeLocked()
}

func (n *Node) closeLocked() error {
	if n.closed {
		return nil
	}
	n.closed = true
	var errs []error
	if n.web != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := n.web.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop http: %w", err))
		}
		cancel()
		if n.serveDone != nil {
			if err := <-n.serveDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs = append(errs, fmt.Errorf("serve http: %w", err))
			}
		}
	} else if n.httpLn != nil {
		n.httpLn.Close()
	}
	if n.dev != nil {
		errs = append(errs, n.dev.Close())
	}
	if n.cluster != nil {
		errs = append(errs, n.cluster.Close())
	}
	if n.cancel != nil {
		n.cancel()
	}
	if n.fsm != nil {
		errs = append(errs, n.fsm.Close())
	}
	if n.logs != nil {
		errs = append(errs, n.logs.Close())
	}
	n.pager.Stop()
	return errors.Join(errs...)
}

// isAnyOrLoopback reports whether a bind host listens on every interface or
// on loopback only.
func isAnyOrLoopback(host string) bool {
	if host == "" || host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsUnspecified() || ip.IsLoopback())
}

// loadNodeID reads the node's UUID from the data dir, creating it on first
// start. The ID is the Raft ServerID for the life of this data dir.
func loadNodeID(dir string) (string, error) {
	p := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(p)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if _, perr := uuid.Parse(id); perr != nil {
			return "", fmt.Errorf("read node id %s: %q is not a UUID", p, id)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read node id: %w", err)
	}
	id := uuid.NewString()
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write node id: %w", err)
	}
	if err := syncFile(tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", fmt.Errorf("write node id: %w", err)
	}
	return id, syncFile(dir)
}

func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("sync %s: %w", p, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", p, err)
	}
	return nil
}
