package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// testCluster is what the HTTP harnesses drive: node base URLs and, for
// processes, their PIDs (for CPU and memory).
type testCluster struct {
	bases []string
	pids  func() []int
	close func()
}

// startTestCluster starts 3 nodes: processes of the node binary, or (for
// CPU profiles of the whole path) nodes in this process.
func startTestCluster(ctx context.Context, dir, bin string, inprocess bool, log *progress) (*testCluster, error) {
	if inprocess {
		log.printf("starting 3 in-process nodes in %s", dir)
		c, err := startFreshInproc(ctx, dir, 3, nil)
		if err != nil {
			return nil, err
		}
		return &testCluster{bases: c.bases(), pids: func() []int { return nil }, close: func() { c.close() }}, nil
	}
	bin, err := nodeBinary(ctx, bin, dir)
	if err != nil {
		return nil, err
	}
	pc, err := startProcCluster(ctx, dir, bin, 3, log)
	if err != nil {
		return nil, err
	}
	pids := func() []int {
		var out []int
		for _, p := range pc.procs {
			if id := p.pid(); id != 0 {
				out = append(out, id)
			}
		}
		return out
	}
	return &testCluster{bases: pc.bases(), pids: pids, close: pc.close}, nil
}

func sumCPU(pids []int) time.Duration {
	var t time.Duration
	for _, p := range pids {
		c, _ := procCPU(p)
		t += c
	}
	return t
}

// runWrites: design brief item 2b. Donations created with POST
// /api/v1/donations on one node and confirmed with a signed POST
// /payments/dev/notify on the next one, by N clients spread over the
// three nodes. One operation = one confirmed donation.
func runWrites(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	hc, err := startHTTPCurve(ctx, "writes", "8,32,64,128,256", args, stderr)
	if err != nil {
		return err
	}
	defer hc.close()
	f, tc, client, sub := &hc.f, hc.tc, hc.client, &hc.sub
	op := func(ctx context.Context, w, _ int) error {
		n := len(tc.bases)
		t0 := time.Now()
		d, err := createDonation(ctx, client, tc.bases[w%n], 2500)
		if err != nil {
			return err
		}
		t1 := time.Now()
		sub.record(w, "create", t1.Sub(t0))
		if err := confirmDonation(ctx, client, tc.bases[(w+1)%n], d); err != nil {
			return err
		}
		sub.record(w, "confirm", time.Since(t1))
		return nil
	}

	rows, err := hc.run(ctx, op, 0, "confirmations acknowledged")
	if err != nil {
		return err
	}

	mode := "3 node processes on 127.0.0.1 (GOMAXPROCS = all cores, unpinned)"
	if hc.inprocess {
		mode = "3 nodes in the harness process"
	}
	fmt.Fprintf(stdout, "## writes: HTTP create + signed confirm, %s\n\n", mode)
	fmt.Fprintf(stdout, "machine: %s\n\n", machine())
	fmt.Fprintf(stdout, "command: surgebench writes %s\n\n", strings.Join(args, " "))
	fmt.Fprintf(stdout, "%d rounds × %s per level. One operation = POST /api/v1/donations on node i%%3, then a signed POST /payments/dev/notify on node (i+1)%%3; both answer only after their Raft entry committed. Every run checks that the public donation count grew by at least the number of acknowledged confirmations.\n\n", f.rounds, f.duration)
	t := table{head: []string{"clients", "confirmed/s median (min–max)", "create p50 / p99 ms", "confirm p50 / p99 ms", "create+confirm p99 ms (min–max)", "errors", "node CPU µs per confirmed donation", "harness CPU µs per op"}}
	for _, r := range rows {
		rates := r.rates()
		lo, hi := minMax(rates)
		p99 := r.pct(func(s summary) time.Duration { return s.P99 })
		plo, phi := minMax(p99)
		p50of := func(name string) string {
			return fmtMS(median(r.subPct(name, func(s summary) time.Duration { return s.P50 })))
		}
		p99of := func(name string) string {
			return fmtMS(median(r.subPct(name, func(s summary) time.Duration { return s.P99 })))
		}
		t.add(itoa(r.clients),
			fmt.Sprintf("**%s** (%s–%s)", fmtInt(median(rates)), fmtInt(lo), fmtInt(hi)),
			p50of("create")+" / **"+p99of("create")+"**",
			p50of("confirm")+" / **"+p99of("confirm")+"**",
			fmt.Sprintf("%s (%s–%s)", fmtMS(median(p99)), fmtMS(plo), fmtMS(phi)),
			itoa(r.errors()),
			fmtInt(r.cpuPerOp(func(x runResult) time.Duration { return x.Procs })),
			fmtInt(r.cpuPerOp(func(x runResult) time.Duration { return x.CPU })))
	}
	t.write(stdout)
	return reportErrors(stdout, rows, "clients", "donation confirmed")
}

