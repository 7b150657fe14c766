package payment

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/surgefund/surge/donation"
)

// Names of the dev test gateway.
const (
	// DevName is the provider name of the dev test gateway.
	DevName = "dev"
	// DevPrefix is the path under which the gateway serves its hosted pages.
	DevPrefix = "/gateway/dev/"
	// SignatureHeader carries the signature of a dev gateway notification:
	// "t=<unix seconds>,v1=<hex hmac-sha256(secret, "<t>.<body>")>".
	SignatureHeader = "Surge-Signature"
)

// ErrInvalidCheckout is returned by Checkout for a request the gateway
// cannot start a payment for (bad donation id, amount or URLs).
var ErrInvalidCheckout = errors.New("invalid checkout request")

// ErrClosed is returned when the gateway is asked to deliver after Close.
var ErrClosed = errors.New("dev gateway closed")

// minSecretLen is the shortest shared secret the gateway accepts. The node
// checks the same bound on its flag.
const minSecretLen = 16

// DevConfig configures the dev test gateway. Now drives the timestamps of
// signatures, notifications and checkout expiry; delays and backoff between
// deliveries run on real timers.
type DevConfig struct {
	Secret    []byte        // HMAC-SHA256 key shared by every node: signs notifications and checkout tokens
	BaseURL   string        // absolute public base URL; hosted pages live at BaseURL+"/gateway/dev/..."
	Window    time.Duration // accepted signature age, in both directions (future timestamps too)
	Duplicate bool          // deliver every notification twice, the second concurrently
	Delay     time.Duration // deliver notifications only after this delay (the browser returns first)
	Reorder   bool          // also send a "payment.processing" event, after the final event

	RetryMin, RetryMax time.Duration // exponential backoff with jitter between delivery rounds
	GiveUpAfter        time.Duration // stop retrying one notification after this long

	// Fallback lists other base URLs (live nodes' HTTP) to try, with the
	// NotifyURL's path, when the NotifyURL fails. May be nil.
	Fallback func() []string

	CheckoutTTL    time.Duration // how long a checkout link stays valid
	AttemptTimeout time.Duration // bound of one HTTP attempt, and of the synchronous round behind Pay
	QueueSize      int           // notifications waiting or in flight; Pay answers 503 beyond it
	Workers        int           // delivery goroutines

	Client *http.Client // nil: a client of its own that does not follow redirects
	Logger *slog.Logger // nil: discard
	Now    func() time.Time
}

// DefaultDevConfig returns the defaults. Secret and BaseURL must still be set.
func DefaultDevConfig() DevConfig {
	return DevConfig{
		Window:         5 * time.Minute,
		RetryMin:       500 * time.Millisecond,
		RetryMax:       30 * time.Second,
		GiveUpAfter:    time.Hour,
		CheckoutTTL:    24 * time.Hour,
		AttemptTimeout: 5 * time.Second,
		QueueSize:      4096,
		Workers:        4,
		Now:            time.Now,
	}
}

