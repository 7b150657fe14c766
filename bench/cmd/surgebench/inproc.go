package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/surgefund/surge/donation"
	"github.com/surgefund/surge/node"
	"github.com/surgefund/surge/web"
)

// inprocCluster is three (or n) nodes in this process, built with node.New
// and Start exactly as cmd/node builds one, with real Badger dirs and real
// sockets on 127.0.0.1.
type inprocCluster struct {
	nodes   []*node.Node
	cfgs    []node.Config
	logFile *os.File
}

// inprocConfigs prepares n node configs under dir that form one cluster
// with --bootstrap-expect n. Ports are fixed now, so the same data dirs
// can later be started again, also as processes.
func inprocConfigs(dir string, n int) ([]node.Config, error) {
	var cfgs []node.Config
	var gossips []string
	for i := range n {
		ports, err := freePorts(3)
		if err != nil {
			return nil, err
		}
		cfg := node.DefaultConfig()
		cfg.DataDir = filepath.Join(dir, fmt.Sprintf("n%d", i+1))
		cfg.Name = fmt.Sprintf("n%d", i+1)
		cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", ports[0])
		cfg.GossipAddr = fmt.Sprintf("127.0.0.1:%d", ports[1])
		cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", ports[2])
		cfg.Advertise = "127.0.0.1"
		cfg.BootstrapExpect = n
		cfg.RateLimit = 0
		cfg.DevSecret = devSecret
		cfg.Version = "bench"
		gossips = append(gossips, cfg.GossipAddr)
		cfgs = append(cfgs, cfg)
	}
	for i := range cfgs {
		cfgs[i].Join = gossips
	}
	return cfgs, nil
}

// startFreshInproc starts n new in-process nodes on free ports in dir
// (adjust may change their configs first). freePorts releases the ports it
// found before the nodes bind them, so another program (a test running in
// parallel) can take one in between; then the nodes' data dirs are removed
// and the start is tried again on new ports, up to startAttempts times.
func startFreshInproc(ctx context.Context, dir string, n int, adjust func([]node.Config)) (*inprocCluster, error) {
	for attempt := 1; ; attempt++ {
		cfgs, err := inprocConfigs(dir, n)
		if err != nil {
			return nil, err
		}
		if adjust != nil {
			adjust(cfgs)
		}
		c, err := startInproc(ctx, dir, cfgs)
		if err == nil || attempt == startAttempts || !portTakenIn(err.Error()) {
			return c, err
		}
		for _, cfg := range cfgs {
			if rerr := os.RemoveAll(cfg.DataDir); rerr != nil {
				return nil, errors.Join(err, rerr)
			}
		}
	}
}

// startInproc starts the nodes of cfgs and waits until each is ready. The
// nodes log at warn level to dir/inproc.log.
func startInproc(ctx context.Context, dir string, cfgs []node.Config) (*inprocCluster, error) {
	f, err := os.OpenFile(filepath.Join(dir, "inproc.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	c := &inprocCluster{cfgs: cfgs, logFile: f}
	logger := slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, cfg := range cfgs {
		n, err := node.New(cfg, logger.With("node", cfg.Name))
		if err != nil {
			c.close()
			return nil, err
		}
		c.nodes = append(c.nodes, n)
	}
	errs := make(chan error, len(c.nodes))
	for _, n := range c.nodes {
		go func() { errs <- n.Start(ctx) }()
	}
	var all []error
	for range c.nodes {
		all = append(all, <-errs)
	}
	if err := errors.Join(all...); err != nil {
		c.close()
		return nil, err
	}
	for _, b := range c.bases() {
		if err := waitReady(ctx, b, 90*time.Second, false); err != nil {
			c.close()
			return nil, err
		}
	}
	return c, nil
}

func (c *inprocCluster) bases() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, "http://"+strings.Replace(n.HTTPAddr(), "0.0.0.0", "127.0.0.1", 1))
	}
	return out
}

func (c *inprocCluster) close() error {
	var errs []error
	for i := len(c.nodes) - 1; i >= 0; i-- {
		errs = append(errs, c.nodes[i].Close())
	}
	if c.logFile != nil {
		errs = append(errs, c.logFile.Close())
	}
	return errors.Join(errs...)
}

// createCommand is a create command as web stamps it for a random donor:
// fresh id and key from web.NewID (the donate page's key is time-ordered
// too), the request's hash, the proposer's clock.
func createCommand(amount int64) donation.Command {
	d := randomDonor()
	return donation.Command{Kind: donation.KindCreate, Create: &donation.Create{
		ID:             webID(),
		IdempotencyKey: webID(),
		RequestHash:    d.requestHash(amount, "EUR"),
		Amount:         donation.Money{Minor: amount, Currency: "EUR"},
		Provider:       "dev",
		Name:           d.Name,
		Email:          d.Email,
		Anonymous:      d.Anonymous,
		Message:        d.Message,
		At:             time.Now().UnixNano(),
	}}
}

// webID is web.NewID for a harness that cannot go on without one (it fails
// only when the system's random source does).
func webID() string {
	id, err := web.NewID()
	if err != nil {
		panic(err)
	}
	return id
}

// paymentCommand confirms the donation id: a succeeded dev event.
func paymentCommand(id string, amount int64) donation.Command {
	m := donation.Money{Minor: amount, Currency: "EUR"}
	return donation.Command{Kind: donation.KindPayment, Payment: &donation.Payment{
		Provider:    "dev",
		EventID:     randomKey("evt_"),
		DonationID:  id,
		Outcome:     donation.OutcomeSucceeded,
		Amount:      &m,
		ProviderRef: randomKey("dev_"),
		At:          time.Now().UnixNano(),
	}}
}

// resubmitted counts the answers "duplicate" to commands this harness made
// fresh: the cluster resubmitted them after a leader change (Apply's
// contract) and the first submission had committed. Like web, the harness
// takes them as success — the donation exists exactly once — and the
// reports say how many there were.
var resubmitted atomic.Int64

// propose sends cmd through n and checks the ledger said ok (or duplicate,
// counted in resubmitted).
func propose(ctx context.Context, n *node.Node, cmd donation.Command) error {
	res, err := n.Propose(ctx, cmd)
	if err != nil {
		return err
	}
	switch res.Code {
	case donation.CodeOK:
	case donation.CodeDuplicate:
		resubmitted.Add(1)
	default:
		return fmt.Errorf("ledger answered %q", res.Code)
	}
	return nil
}
