package node

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/surgefund/surge/web"
)

// Config is everything a node needs, filled from flags and environment by cmd/node.
type Config struct {
	DataDir    string
	Name       string // human label; defaults to the hostname
	HTTPAddr   string // bind host:port for pages, API and admin
	GossipAddr string // bind host:port for memberlist
	RaftAddr   string // bind host:port for Raft and internal RPC
	Advertise  string // host peers use to reach this node
	PublicURL  string // absolute base URL given to payment gateways; defaults to http://advertise:httpport

	Join            []string
	BootstrapExpect int
	Voters          int
	DeadNodeTimeout time.Duration
	GossipKey       string // base64 of 16, 24 or 32 bytes

	AdminToken string
	SiteDir    string // operator's own site content; empty = embedded default
	Production bool   // refuses the dev gateway
	Provider   string // payment gateway; "dev" is the only one built in so far

	DevSecret    string
	DevDuplicate bool
	DevReorder   bool
	DevDelay     time.Duration

	RateLimit int // donation creations per minute per client IP; 0 disables

	// HotPath serves the cacheable pages, assets and the total below
	// net/http (web.Config.DisableHotPath is its opposite).
	HotPath bool

	// RaftMultiplier scales Raft's heartbeat, election and lease timeouts
	// (1 = the LAN defaults; raise it on slow or overloaded machines).
	RaftMultiplier int

	// RSSLimit is the resident set size, in bytes, the node keeps to by
	// asking the kernel to page out its stores' mapped table pages
	// (storage.Pager); 0 = no limit, the kernel decides.
	RSSLimit int64

	Version string
}

// MinRSSLimit is the smallest RSSLimit accepted. A fresh idle node holds
// about 36 MiB (18 MiB of anonymous memory, 18 MiB of the binary's pages,
// measured with `node` on 2026-12-06); below 48 MiB there is no room left
// for the table pages every lookup reads, and the pager would page them
// out at nearly every check.
const MinRSSLimit = 48 << 20

// DefaultConfig is the embedded single-node default: ./data, :8080, :7946, :7947.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		DataDir:         "./data",
		Name:            host,
		HTTPAddr:        ":8080",
		GossipAddr:      ":7946",
		RaftAddr:        ":7947",
		Voters:          3,
		DeadNodeTimeout: 10 * time.Minute,
		Provider:        "dev",
		DevSecret:       "surge-dev-gateway-secret",
		RateLimit:       30,
		HotPath:         true,
		RaftMultiplier:  1,
		Version:         "dev",
	}
}

// Validate checks the configuration and names the first bad field.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("data-dir: must not be empty")
	}
	for _, a := range []struct{ name, v string }{{"http-addr", c.HTTPAddr}, {"gossip-addr", c.GossipAddr}, {"raft-addr", c.RaftAddr}} {
		if _, port, err := net.SplitHostPort(a.v); err != nil {
			return fmt.Errorf("%s: %q is not host:port: %w", a.name, a.v, err)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return fmt.Errorf("%s: %q has a bad port", a.name, a.v)
		}
	}
	if ip := net.ParseIP(c.Advertise); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("advertise: %q is not an address peers can reach", c.Advertise)
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("public-url: %q must be an absolute http(s) URL", c.PublicURL)
		}
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("join: %q is not host:port", j)
		}
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > 9 {
		return fmt.Errorf("bootstrap-expect: %d must be between 0 and 9", c.BootstrapExpect)
	}
	if c.BootstrapExpect > 1 && len(c.Join) == 0 {
		return errors.New("bootstrap-expect: needs --join with the addresses of the other nodes")
	}
	if c.Voters < 1 || c.Voters > 5 || c.Voters%2 == 0 {
		return fmt.Errorf("voters: %d must be 1, 3 or 5", c.Voters)
	}
	if c.DeadNodeTimeout < time.Second {
		return fmt.Errorf("dead-node-timeout: %s is too short", c.DeadNodeTimeout)
	}
	if _, err := c.gossipKey(); err != nil {
		return err
	}
	if c.Provider != "dev" {
		return fmt.Errorf("provider: unknown payment gateway %q (built in: dev)", c.Provider)
	}
	if c.Production && c.Provider == "dev" {
		return errors.New("production: the dev payment gateway is refused in production mode; configure a real gateway")
	}
	if c.Provider == "dev" && len(c.DevSecret) < 16 {
		return errors.New("dev-secret: must be at least 16 bytes")
	}
	if c.AdminToken != "" {
		a := web.DefaultAdminConfig()
		a.Token = c.AdminToken
		if err := a.Validate(); err != nil {
			return fmt.Errorf("admin-token: %w", err)
		}
	}
	if c.RSSLimit < 0 || (c.RSSLimit > 0 && c.RSSLimit < MinRSSLimit) {
		return fmt.Errorf("rss-limit: %s is below the %s a node needs (0 = no limit)", (&ByteSize{N: c.RSSLimit}).String(), (&ByteSize{N: MinRSSLimit}).String())
	}
	if c.RaftMultiplier < 1 || c.RaftMultiplier > 10 {
		return fmt.Errorf("raft-multiplier: %d must be between 1 and 10", c.RaftMultiplier)
	}
	if c.RateLimit < 0 {
		return fmt.Errorf("rate-limit: %d must not be negative", c.RateLimit)
	}
	return nil
}

func (c Config) gossipKey() ([]byte, error) {
	if c.GossipKey == "" {
		return nil, nil
	}
	k, err := base64.StdEncoding.DecodeString(c.GossipKey)
	if err != nil {
		return nil, fmt.Errorf("gossip-key: not base64: %w", err)
	}
	switch len(k) {
	case 16, 24, 32:
		return k, nil
	}
	return nil, fmt.Errorf("gossip-key: must decode to 16, 24 or 32 bytes, got %d", len(k))
}

// advertiseHost is the host peers use: --advertise, else the bind host when
// it is specific, else the first non-loopback address, else 127.0.0.1.
func (c Config) advertiseHost() string {
	if c.Advertise != "" {
		return c.Advertise
	}
	host, _, _ := net.SplitHostPort(c.RaftAddr)
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return host
	}
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && !n.IP.IsLinkLocalUnicast() {
				return n.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// withHost replaces the host of bind address addr with host.
func withHost(addr, host string) string {
	_, port, _ := net.SplitHostPort(addr)
	return net.JoinHostPort(host, port)
}