// Validate checks the configuration.
func (c DevConfig) Validate() error {
	var errs []error
	if len(c.Secret) < minSecretLen {
		errs = append(errs, fmt.Errorf("secret must be at least %d bytes", minSecretLen))
	}
	if err := checkAbsURL(c.BaseURL); err != nil {
		errs = append(errs, fmt.Errorf("base url: %w", err))
	} else if u, _ := url.Parse(c.BaseURL); u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, errors.New("base url: must not carry a query or fragment"))
	}
	if c.Window <= 0 {
		errs = append(errs, errors.New("window must be positive"))
	}
	if c.Delay < 0 {
		errs = append(errs, errors.New("delay must not be negative"))
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("retry backoff needs 0 < retry min <= retry max"))
	}
	if c.GiveUpAfter <= 0 {
		errs = append(errs, errors.New("give up after must be positive"))
	}
	if c.CheckoutTTL <= 0 {
		errs = append(errs, errors.New("checkout ttl must be positive"))
	}
	if c.AttemptTimeout <= 0 {
		errs = append(errs, errors.New("attempt timeout must be positive"))
	}
	if c.QueueSize < 1 {
		errs = append(errs, errors.New("queue size must be at least 1"))
	}
	if c.Workers < 1 {
		errs = append(errs, errors.New("workers must be at least 1"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dev gateway config: %w", err)
	}
	return nil
}

// Dev is the dev test gateway: a Provider that serves its own hosted
// checkout page (HostedPages) and pushes signed notifications to the
// cluster. It keeps no state per checkout: the page is driven by a signed
// token, so every node can serve it.
type Dev struct {
	cfg     DevConfig
	secret  []byte
	base    string // BaseURL without a trailing slash
	client  *http.Client
	ownHTTP *http.Transport // closed on Close when the client is our own
	log     *slog.Logger
	now     func() time.Time
	handler http.Handler

	q queue

	stats struct {
		attempts, delivered, retried, dropped atomic.Int64
	}

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

var (
	_ Provider    = (*Dev)(nil)
	_ HostedPages = (*Dev)(nil)
)

// NewDev validates cfg and builds the gateway. It starts no goroutines.
func NewDev(cfg DevConfig) (*Dev, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Dev{
		cfg:    cfg,
		secret: append([]byte(nil), cfg.Secret...),
		base:   strings.TrimRight(cfg.BaseURL, "/"),
		client: cfg.Client,
		log:    cfg.Logger,
		now:    cfg.Now,
	}
	if d.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 16
		d.ownHTTP = tr
		d.client = &http.Client{
			Transport: tr,
			// A notify endpoint answers; it does not redirect. Following a
			// 30x would turn the POST into a GET.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.now == nil {
		d.now = time.Now
	}
	d.q.init(cfg.QueueSize)
	d.handler = http.HandlerFunc(d.serveHTTP)
	return d, nil
}

// Start starts the delivery workers. They stop when ctx ends or on Close.
// A second Start, or a Start after Close, does nothing.
func (d *Dev) Start(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started || d.closed {
		return
	}
	d.started = true
	ctx, d.cancel = context.WithCancel(ctx)
	ready := make(chan *job)
	d.wg.Add(1 + d.cfg.Workers)
	go func() {
		defer d.wg.Done()
		d.q.dispatch(ctx, ready)
	}()
	for range d.cfg.Workers {
		go func() {
			defer d.wg.Done()
			d.work(ctx, ready)
		}()
	}
}

// Close stops the workers and waits for them. Notifications not delivered
// yet are dropped (and logged); the cluster never counted them. Close is
// idempotent.
func (d *Dev) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	cancel := d.cancel
	d.mu.Unlock()
	left := d.q.close()
	if cancel != nil {
		cancel()
	}
	d.wg.Wait()
	if left > 0 {
		d.log.Warn("dev gateway closed with notifications undelivered", "pending", left)
	}
	if d.ownHTTP != nil {
		d.ownHTTP.CloseIdleConnections()
	}
	return nil
}

// Name is "dev".
func (d *Dev) Name() string { return DevName }

// Prefix is "/gateway/dev/". The handler expects the full request path;
// a prefix stripped by the mount is tolerated.
func (d *Dev) Prefix() string { return DevPrefix }

// Handler serves the hosted checkout page.
func (d *Dev) Handler() http.Handler { return d.handler }

// Checkout returns the URL of the hosted page for req. The URL carries a
// signed token with everything the page needs; nothing is stored.
func (d *Dev) Checkout(ctx context.Context, req CheckoutRequest) (Checkout, error) {
	if err := ctx.Err(); err != nil {
		return Checkout{}, fmt.Errorf("dev checkout: %w", err)
	}
	if !validID(req.DonationID, donation.MaxIDLen) {
		return Checkout{}, fmt.Errorf("dev checkout: %w: donation id %q", ErrInvalidCheckout, req.DonationID)
	}
	if err := req.Amount.Validate(); err != nil {
		return Checkout{}, fmt.Errorf("dev checkout: %w: %w", ErrInvalidCheckout, err)
	}
	for _, u := range []struct{ name, v string }{{"return url", req.ReturnURL}, {"notify url", req.NotifyURL}} {
		if err := checkAbsURL(u.v); err != nil {
			return Checkout{}, fmt.Errorf("dev checkout: %w: %s: %w", ErrInvalidCheckout, u.name, err)
		}
		if len(u.v) > maxURLLen {
			return Checkout{}, fmt.Errorf("dev checkout: %w: %s longer than %d bytes", ErrInvalidCheckout, u.name, maxURLLen)
		}
	}
	c := claims{
		V:      tokenVersion,
		ID:     req.DonationID,
		Minor:  req.Amount.Minor,
		Cur:    string(req.Amount.Currency),
		Desc:   truncateUTF8(req.Description, maxDescLen),
		Return: req.ReturnURL,
		Notify: req.NotifyURL,
		Exp:    d.now().Add(d.cfg.CheckoutTTL).Unix(),
	}
	tok, err := encodeToken(d.secret, c)
	if err != nil {
		return Checkout{}, fmt.Errorf("dev checkout: %w", err)
	}
	return Checkout{URL: d.base + DevPrefix + "checkout/" + tok, Ref: d.ref(req.DonationID)}, nil
}

// VerifyNotification checks the Surge-Signature header against body and
// now, then decodes the notification strictly. See verify.go.
func (d *Dev) VerifyNotification(h http.Header, body []byte, now time.Time) ([]Event, error) {
	if err := verifySignature(d.secret, h, body, now, d.cfg.Window); err != nil {
		return nil, err
	}
	ev, err := decodeNotification(body)
	if err != nil {
		return nil, err
	}
	return []Event{ev}, nil
}

// ParseReturn reads the query the gateway appends to the return URL:
// donation=<id> (required) and outcome=succeeded|failed (a hint only; any
// other value is dropped).
func (d *Dev) ParseReturn(q url.Values) (ReturnHint, error) {
	ids := q["donation"]
	if len(ids) != 1 || !validID(ids[0], donation.MaxIDLen) {
		return ReturnHint{}, fmt.Errorf("dev return: %w: donation id missing or invalid", ErrMalformed)
	}
	h := ReturnHint{DonationID: ids[0]}
	switch o := donation.Outcome(q.Get("outcome")); o {
	case donation.OutcomeSucceeded, donation.OutcomeFailed:
		h.Outcome = o
	}
	return h, nil
}

// Lookup is not supported: the dev gateway is push-style. The return
// handler waits for the signed notification instead, which the gateway
// sends before it redirects the browser (unless Delay is set).
func (d *Dev) Lookup(context.Context, string, string) (Event, error) {
	return Event{}, fmt.Errorf("dev lookup: %w", ErrNotSupported)
}

// DevStats counts delivery work since NewDev.
type DevStats struct {
	Attempts  int64 // HTTP POSTs sent
	Delivered int64 // notifications acknowledged with a 2xx
	Retried   int64 // rounds that failed and were scheduled again
	Dropped   int64 // notifications given up: refused by the cluster, or retried past GiveUpAfter
	Pending   int   // notifications waiting or in flight
}

// Stats returns the delivery counters.
func (d *Dev) Stats() DevStats {
	return DevStats{
		Attempts:  d.stats.attempts.Load(),
		Delivered: d.stats.delivered.Load(),
		Retried:   d.stats.retried.Load(),
		Dropped:   d.stats.dropped.Load(),
		Pending:   d.q.pending(),
	}
}

// mac is HMAC-SHA256 of the parts under the gateway secret.
func mac(secret []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, secret)
	for _, p := range parts {
		m.Write([]byte(p))
	}
	return m.Sum(nil)
}

// eventID is deterministic per (donation, outcome): a double-clicked Pay,
// on any node, produces the same event and the ledger counts it once.
func (d *Dev) eventID(donationID string, o donation.Outcome) string {
	return "evt_" + hex.EncodeToString(mac(d.secret, "surge-dev-event|", donationID, "|", string(o)))[:24]
}

// ref is the gateway's payment reference, derived from the donation id so
// that every node names the payment alike.
func (d *Dev) ref(donationID string) string {
	return "dev_" + hex.EncodeToString(mac(d.secret, "surge-dev-ref|", donationID))[:16]
}

// validID accepts 1..max bytes of [A-Za-z0-9_-]: uuids, base32 ids, and
// the gateway's own evt_/dev_ names.
func validID(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// checkAbsURL accepts an absolute http(s) URL with a host and no user info.
func checkAbsURL(s string) error {
	if s == "" {
		return errors.New("missing")
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a url")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("must be an absolute http or https url")
	}
	if u.Host == "" || u.User != nil {
		return errors.New("must name a host and no user info")
	}
	return nil
}
