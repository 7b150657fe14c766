package web

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/gommon/log"

	"github.com/surgefund/surge/donation"
	"github.com/surgefund/surge/payment"
)

// Ledger is the local, read-only view of the replicated donations (the
// storage FSM implements it). Reads never leave the node.
type Ledger interface {
	Totals(c donation.Currency) donation.Totals
	Donation(id string) (donation.Donation, bool, error)
}

// Proposer commits a command through the cluster and returns the ledger's
// answer once the entry is applied (the node adapts the cluster to it). It
// returns an error wrapping ErrUnavailable when no leader can take the
// write within the hold time.
type Proposer interface {
	Propose(ctx context.Context, cmd donation.Command) (donation.Result, error)
}

// Health answers the readiness probes.
type Health interface {
	Ready() error                       // /readyz: has a leader and is caught up
	WaitSync(ctx context.Context) error // /readyz?sync: waits until this node has applied the leader's commit index
}

// RateLimit limits donation creation per client IP (IPv6 per /64), as a
// token bucket: PerMinute tokens a minute, up to Burst at once. PerMinute
// 0 disables it. The budget is per node: behind a load balancer spreading
// over N nodes a client gets up to N times as much.
type RateLimit struct {
	PerMinute int
	Burst     int // 0: PerMinute/2, at least 1
}

// Config configures a Server.
type Config struct {
	// PublicURL is the absolute base URL (scheme://host[:port]) donors and
	// gateways reach the cluster at; return and notify URLs are built on it.
	PublicURL string
	// Site is the campaign content: campaign.json, templates/, static/.
	Site fs.FS
	// Providers are the payment gateways; DefaultProvider names the one new
	// donations use (default: the first).
	Providers       []payment.Provider
	DefaultProvider string
	// GatewayOrigins are extra origins (scheme://host) the donate form may
	// be redirected to, for the CSP form-action. PublicURL's origin is
	// always allowed.
	GatewayOrigins []string
	// ReturnWait is how long GET /payments/{p}/return waits for the signed
	// notification before sending the donor on (default 10s).
	ReturnWait time.Duration
	// RenderInterval is how often the home page's total is checked and the
	// page re-rendered when it changed (default 1s).
	RenderInterval time.Duration
	RateLimit      RateLimit
	// TrustedProxies are CIDRs (or single IPs) whose X-Forwarded-For is
	// believed when working out the client IP. Default: none.
	TrustedProxies []string
	// HTTP server limits; zero values take the defaults of DefaultConfig.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	Logger            *slog.Logger
	Version           string

	// DisableHotPath turns off the hot path (hot.go): every request is
	// then read and answered by net/http and echo. By default the
	// pre-rendered pages, the hashed assets and the total are answered
	// below net/http (DESIGN.md, "Hot path").
	DisableHotPath bool
}

// DefaultConfig returns the defaults; the caller fills PublicURL, Site and
// Providers.
func DefaultConfig() Config {
	return Config{
		ReturnWait:        10 * time.Second,
		RenderInterval:    time.Second,
		RateLimit:         RateLimit{PerMinute: 20, Burst: 10},
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

var providerNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// withDefaults fills zero durations and limits from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	for _, p := range []struct{ v, def *time.Duration }{
		{&c.ReturnWait, &d.ReturnWait}, {&c.RenderInterval, &d.RenderInterval},
		{&c.ReadHeaderTimeout, &d.ReadHeaderTimeout}, {&c.ReadTimeout, &d.ReadTimeout},
		{&c.WriteTimeout, &d.WriteTimeout}, {&c.IdleTimeout, &d.IdleTimeout},
	} {
		if *p.v == 0 {
			*p.v = *p.def
		}
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if c.DefaultProvider == "" && len(c.Providers) > 0 && c.Providers[0] != nil {
		c.DefaultProvider = c.Providers[0].Name()
	}
	return c
}

// Validate checks the configuration (after defaults) and names the bad field.
func (c Config) Validate() error {
	c = c.withDefaults()
	u, err := url.Parse(c.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("public url: %q must be an absolute http(s) URL without path, such as https://give.example.org", c.PublicURL)
	}
	if c.Site == nil {
		return errors.New("site: no campaign content given")
	}
	if len(c.Providers) == 0 {
		return errors.New("providers: at least one payment provider is needed")
	}
	seen := map[string]bool{}
	for i, p := range c.Providers {
		if p == nil {
			return fmt.Errorf("providers[%d]: nil", i)
		}
		name := p.Name()
		if !providerNameRE.MatchString(name) {
			return fmt.Errorf("providers[%d]: name %q must match %s", i, name, providerNameRE)
		}
		if seen[name] {
			return fmt.Errorf("providers[%d]: name %q used twice", i, name)
		}
		seen[name] = true
	}
	if !seen[c.DefaultProvider] {
		return fmt.Errorf("default provider: %q is not one of the providers", c.DefaultProvider)
	}
	for _, o := range c.GatewayOrigins {
		if _, err := origin(o); err != nil {
			return fmt.Errorf("gateway origins: %w", err)
		}
	}
	switch {
	case c.ReturnWait < 0 || c.ReturnWait > time.Minute:
		return fmt.Errorf("return wait: %s must be between 0 and 1m", c.ReturnWait)
	case c.RenderInterval < 0:
		return fmt.Errorf("render interval: %s must be positive", c.RenderInterval)
	case c.RateLimit.PerMinute < 0 || c.RateLimit.Burst < 0:
		return errors.New("rate limit: must not be negative")
	case c.ReadHeaderTimeout < 0 || c.ReadTimeout < 0 || c.IdleTimeout < 0 || c.MaxHeaderBytes < 0:
		return errors.New("http timeouts: must not be negative")
	case c.WriteTimeout <= c.ReturnWait:
		return fmt.Errorf("write timeout: %s must exceed the return wait %s", c.WriteTimeout, c.ReturnWait)
	}
	if _, err := parsePrefixes(c.TrustedProxies); err != nil {
		return fmt.Errorf("trusted proxies: %w", err)
	}
	return nil
}

// origin returns scheme://host of an absolute http(s) URL.
func origin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return u.Scheme + "://" + u.Host, nil
}

