// Command node runs one Surge node: pages, JSON API, payment callbacks,
// gossip membership and Raft, in one process. With no flags it is a
// one-node cluster with its data in ./data and the site on :8080.
//
// Every flag can also be set by an environment variable: --http-addr is
// SURGE_HTTP_ADDR, --join is SURGE_JOIN, and so on. A flag on the command
// line wins over the environment.
//
// Exit codes: 0 after a clean stop, 1 when the node fails while running,
// 2 for a bad configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/surgefund/surge/node"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const (
	exitOK     = 0
	exitFailed = 1
	exitConfig = 2
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "health" {
		os.Exit(health(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	cfg, logOpts, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "node: %v\n", err)
		return exitConfig
	}
	logger := newLogger(stderr, logOpts)
	node.ApplyMemoryLimit(logOpts.memoryLimit, os.Getenv("GOMEMLIMIT"), node.CgroupMemoryLimit(), cfg.RSSLimit).Log(logger)
	n, err := node.New(cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "node: %v\n", err)
		return exitConfig
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := n.Start(ctx); err != nil {
		logger.Error("start failed", "err", err)
		return exitFailed
	}
	fmt.Fprintf(stderr, "Surge is running at http://%s (node %s, data in %s). Stop with Ctrl-C.\n",
		displayAddr(n.HTTPAddr()), n.ID(), cfg.DataDir)
	<-ctx.Done()
	stop()
	logger.Info("stopping")
	if err := n.Close(); err != nil {
		logger.Error("stop", "err", err)
		return exitFailed
	}
	logger.Info("stopped")
	return exitOK
}

// logOptions are the process-wide options: logging, and the Go runtime's
// soft memory limit.
type logOptions struct {
	format      string
	level       slog.Level
	memoryLimit node.ByteSize
}

// defaultMemoryLimit is --memory-limit's default: none (storage/DESIGN.md
// "Memory limit" says why, and what to set in a container).
const defaultMemoryLimit = 0

