package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

// Goroutine kinds tracewin reports, by the first matching frame of the
// stack the goroutine was first seen with (innermost first).
var traceKinds = []struct{ name, frame string }{
	{"compaction", "badger/v4.(*levelsController)."},
	{"flush", "badger/v4.(*DB).flushMemtable"},
	{"badger writes", "badger/v4.(*DB).doWrites"},
	{"raft", "hashicorp/raft."},
	{"forwarding", "surge/cluster.(*rpc"},
	{"callers", ".closedLoop."}, // main.closedLoop in the binary, the package path in its tests
}

// traceWindows is the CPU time (ms) each goroutine kind ran in each window
// of an execution trace, and the kinds in report order.
type traceWindows struct {
	window time.Duration
	kinds  []string
	cpu    []map[string]float64 // by window index
}

// goKind names the kind of a goroutine from the frames of a stack.
func goKind(frames []string) string {
	for _, f := range frames {
		for _, k := range traceKinds {
			if strings.Contains(f, k.frame) {
				return k.name
			}
		}
	}
	return "other"
}

// readTraceWindows sums, per window, the time each goroutine spent running,
// grouped by kind.
func readTraceWindows(r io.Reader, window time.Duration) (*traceWindows, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, err
	}
	tw := &traceWindows{window: window}
	for _, k := range traceKinds {
		tw.kinds = append(tw.kinds, k.name)
	}
	tw.kinds = append(tw.kinds, "other")
	kind := map[trace.GoID]string{}
	since := map[trace.GoID]trace.Time{} // running since
	var t0 trace.Time
	add := func(k string, from, to trace.Time) {
		for from < to {
			w := int(time.Duration(from-t0) / window)
			end := min(t0+trace.Time(time.Duration(w+1)*window), to)
			for len(tw.cpu) <= w {
				tw.cpu = append(tw.cpu, map[string]float64{})
			}
			tw.cpu[w][k] += float64(end-from) / 1e6
			from = end
		}
	}
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if t0 == 0 {
			t0 = ev.Time()
		}
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != trace.ResourceGoroutine {
			continue
		}
		g := st.Resource.Goroutine()
		if _, ok := kind[g]; !ok {
			var frames []string
			for f := range st.Stack.Frames() {
				frames = append(frames, f.Func)
			}
			if len(frames) > 0 {
				kind[g] = goKind(frames)
			}
		}
		from, to := st.Goroutine()
		switch {
		case to == trace.GoRunning:
			since[g] = ev.Time()
		case from == trace.GoRunning:
			if s, ok := since[g]; ok {
				k, ok := kind[g]
				if !ok {
					k = "other"
				}
				add(k, s, ev.Time())
				delete(since, g)
			}
		}
	}
	return tw, nil
}

// runTraceWin prints, for each window of an execution trace written by
// `surgebench propose --trace`, the CPU milliseconds each kind of goroutine
// ran. Windows where compaction or flushes take most of the CPU while the
// callers' and Raft's share collapses are the stalls the propose table counts.
func runTraceWin(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tracewin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	window := fs.Duration("window", 100*time.Millisecond, "window length")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *window <= 0 {
		return fmt.Errorf("%w: tracewin [--window d] TRACE-FILE", errUsage)
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	tw, err := readTraceWindows(f, *window)
	if err != nil {
		return fmt.Errorf("read trace %s: %w", fs.Arg(0), err)
	}
	t := table{head: append([]string{"from s"}, tw.kinds...)}
	for i, m := range tw.cpu {
		row := []string{fmt.Sprintf("%.1f", (time.Duration(i) * tw.window).Seconds())}
		for _, k := range tw.kinds {
			row = append(row, fmt.Sprintf("%.0f", m[k]))
		}
		t.add(row...)
	}
	fmt.Fprintf(stdout, "CPU ms run per %s window, by goroutine kind (%s)\n\n", tw.window, fs.Arg(0))
	t.write(stdout)
	return nil
}