func parsePrefixes(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an IP address", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Server serves the pages, the API and the payment callbacks of one node.
type Server struct {
	cfg       Config
	log       *slog.Logger
	campaign  Campaign
	ledger    Ledger
	proposer  Proposer
	health    Health
	providers map[string]payment.Provider
	publicURL string // without trailing slash

	echo  *echo.Echo
	rd    *renderer
	pages map[string]*resource // everything but home
	home  atomic.Pointer[homePage]
	total atomic.Pointer[totalBody]

	limiter    *limiter
	cop        *http.CrossOriginProtection
	edge       edge
	returnPoll time.Duration // how often a waiting return re-reads the ledger

	metrics atomic.Pointer[Metrics] // set by UseMetrics; the hot path counts into it

	mu       sync.Mutex
	srv      *http.Server
	hot      *hotServer // nil when the hot path is off
	started  bool
	closed   bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closeErr error
}

// homePage is the rendered home page and the totals it shows.
type homePage struct {
	res    *resource
	totals donation.Totals
}

// NewServer validates cfg, loads and validates the campaign, parses the
// templates and renders every page once. It starts nothing.
func NewServer(cfg Config, l Ledger, p Proposer, h Health) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new web server: %w", err)
	}
	if l == nil || p == nil || h == nil {
		return nil, errors.New("new web server: ledger, proposer and health are required")
	}
	cfg = cfg.withDefaults()
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	campaign, err := LoadCampaign(cfg.Site)
	if err != nil {
		return nil, fmt.Errorf("new web server: %w", err)
	}
	s := &Server{
		cfg:        cfg,
		log:        logger,
		campaign:   campaign,
		ledger:     l,
		proposer:   p,
		health:     h,
		providers:  map[string]payment.Provider{},
		publicURL:  strings.TrimSuffix(cfg.PublicURL, "/"),
		pages:      map[string]*resource{},
		returnPoll: returnPoll,
	}
	for _, pr := range cfg.Providers {
		s.providers[pr.Name()] = pr
	}
	if s.rd, err = newRenderer(cfg.Site, &s.campaign); err != nil {
		return nil, fmt.Errorf("new web server: %w", err)
	}
	for _, pg := range append([]string{pageNotFound}, pageNames()...) {
		if pg == pageHome {
			continue
		}
		cache := cachePage
		if pg == pageNotFound {
			cache = cacheNotFound
		}
		if s.pages[pg], err = s.rd.renderResource(pg, donation.Totals{}, cache); err != nil {
			return nil, fmt.Errorf("new web server: %w", err)
		}
	}
	if err := s.renderHome(l.Totals(campaign.Currency)); err != nil {
		return nil, fmt.Errorf("new web server: %w", err)
	}
	trusted, _ := parsePrefixes(cfg.TrustedProxies) // validated above
	if cfg.RateLimit.PerMinute > 0 {
		s.limiter = newLimiter(cfg.RateLimit, time.Now)
	}
	s.cop = http.NewCrossOriginProtection()
	pubOrigin, _ := origin(s.publicURL)
	if err := s.cop.AddTrustedOrigin(pubOrigin); err != nil {
		return nil, fmt.Errorf("new web server: trusted origin: %w", err)
	}
	s.edge.init(s, trusted, pubOrigin, cfg.GatewayOrigins)
	s.echo = s.newEcho(trusted)
	return s, nil
}

func pageNames() []string {
	out := make([]string, 0, len(pageRoutes))
	for _, p := range pageRoutes {
		out = append(out, p.name)
	}
	return out
}

// renderHome renders the home page for t and swaps it in.
func (s *Server) renderHome(t donation.Totals) error {
	res, err := s.rd.renderResource(pageHome, t, cacheHome)
	if err != nil {
		return err
	}
	s.home.Store(&homePage{res: res, totals: t})
	return nil
}