func newLogger(w io.Writer, o logOptions) *slog.Logger {
	ho := &slog.HandlerOptions{Level: o.level}
	if o.format == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// parse fills a node.Config from flags, falling back to SURGE_* variables.
func parse(args []string, stderr io.Writer) (node.Config, logOptions, error) {
	cfg := node.DefaultConfig()
	cfg.Version = version
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var join, logLevel string
	var rssLimit node.ByteSize
	lo := logOptions{format: "text", memoryLimit: node.ByteSize{N: defaultMemoryLimit}}
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the Raft log, snapshots and donation state")
	fs.StringVar(&cfg.Name, "name", cfg.Name, "human label of this node (default: hostname)")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "host:port for pages, API and admin")
	fs.StringVar(&cfg.GossipAddr, "gossip-addr", cfg.GossipAddr, "host:port for gossip (TCP and UDP)")
	fs.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "host:port for Raft and internal forwarding (TCP)")
	fs.StringVar(&cfg.Advertise, "advertise", cfg.Advertise, "host other nodes use to reach this one (default: bind host, else first non-loopback address)")
	fs.StringVar(&cfg.PublicURL, "public-url", cfg.PublicURL, "absolute base URL donors and payment gateways use (default: http://advertise:http-port)")
	fs.StringVar(&join, "join", "", "comma-separated gossip addresses (host:port) of nodes to join; a joining node never bootstraps")
	fs.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", cfg.BootstrapExpect, "number of nodes started together that form the first cluster (with --join)")
	fs.IntVar(&cfg.Voters, "voters", cfg.Voters, "target number of Raft voters: 1, 3 or 5; other nodes are non-voters")
	fs.DurationVar(&cfg.DeadNodeTimeout, "dead-node-timeout", cfg.DeadNodeTimeout, "remove a dead node from Raft after this long")
	fs.StringVar(&cfg.GossipKey, "gossip-key", cfg.GossipKey, "base64 key of 16, 24 or 32 bytes: encrypts gossip and authenticates internal traffic")
	fs.StringVar(&cfg.AdminToken, "admin-token", cfg.AdminToken, "bearer token for /admin/ (without it only loopback callers are answered)")
	fs.StringVar(&cfg.SiteDir, "site", cfg.SiteDir, "directory with your own campaign content (default: the embedded example)")
	fs.BoolVar(&cfg.Production, "production", cfg.Production, "production mode: refuses the dev payment gateway")
	fs.StringVar(&cfg.Provider, "provider", cfg.Provider, "payment gateway (dev)")
	fs.StringVar(&cfg.DevSecret, "dev-secret", cfg.DevSecret, "HMAC secret of the dev gateway, the same on every node")
	fs.BoolVar(&cfg.DevDuplicate, "dev-duplicate", cfg.DevDuplicate, "dev gateway: deliver every notification twice")
	fs.BoolVar(&cfg.DevReorder, "dev-reorder", cfg.DevReorder, "dev gateway: send a late 'processing' event after the final one")
	fs.DurationVar(&cfg.DevDelay, "dev-delay", cfg.DevDelay, "dev gateway: delay notifications by this long")
	fs.IntVar(&cfg.RaftMultiplier, "raft-multiplier", cfg.RaftMultiplier, "scale Raft's timeouts (1 = LAN defaults, 300 ms; raise on slow or overloaded machines)")
	fs.IntVar(&cfg.RateLimit, "rate-limit", cfg.RateLimit, "donations a client IP may start per minute; 0 disables")
	fs.BoolVar(&cfg.HotPath, "hot-path", cfg.HotPath, "serve the cacheable pages, assets and total below net/http (false: every request through net/http)")
	fs.Var(&rssLimit, "rss-limit", "resident memory the node keeps to (e.g. 128MiB; 0 = none): within an eighth of it, it asks the kernel to page out its stores' memory-mapped tables, which are read back when needed")
	fs.Var(&lo.memoryLimit, "memory-limit", "Go soft memory limit (e.g. 100MiB; 0 = none): the garbage collector works harder as the heap nears it; when given, it wins over GOMEMLIMIT (logged as a warning); when not given, GOMEMLIMIT applies if set, else two thirds of --rss-limit or of the cgroup's memory limit, whichever is smaller")
	fs.StringVar(&lo.format, "log-format", lo.format, "log format: text or json")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: node [flags]
       node health [--addr http://127.0.0.1:8080]

Runs one Surge node. With no flags: a one-node cluster, data in ./data, site on :8080.
Every flag can also be set as SURGE_<FLAG> (for example SURGE_JOIN=10.0.0.1:7946).

Examples:
  node                                          # one node on :8080
  node --join 10.0.0.1:7946                     # join a running cluster
  node --bootstrap-expect 3 --join a:7946,b:7946,c:7946

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, lo, err
	}
	if fs.NArg() > 0 {
		return cfg, lo, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := applyEnv(fs); err != nil {
		return cfg, lo, err
	}
	cfg.Join = splitList(join)
	cfg.RSSLimit = rssLimit.N
	if lo.format != "text" && lo.format != "json" {
		return cfg, lo, fmt.Errorf("log-format: %q must be text or json", lo.format)
	}
	if err := lo.level.UnmarshalText([]byte(logLevel)); err != nil {
		return cfg, lo, fmt.Errorf("log-level: %w", err)
	}
	return cfg, lo, nil
}

// applyEnv sets every flag not given on the command line from its
// SURGE_* variable.
func applyEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		env := "SURGE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s: %w", env, e)
			}
		}
	})
	return err
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func displayAddr(a string) string {
	if strings.HasPrefix(a, "[::]:") {
		return "localhost" + strings.TrimPrefix(a, "[::]")
	}
	if strings.HasPrefix(a, "0.0.0.0:") {
		return "localhost" + strings.TrimPrefix(a, "0.0.0.0")
	}
	return a
}

// health asks a node's /readyz and exits 0 when it is ready. It needs no
// shell, so a container built FROM scratch can use it as its health check.
func health(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("node health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", envOr("SURGE_HEALTH_ADDR", "http://127.0.0.1:8080"), "base URL of the node to check")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for an answer")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	c := &http.Client{Timeout: *timeout}
	resp, err := c.Get(strings.TrimRight(*addr, "/") + "/readyz")
	if err != nil {
		fmt.Fprintf(stderr, "unhealthy: %v\n", err)
		return exitFailed
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "unhealthy: %s %s\n", resp.Status, strings.TrimSpace(string(body)))
		return exitFailed
	}
	fmt.Fprintf(stdout, "healthy: %s\n", strings.TrimSpace(string(body)))
	return exitOK
}

func envOr(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}
