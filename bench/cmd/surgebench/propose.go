package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"time"
)

// intList parses "1,8,64".
func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 100000 {
			return nil, fmt.Errorf("%w: %q is not a count from 1 to 100000", errUsage, f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty list", errUsage)
	}
	return out, nil
}

type curveFlags struct {
	smoke        bool
	clients      string
	duration     time.Duration
	warmup       time.Duration
	rounds       int
	dir          string
	keep         bool
	cpuprofile   string
	blockprofile string
	trace        string
	profileAt    int
}

func (f *curveFlags) register(fs *flag.FlagSet, clients string) {
	fs.BoolVar(&f.smoke, "smoke", envSmoke(), "smoke mode: a few seconds on small data; exit 0 when the harness worked")
	fs.StringVar(&f.clients, "clients", clients, "comma-separated concurrency levels")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "length of one run")
	fs.DurationVar(&f.warmup, "warmup", 3*time.Second, "warm-up before the first round")
	fs.IntVar(&f.rounds, "rounds", 3, "rounds; each round runs every level once, alternating direction")
	fs.StringVar(&f.dir, "dir", "", "work directory (default: a temporary one, removed afterwards)")
	fs.BoolVar(&f.keep, "keep", false, "keep the temporary work directory")
	fs.StringVar(&f.cpuprofile, "cpuprofile", "", "after the rounds, take a CPU profile of one extra run into this file")
	fs.StringVar(&f.blockprofile, "blockprofile", "", "with --cpuprofile: also write a block profile (where goroutines waited) of the profiled run")
	fs.StringVar(&f.trace, "trace", "", "after the rounds, write an execution trace (go tool trace) of one extra run into this file (with --cpuprofile: of the profiled run)")
	fs.IntVar(&f.profileAt, "profile-clients", 256, "concurrency of the profiled run")
}

func (f *curveFlags) apply() ([]int, error) {
	if f.smoke {
		f.clients = "1,8"
		f.duration = time.Second
		f.warmup = 500 * time.Millisecond
		f.rounds = 1
		if f.profileAt > 8 {
			f.profileAt = 8
		}
	}
	if f.rounds < 1 || f.duration <= 0 {
		return nil, fmt.Errorf("%w: rounds and duration must be positive", errUsage)
	}
	return intList(f.clients)
}

// runCurve runs op at every level for the rounds and returns the rows.
func runCurve(ctx context.Context, f *curveFlags, levels []int, log *progress, op func(ctx context.Context, worker, seq int) error, warmed func(), check func(*runResult) error) ([]*curveRow, error) {
	if f.warmup > 0 {
		log.printf("warm-up %s at %d clients", f.warmup, levels[len(levels)-1])
		r := closedLoop(ctx, levels[len(levels)-1], f.warmup, op)
		if len(r.Lat) == 0 {
			return nil, fmt.Errorf("warm-up: nothing succeeded: %v", r.FirstErr)
		}
	}
	if warmed != nil {
		warmed()
	}
	rows := map[int]*curveRow{}
	var out []*curveRow
	for _, n := range levels {
		if rows[n] == nil {
			rows[n] = &curveRow{clients: n}
			out = append(out, rows[n])
		}
	}
	for round := range f.rounds {
		for _, n := range order(levels, round) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			r := closedLoop(ctx, n, f.duration, op)
			s := summarize(r.Lat)
			stalls, slow := r.stalls()
			log.printf("round %d clients %4d: %8.0f ops/s  p50 %6s ms  p99 %6s ms  errors %d  over %s: %d ops, %d stalls  load %s",
				round+1, n, r.rate(), fmtMS(ms(s.P50)), fmtMS(ms(s.P99)), r.Errors, slowOp, slow, stalls, loadavg())
			if r.FirstErr != nil {
				log.printf("  first error: %v", r.FirstErr)
			}
			if check != nil {
				if err := check(&r); err != nil {
					return nil, err
				}
			}
			rows[n].runs = append(rows[n].runs, r)
		}
	}
	if f.cpuprofile != "" || f.trace != "" {
		r, err := profiledRun(ctx, f, op)
		if err != nil {
			return nil, err
		}
		stalls, slow := r.stalls()
		log.printf("profiled run, %d clients: %.0f ops/s, over %s: %d ops, %d stalls; %s",
			f.profileAt, r.rate(), slowOp, slow, stalls, strings.Join(profileFiles(f), ", "))
	}
	return out, nil
}