func (s *Server) newEcho(trusted []netip.Prefix) *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.Logger.SetLevel(log.OFF)
	e.HTTPErrorHandler = s.handleError
	e.IPExtractor = func(r *http.Request) string { return clientIP(r, trusted).String() }

	getHead := []string{http.MethodGet, http.MethodHead}
	home := func(c echo.Context) error {
		s.home.Load().res.serve(c.Response(), c.Request(), http.StatusOK)
		return nil
	}
	for _, p := range pageRoutes {
		if p.name == pageHome {
			e.Match(getHead, p.path, home)
			continue
		}
		res := s.pages[p.name]
		e.Match(getHead, p.path, func(c echo.Context) error {
			res.serve(c.Response(), c.Request(), http.StatusOK)
			return nil
		})
	}
	e.Match(getHead, staticPrefix+"*", s.handleStatic)
	e.POST("/donate", s.handleForm)

	e.Match(getHead, pathTotal, s.handleTotal)
	e.POST("/api/v1/donations", s.handleCreate)
	e.Match(getHead, "/api/v1/donations/:id", s.handleDonation)

	e.POST("/payments/:provider/notify", s.handleNotify)
	e.Match(getHead, "/payments/:provider/return", s.handleReturn)
	for _, p := range s.cfg.Providers {
		if hp, ok := p.(payment.HostedPages); ok {
			prefix := "/" + strings.Trim(hp.Prefix(), "/") + "/"
			h := hp.Handler()
			e.Any(prefix+"*", echo.WrapHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r.Body = http.MaxBytesReader(w, r.Body, maxNotifyBody)
				h.ServeHTTP(w, r)
			})))
		}
	}

	e.Match(getHead, "/healthz", s.handleHealthz)
	e.Match(getHead, "/readyz", s.handleReadyz)
	return e
}

// Campaign returns the loaded campaign.
func (s *Server) Campaign() Campaign { return s.campaign }

// Echo returns the echo instance, for routes added by other parts of the
// node (the admin API). Its routes sit behind the same edge middleware and
// error handler.
func (s *Server) Echo() *echo.Echo { return s.echo }

// UseMetrics records the HTTP metrics of every request in m: it installs
// m's middleware in echo (Pre) and lets the hot path count its answers in
// the same series. Call it once, before Serve. Other middleware added to
// Echo() does not see the requests the hot path answers.
func (s *Server) UseMetrics(m *Metrics) {
	s.metrics.Store(m)
	s.echo.Pre(m.Middleware())
}

// Handler returns the node's HTTP handler: the edge middleware (security
// headers, request ID, access log, recovery) in front of echo.
func (s *Server) Handler() http.Handler { return &s.edge }

// Start starts the loop that re-renders the home page when the total
// changes, at most once per RenderInterval. It returns at once; Shutdown
// stops the loop and waits for it.
func (s *Server) Start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return
	}
	s.started = true
	ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.renderLoop(ctx)
	}()
}

func (s *Server) renderLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.RenderInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := s.ledger.Totals(s.campaign.Currency)
		if cur == s.home.Load().totals {
			continue
		}
		if err := s.renderHome(cur); err != nil {
			s.log.Error("re-render home page", "err", err)
		}
	}
}

// Serve serves HTTP on ln until Shutdown or Close. It returns nil after a
// graceful shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	if s.srv != nil {
		s.mu.Unlock()
		return errors.New("serve: already serving")
	}
	s.srv = &http.Server{
		Handler:           &s.edge,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	srv := s.srv
	if !s.cfg.DisableHotPath && ln != nil && len(s.echo.Routers()) == 0 {
		hot, err := newHotServer(s, ln)
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("serve: %w", err)
		}
		s.hot = hot
		ln = hot.listener()
		hot.start()
	}
	s.mu.Unlock()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

// Shutdown stops taking connections, waits for requests in flight (until
// ctx ends), and stops the render loop. It is idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.stop(ctx, false)
}

// Close stops at once, closing connections in flight. It is idempotent.
func (s *Server) Close() error {
	return s.stop(context.Background(), true)
}

// stop stops the hot path's listener (new connections), then net/http,
// then waits for the hot connections: idle ones close at once, busy ones
// after the answer they are writing (or all at once when force is set or
// ctx ends).
func (s *Server) stop(ctx context.Context, force bool) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return s.closeErr
	}
	s.closed = true
	srv, cancel, hot := s.srv, s.cancel, s.hot
	s.mu.Unlock()
	var errs []error
	if hot != nil {
		hot.stopAccepting()
		if force {
			hot.closeAll()
		} else {
			hot.closeIdle()
		}
	}
	if srv != nil {
		var err error
		if force {
			err = srv.Close()
		} else {
			err = srv.Shutdown(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("stop http server: %w", err))
		}
	}
	if hot != nil {
		if err := hot.wait(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop hot path: %w", err))
		}
	}
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
	err := errors.Join(errs...)
	s.mu.Lock()
	s.closeErr = err
	s.mu.Unlock()
	return err
}
