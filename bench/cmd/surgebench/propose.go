package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
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
			log.printf("round %d clients %4d: %8.0f ops/s  p50 %6s ms  p99 %6s ms  errors %d  load %s",
				round+1, n, r.rate(), fmtMS(ms(s.P50)), fmtMS(ms(s.P99)), r.Errors, loadavg())
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
	if f.cpuprofile != "" {
		pf, err := os.Create(f.cpuprofile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			pf.Close()
			return nil, err
		}
		if f.blockprofile != "" {
			runtime.SetBlockProfileRate(int(time.Millisecond)) // one sample per ms blocked
		}
		r := closedLoop(ctx, f.profileAt, f.duration, op)
		pprof.StopCPUProfile()
		pf.Close()
		if f.blockprofile != "" {
			runtime.SetBlockProfileRate(0)
			bf, err := os.Create(f.blockprofile)
			if err != nil {
				return nil, err
			}
			err = pprof.Lookup("block").WriteTo(bf, 0)
			bf.Close()
			if err != nil {
				return nil, err
			}
		}
		log.printf("profiled run, %d clients: %.0f ops/s; profile in %s (go tool pprof -top %s)", f.profileAt, r.rate(), f.cpuprofile, f.cpuprofile)
	}
	return out, nil
}

func writeCurve(w io.Writer, rows []*curveRow, unit string) {
	t := table{head: []string{"clients", unit + "/s median (min–max)", "p50 ms median", "p99 ms median (min–max)", "errors", "harness process CPU µs/op", "host busy CPU µs/op", "runs"}}
	for _, r := range rows {
		rates := r.rates()
		lo, hi := minMax(rates)
		p99 := r.pct(func(s summary) time.Duration { return s.P99 })
		plo, phi := minMax(p99)
		t.add(itoa(r.clients),
			fmt.Sprintf("**%s** (%s–%s)", fmtInt(median(rates)), fmtInt(lo), fmtInt(hi)),
			fmtMS(median(r.pct(func(s summary) time.Duration { return s.P50 }))),
			fmt.Sprintf("**%s** (%s–%s)", fmtMS(median(p99)), fmtMS(plo), fmtMS(phi)),
			itoa(r.errors()),
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
	cfgs, err := inprocConfigs(dir, 3)
	if err != nil {
		return err
	}
	log.printf("starting 3 in-process nodes in %s", dir)
	c, err := startInproc(ctx, dir, cfgs)
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