// profiledRun runs op once more at f.profileAt clients with the CPU
// profile, block profile and execution trace that f asks for.
func profiledRun(ctx context.Context, f *curveFlags, op func(ctx context.Context, worker, seq int) error) (runResult, error) {
	var stops []func() error
	defer func() {
		for _, stop := range stops {
			_ = stop()
		}
	}()
	// record creates path and starts writing a profile into it; the
	// returned stop ends the profile and closes the file.
	record := func(path string, start func(io.Writer) error, end func()) error {
		out, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := start(out); err != nil {
			out.Close()
			return err
		}
		stops = append(stops, func() error { end(); return out.Close() })
		return nil
	}
	if f.cpuprofile != "" {
		if err := record(f.cpuprofile, pprof.StartCPUProfile, pprof.StopCPUProfile); err != nil {
			return runResult{}, err
		}
		if f.blockprofile != "" {
			runtime.SetBlockProfileRate(int(time.Millisecond)) // one sample per ms blocked
			stops = append(stops, func() error { runtime.SetBlockProfileRate(0); return nil })
		}
	}
	if f.trace != "" {
		if err := record(f.trace, trace.Start, trace.Stop); err != nil {
			return runResult{}, err
		}
	}
	r := closedLoop(ctx, f.profileAt, f.duration, op)
	var errs []error
	for _, stop := range stops {
		errs = append(errs, stop())
	}
	stops = nil
	if f.cpuprofile != "" && f.blockprofile != "" {
		bf, err := os.Create(f.blockprofile)
		if err != nil {
			return r, err
		}
		errs = append(errs, pprof.Lookup("block").WriteTo(bf, 0), bf.Close())
	}
	return r, errors.Join(errs...)
}

// profileFiles names what profiledRun wrote, with the command that reads it.
func profileFiles(f *curveFlags) []string {
	var out []string
	if f.cpuprofile != "" {
		out = append(out, "CPU profile in "+f.cpuprofile+" (go tool pprof -top "+f.cpuprofile+")")
		if f.blockprofile != "" {
			out = append(out, "block profile in "+f.blockprofile)
		}
	}
	if f.trace != "" {
		out = append(out, "execution trace in "+f.trace+" (go tool trace "+f.trace+")")
	}
	return out
}

func writeCurve(w io.Writer, rows []*curveRow, unit string) {
	t := table{head: []string{"clients", unit + "/s median (min–max)", "p50 ms median", "p99 ms median (min–max)", "errors", "ops over " + slowOp.String() + ", median", "stalls, median", "harness process CPU µs/op", "host busy CPU µs/op", "runs"}}
	for _, r := range rows {
		var slow, stalls []float64
		for _, x := range r.runs {
			w, n := x.stalls()
			stalls, slow = append(stalls, float64(w)), append(slow, float64(n))
		}
		rates := r.rates()
		lo, hi := minMax(rates)
		p99 := r.pct(func(s summary) time.Duration { return s.P99 })
		plo, phi := minMax(p99)
		t.add(itoa(r.clients),
			fmt.Sprintf("**%s** (%s–%s)", fmtInt(median(rates)), fmtInt(lo), fmtInt(hi)),
			fmtMS(median(r.pct(func(s summary) time.Duration { return s.P50 }))),
			fmt.Sprintf("**%s** (%s–%s)", fmtMS(median(p99)), fmtMS(plo), fmtMS(phi)),
			itoa(r.errors()),
			fmtInt(median(slow)),
			fmtInt(median(stalls)),
			fmtInt(r.cpuPerOp(func(x runResult) time.Duration { return x.CPU })),
			fmtInt(r.cpuPerOp(func(x runResult) time.Duration { return x.HostBusy })),
			itoa(len(r.runs)))
	}
	t.write(w)
}

// runPropose: design brief item 2a. Three nodes in this process; N
// goroutines spread over the nodes call (*node.Node).Propose with create
// commands; committed commands/s and latency per level.
func runPropose(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("propose", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f curveFlags
	f.register(fs, "1,8,64,256,512")
	if err := fs.Parse(args); err != nil {
		return err
	}
	levels, err := f.apply()
	if err != nil {
		return err
	}
	log := &progress{w: stderr}
	dir, cleanup, err := workDir(f.dir, "surgebench-propose-", f.keep)
	if err != nil {
		return err
	}
	defer cleanup()
	log.printf("starting 3 in-process nodes in %s", dir)
	c, err := startFreshInproc(ctx, dir, 3, nil)
	if err != nil {
		return err
	}
	defer c.close()
	op := func(ctx context.Context, w, _ int) error {
		return propose(ctx, c.nodes[w%len(c.nodes)], createCommand(2500))
	}
	// Propose returns after the entry committed and the leader's FSM applied
	// it, and propose checks the ledger said ok: each success is a commit.
	dups := map[int]int64{} // clients → answers "duplicate" over its runs
	check := func(r *runResult) error {
		dups[r.Clients] += resubmitted.Swap(0)
		return nil
	}
	rows, err := runCurve(ctx, &f, levels, log, op, func() { resubmitted.Store(0) }, check)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "## propose: consensus path, 3 in-process nodes\n\n")
	fmt.Fprintf(stdout, "machine: %s\n\n", machine())
	fmt.Fprintf(stdout, "command: surgebench propose %s\n\n", strings.Join(args, " "))
	fmt.Fprintf(stdout, "%d rounds × %s per level, clients spread over the 3 nodes (goroutine i → node i%%3); one create command per Propose.\n\n", f.rounds, f.duration)
	writeCurve(stdout, rows, "commands")
	for _, r := range rows {
		if n := dups[r.clients]; n > 0 {
			fmt.Fprintf(stdout, "\nclients %d: %d commands answered duplicate over the runs (resubmitted by the cluster after a leader change; committed once, counted as success)\n", r.clients, n)
		}
	}
	return reportErrors(stdout, rows, "clients", "command committed")
}