// httpCurve is what the HTTP load curves (writes, journeys) share: the
// flags, a work dir, a 3-node cluster, and a client sized for the highest
// level.
type httpCurve struct {
	f         curveFlags
	levels    []int
	log       *progress
	tc        *testCluster
	client    *http.Client
	sub       subRecorder // the requests inside one operation
	inprocess bool
	cleanup   func()
}

func startHTTPCurve(ctx context.Context, name, levels string, args []string, stderr io.Writer) (*httpCurve, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	hc := &httpCurve{log: &progress{w: stderr}}
	hc.f.register(fs, levels)
	bin := fs.String("node-bin", "", "node binary (default: build cmd/node)")
	inprocess := fs.Bool("inprocess", false, "run the 3 nodes inside this process (so --cpuprofile covers them)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	hc.inprocess = *inprocess
	var err error
	if hc.levels, err = hc.f.apply(); err != nil {
		return nil, err
	}
	dir, cleanup, err := workDir(hc.f.dir, "surgebench-"+name+"-", hc.f.keep)
	if err != nil {
		return nil, err
	}
	if hc.tc, err = startTestCluster(ctx, dir, *bin, *inprocess, hc.log); err != nil {
		cleanup()
		return nil, err
	}
	hc.cleanup = cleanup
	hc.client = httpClient(slices.Max(hc.levels))
	return hc, nil
}

func (hc *httpCurve) close() {
	hc.tc.close()
	hc.cleanup()
}

// run runs the curve. Every acknowledged operation must be in the total:
// it compares the donation count on a synced node before and after each
// run (after settle, for operations cut off at the end of the run).
// Operations cut off may have committed without an ack, so the total may
// grow by more, never by less; what names the acknowledged operations in
// the error.
func (hc *httpCurve) run(ctx context.Context, op func(ctx context.Context, worker, seq int) error, settle time.Duration, what string) ([]*curveRow, error) {
	tc, client, sub := hc.tc, hc.client, &hc.sub
	last, err := syncedTotal(ctx, client, tc.bases[0])
	if err != nil {
		return nil, err
	}
	pids := tc.pids()
	cpu0 := sumCPU(pids)
	check := func(r *runResult) error {
		r.Sub = sub.drain()
		if len(pids) > 0 {
			r.Procs = sumCPU(pids) - cpu0
		}
		time.Sleep(settle)
		after, err := syncedTotal(ctx, client, tc.bases[len(tc.bases)-1])
		if err != nil {
			return err
		}
		got := after.Donations - last.Donations
		last = after
		if got < int64(len(r.Lat)) {
			return fmt.Errorf("clients %d: %d %s but the total grew by only %d", r.Clients, len(r.Lat), what, got)
		}
		cpu0 = sumCPU(pids)
		return nil
	}
	rows, err := runCurve(ctx, &hc.f, hc.levels, hc.log, op, func() { sub.drain(); cpu0 = sumCPU(pids) }, check)
	sub.drain()
	return rows, err
}
