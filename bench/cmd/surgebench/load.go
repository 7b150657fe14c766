package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// runResult is one closed-loop run: every worker repeats op until the
// duration is over.
type runResult struct {
	Clients  int
	Elapsed  time.Duration
	Lat      latencies // of the operations that succeeded
	Errors   int
	FirstErr error
	CPU      time.Duration        // this process's CPU during the run
	HostBusy time.Duration        // busy CPU time of the whole host during the run
	Procs    time.Duration        // CPU of the node processes during the run, when known
	Sub      map[string]latencies // latencies of the requests inside one operation
	Slow     map[int]int          // stallWindow index → operations started in it that took over slowOp
}

// slowOp and stallWindow define a stall: a window of stallWindow in which
// at least half the clients started an operation that took over slowOp.
// When the whole pipeline stops (every caller waits on the same commit),
// the slow operations bunch up in a few windows instead of spreading out.
const (
	slowOp      = 20 * time.Millisecond
	stallWindow = 100 * time.Millisecond
)

// stalls counts the windows in which at least half the clients started an
// operation slower than slowOp, and all such slow operations.
func (r runResult) stalls() (windows, slow int) {
	for _, n := range r.Slow {
		slow += n
		if 2*n >= r.Clients {
			windows++
		}
	}
	return windows, slow
}

func (r runResult) rate() float64 { return float64(len(r.Lat)) / r.Elapsed.Seconds() }

// closedLoop runs clients workers for d; worker i calls op(ctx, i, seq)
// again as soon as the previous call returned. A failing op is counted,
// and the worker pauses 10 ms before the next call so that a down node does
// not turn into a busy loop.
func closedLoop(ctx context.Context, clients int, d time.Duration, op func(ctx context.Context, worker, seq int) error) runResult {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	end, _ := ctx.Deadline()
	res := runResult{Clients: clients, Slow: map[int]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	cpu0, host0 := selfCPU(), hostBusy()
	start := time.Now()
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat latencies
			slow := map[int]int{}
			errs := 0
			var first error
			for seq := 0; ctx.Err() == nil; seq++ {
				t0 := time.Now()
				err := op(ctx, w, seq)
				if err != nil {
					if ctx.Err() != nil || !time.Now().Before(end) {
						// Cut off by the end of the run (errors are not always
						// wrapped with %w, so do not look at err): neither a
						// success nor a failure. The clock is checked too: on
						// a starved machine the context's timer may not have
						// fired yet when a call that ran into the same
						// deadline returns.
						break
					}
					errs++
					if first == nil {
						first = err
					}
					select {
					case <-ctx.Done():
					case <-time.After(10 * time.Millisecond):
					}
					continue
				}
				d := time.Since(t0)
				lat = append(lat, d)
				if d > slowOp {
					slow[int(t0.Sub(start)/stallWindow)]++
				}
			}
			mu.Lock()
			res.Lat = append(res.Lat, lat...)
			for w, n := range slow {
				res.Slow[w] += n
			}
			res.Errors += errs
			if res.FirstErr == nil {
				res.FirstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.CPU = selfCPU() - cpu0
	res.HostBusy = hostBusy() - host0
	return res
}

// curveRow aggregates the runs of one concurrency level over the rounds.
type curveRow struct {
	clients int
	runs    []runResult
}

func (r *curveRow) rates() []float64 {
	var out []float64
	for _, x := range r.runs {
		out = append(out, x.rate())
	}
	return out
}

func (r *curveRow) pct(f func(summary) time.Duration) []float64 {
	var out []float64
	for _, x := range r.runs {
		out = append(out, ms(f(summarize(x.Lat))))
	}
	return out
}

func (r *curveRow) subPct(name string, f func(summary) time.Duration) []float64 {
	var out []float64
	for _, x := range r.runs {
		if l, ok := x.Sub[name]; ok {
			out = append(out, ms(f(summarize(l))))
		}
	}
	return out
}

func (r *curveRow) errors() int {
	n := 0
	for _, x := range r.runs {
		n += x.Errors
	}
	return n
}

func (r *curveRow) firstErr() error {
	for _, x := range r.runs {
		if x.FirstErr != nil {
			return x.FirstErr
		}
	}
	return nil
}

// cpuPerOp is the median over runs of CPU µs per successful operation,
// with cpu picking which CPU figure.
func (r *curveRow) cpuPerOp(cpu func(runResult) time.Duration) float64 {
	var out []float64
	for _, x := range r.runs {
		if len(x.Lat) > 0 {
			out = append(out, float64(cpu(x).Microseconds())/float64(len(x.Lat)))
		}
	}
	return median(out)
}

// reportErrors prints the first error of every level that had errors and
// fails when a run had no successful operation. level names the
// concurrency ("clients", "donors"), what one success ("command
// committed").
func reportErrors(w io.Writer, rows []*curveRow, level, what string) error {
	for _, r := range rows {
		if r.errors() > 0 {
			fmt.Fprintf(w, "\n%s %d: first error: %v\n", level, r.clients, r.firstErr())
		}
	}
	for _, r := range rows {
		for _, x := range r.runs {
			if len(x.Lat) == 0 {
				return fmt.Errorf("%s %d: no %s: %v", level, r.clients, what, x.FirstErr)
			}
		}
	}
	return nil
}

// order returns the concurrency levels for round r: forwards in odd
// rounds, backwards in even ones, so no level always runs on a warm or a
// cold cluster.
func order(levels []int, round int) []int {
	out := append([]int(nil), levels...)
	if round%2 == 1 {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out
}

// subRecorder collects the latencies of the requests inside an operation
// (create, confirm), sharded by worker so that recording rarely contends.
type subRecorder struct {
	shards [64]struct {
		mu  sync.Mutex
		lat map[string]latencies
	}
}

func (s *subRecorder) record(worker int, name string, d time.Duration) {
	sh := &s.shards[worker%len(s.shards)]
	sh.mu.Lock()
	if sh.lat == nil {
		sh.lat = map[string]latencies{}
	}
	sh.lat[name] = append(sh.lat[name], d)
	sh.mu.Unlock()
}

// drain returns everything recorded and empties the recorder.
func (s *subRecorder) drain() map[string]latencies {
	out := map[string]latencies{}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, v := range sh.lat {
			out[k] = append(out[k], v...)
		}
		sh.lat = nil
		sh.mu.Unlock()
	}
	return out
}
