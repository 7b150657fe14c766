// Command surgebench measures a Surge cluster on one machine. Each
// subcommand is one harness of bench/README.md:
//
//	surgebench propose   consensus path: (*node.Node).Propose on 3 in-process nodes
//	surgebench writes    HTTP path: create + signed confirm on 3 node processes
//	surgebench failover  SIGKILL the leader under load, time to the next ack
//	surgebench catchup   1M donations: RSS per node under load, 4th node catch-up
//	surgebench journeys  full donor journeys through pages and the dev gateway
//	surgebench tracewin  CPU per window by goroutine kind, from propose --trace
//	surgebench serve     one in-process node with a CPU profile, for wrk
//
// Every subcommand takes --smoke: a few seconds on small data, exit 0 when
// the harness worked (speed is not judged). Results are printed as
// markdown tables on stdout; progress goes to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"propose", "consensus path: Propose on 3 in-process nodes, throughput and latency curve", runPropose},
	{"writes", "HTTP path: create + signed confirm on 3 nodes, confirmed/s and p99 curve", runWrites},
	{"failover", "SIGKILL the leader under load: time to the next acknowledged write; leader changes under steady load", runFailover},
	{"catchup", "1M donations: RSS per node under load, then a 4th node joins and catches up", runCatchup},
	{"journeys", "full donor journeys (pages, form, gateway, return, success) on 3 nodes", runJourneys},
	{"tracewin", "CPU per 100-ms window by goroutine kind, from an execution trace of propose --trace", runTraceWin},
	{"serve", "one in-process node for --duration with a CPU profile (profile the page path under wrk)", runServe},
	{"load-inproc", "(internal) load an in-process 3-node cluster and wait to be killed", runLoadInproc},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "surgebench %s: %v\n", c.name, err)
			return 2
		default:
			fmt.Fprintf(stderr, "surgebench %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "surgebench: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

var errUsage = errors.New("usage")

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: surgebench <command> [flags]   (each command has -h)")
	fmt.Fprintln(w)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
}
