// Command clusterctl is the operator's tool for a Surge cluster. It talks
// to the admin API (/admin/v1/) of any node over HTTP, through web.Client,
// and imports nothing else of Surge.
//
// Run "clusterctl help" for the commands, flags and exit codes.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/surgefund/surge/web"
)

// Exit codes.
const (
	exitOK       = 0 // done; status: the cluster is healthy
	exitDegraded = 1 // status only: the cluster works but lost redundancy
	exitError    = 2 // an error, a usage mistake, or status: the cluster is unavailable
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{
		stdin:     os.Stdin,
		stdout:    os.Stdout,
		stderr:    os.Stderr,
		stdinTTY:  isTerminal(os.Stdin),
		stdoutTTY: isTerminal(os.Stdout),
		stderrTTY: isTerminal(os.Stderr),
		getenv:    os.Getenv,
	})
	stop()
	os.Exit(code)
}

// env is the outside world of one run, so tests can drive it.
type env struct {
	stdin                          io.Reader
	stdout, stderr                 io.Writer
	stdinTTY, stdoutTTY, stderrTTY bool
	getenv                         func(string) string
	now                            func() time.Time // for progress rates; nil = time.Now
}

func isTerminal(f *os.File) bool { return isTerminalFD(f.Fd()) }

// options are the flags every command accepts.
type options struct {
	addr    string
	token   string
	json    bool
	timeout time.Duration
	yes     bool
	help    bool
}

// usageError is a mistake on the command line: it prints the command's
// usage and exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// command is one subcommand.
type command struct {
	name    string
	args    string // synopsis of the positional arguments
	summary string
	help    string // details and examples
	minArgs int
	maxArgs int
	run     func(ctx context.Context, a *app, args []string) (int, error)
}

func lookup(name string) *command {
	for _, c := range commandList() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// app is one run: the parsed options, the client and the streams.
type app struct {
	env
	opts   options
	client *web.Client
}

func run(ctx context.Context, args []string, e env) int {
	if e.now == nil {
		e.now = time.Now
	}
	if len(args) == 0 {
		writeOverview(e.stderr)
		return exitError
	}
	name, args := splitCommand(args)
	if name == "" {
		if slices.ContainsFunc(args, isHelpFlag) {
			writeOverview(e.stdout)
			return exitOK
		}
		fmt.Fprintf(e.stderr, "clusterctl: no command among %q\n\n", args)
		writeOverview(e.stderr)
		return exitError
	}
	cmd := lookup(name)
	if cmd == nil {
		fmt.Fprintf(e.stderr, "clusterctl: unknown command %q\n\n", name)
		writeOverview(e.stderr)
		return exitError
	}
	opts, pos, err := parseFlags(cmd, args, e)
	if err != nil {
		fmt.Fprintf(e.stderr, "clusterctl %s: %v\n\n", cmd.name, err)
		writeCommandHelp(e.stderr, cmd)
		return exitError
	}
	if opts.help {
		writeCommandHelp(e.stdout, cmd)
		return exitOK
	}
	if len(pos) < cmd.minArgs || (cmd.maxArgs >= 0 && len(pos) > cmd.maxArgs) {
		fmt.Fprintf(e.stderr, "clusterctl %s: wrong number of arguments\n\n", cmd.name)
		writeCommandHelp(e.stderr, cmd)
		return exitError
	}
	a := &app{env: e, opts: opts}
	if cmd.name != "help" {
		if a.client, err = web.NewClient(opts.addr, opts.token, web.WithTimeout(opts.timeout)); err != nil {
			fmt.Fprintf(e.stderr, "clusterctl: %v\n", err)
			return exitError
		}
	}
	code, err := cmd.run(ctx, a, pos)
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(e.stderr, "clusterctl %s: %v\n\n", cmd.name, err)
			writeCommandHelp(e.stderr, cmd)
			return exitError
		}
		fmt.Fprintf(e.stderr, "clusterctl %s: %v\n", cmd.name, explain(err, opts))
		return exitError
	}
	return code
}

func isHelpFlag(a string) bool { return a == "-h" || a == "--help" || a == "-help" }

// splitCommand finds the command name among args, so that the common flags
// may also come before it (`clusterctl --addr URL status`, as with
// `clusterctl status --addr URL`). It returns the name ("" when there is
// none) and every other argument in order. Which flags take the next
// argument as their value comes from the flag set parseFlags uses.
func splitCommand(args []string) (string, []string) {
	fs := commonFlags("", &options{})
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			return a, append(slices.Clone(args[:i]), args[i+1:]...)
		}
		if a == "--" {
			break
		}
		if f := fs.Lookup(strings.TrimLeft(a, "-")); f != nil && !strings.Contains(a, "=") && !isBoolFlag(f) {
			i++ // its value
		}
	}
	return "", args
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// commonFlags is the flag set of every command, parsing into o with o's
// values as the defaults.
func commonFlags(name string, o *options) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.addr, "addr", o.addr, "")
	fs.StringVar(&o.token, "token", o.token, "")
	fs.BoolVar(&o.json, "json", false, "")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "")
	fs.BoolVar(&o.yes, "yes", false, "")
	fs.BoolVar(&o.yes, "y", false, "")
	fs.BoolVar(&o.help, "h", false, "")
	fs.BoolVar(&o.help, "help", false, "")
	return fs
}

// parseFlags reads the common flags anywhere among the arguments and
// returns the positional ones. Flags take their defaults from SURGE_ADDR
// and SURGE_TOKEN.
func parseFlags(cmd *command, args []string, e env) (options, []string, error) {
	o := options{addr: "http://127.0.0.1:8080", timeout: 10 * time.Second}
	if v := e.getenv("SURGE_ADDR"); v != "" {
		o.addr = v
	}
	o.token = e.getenv("SURGE_TOKEN")
	fs := commonFlags(cmd.name, &o)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return o, nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if o.timeout <= 0 {
		return o, nil, errors.New("--timeout must be positive")
	}
	return o, pos, nil
}

// explain adds a hint to the errors operators meet most.
func explain(err error, o options) string {
	var ae *web.APIError
	if errors.As(err, &ae) {
		switch {
		case ae.Status == 401 && o.token == "":
			return err.Error() + "\n  hint: pass --token or set SURGE_TOKEN (without a token the node answers loopback callers only)"
		case ae.Status == 401:
			return err.Error() + "\n  hint: check --token / SURGE_TOKEN against the node's --admin-token"
		case ae.Code == "not_leader" && ae.LeaderHTTPAddr != "":
			return err.Error() + "\n  hint: retry with --addr http://" + ae.LeaderHTTPAddr
		}
		return err.Error()
	}
	msg := err.Error()
	if strings.Contains(msg, "connection refused") {
		msg += "\n  hint: is a node listening at " + o.addr + "? (--addr or SURGE_ADDR)"
	}
	return msg
}

// confirm asks a yes/no question on the terminal. Without a terminal it
// refuses unless --yes was given.
func (a *app) confirm(question string) (bool, error) {
	if a.opts.yes {
		return true, nil
	}
	if !a.stdinTTY {
		return false, errors.New("refusing without confirmation: no terminal to ask on; pass --yes")
	}
	fmt.Fprintf(a.stderr, "%s [y/N] ", question)
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && line == "" {
		return false, nil
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}
