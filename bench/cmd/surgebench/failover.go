package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// ackLog records when each acknowledged request was sent and answered.
type ackLog struct {
	mu     sync.Mutex
	acks   []ackEvent
	errs   []time.Time
	firsts []error
}

type ackEvent struct{ sent, acked time.Time }

func (a *ackLog) ack(sent time.Time) {
	now := time.Now()
	a.mu.Lock()
	a.acks = append(a.acks, ackEvent{sent, now})
	a.mu.Unlock()
}

func (a *ackLog) fail(err error) {
	a.mu.Lock()
	a.errs = append(a.errs, time.Now())
	if len(a.firsts) < 5 {
		a.firsts = append(a.firsts, err)
	}
	a.mu.Unlock()
}

// firstAckAfter is the first ack of a request sent after t.
func (a *ackLog) firstAckAfter(t time.Time) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var best time.Time
	for i := len(a.acks) - 1; i >= 0; i-- {
		e := a.acks[i]
		if e.acked.Before(t) {
			break // acks are appended in ack order
		}
		if e.sent.After(t) && (best.IsZero() || e.acked.Before(best)) {
			best = e.acked
		}
	}
	return best, !best.IsZero()
}

// longestGap is the longest time without any ack within [from, to].
func (a *ackLog) longestGap(from, to time.Time) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	prev := from
	var gap time.Duration
	for _, e := range a.acks {
		if e.acked.Before(from) || e.acked.After(to) {
			continue
		}
		gap = max(gap, e.acked.Sub(prev))
		prev = e.acked
	}
	return max(gap, to.Sub(prev))
}

func (a *ackLog) counts(from, to time.Time) (acks, errs int, lat []time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.acks {
		if !e.sent.Before(from) && e.sent.Before(to) {
			acks++
			lat = append(lat, e.acked.Sub(e.sent))
		}
	}
	for _, t := range a.errs {
		if !t.Before(from) && t.Before(to) {
			errs++
		}
	}
	return acks, errs, lat
}

// pacedWriters runs writers that together start rate donations per second
// (create on the writer's node, then a signed confirm on the same node);
// each request is one acknowledged write. A writer that meets an error
// moves to the next node and retries 10 ms later. It returns the number of
// confirmations acknowledged once ctx ends.
func pacedWriters(ctx context.Context, bases []string, writers int, rate float64, acks *ackLog) (confirmed int64) {
	client := httpClient(writers)
	interval := time.Duration(float64(writers) / rate * float64(time.Second))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := w % len(bases)
			next := time.Now().Add(time.Duration(w) * interval / time.Duration(writers))
			var n int64
			for ctx.Err() == nil {
				if d := time.Until(next); d > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(d):
					}
					if ctx.Err() != nil {
						break
					}
				}
				next = maxTime(next.Add(interval), time.Now())
				base := bases[node]
				t0 := time.Now()
				d, err := createDonation(ctx, client, base, 1000)
				if err == nil {
					acks.ack(t0)
					t0 = time.Now()
					err = confirmDonation(ctx, client, base, d)
					if err == nil {
						acks.ack(t0)
						n++
					}
				}
				if err != nil && ctx.Err() == nil {
					acks.fail(err)
					node = (node + 1) % len(bases)
					select {
					case <-ctx.Done():
					case <-time.After(10 * time.Millisecond):
					}
				}
			}
			mu.Lock()
			confirmed += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	client.CloseIdleConnections()
	return confirmed
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

type killRound struct {
	victim       string
	how          string
	recovery     time.Duration // kill -> first ack of a request sent after the kill
	newLeader    time.Duration // kill -> another node logged "gained leadership" (0 if not seen)
	gap          time.Duration // longest time without any ack around the kill
	failed       int           // failed requests from the kill to recovery + 1 s
	restartReady time.Duration // restart -> /readyz?sync 200
}

// runFailover: design brief item 3.
func runFailover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("failover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	smoke := fs.Bool("smoke", false, "smoke mode: 2 kills and a 3 s steady window; exit 0 when the harness worked")
	kills := fs.Int("kills", 20, "leader kills")
	rate := fs.Float64("rate", 200, "donations per second started by the writers (each is 2 writes: create + confirm)")
	writers := fs.Int("writers", 16, "concurrent writers")
	settle := fs.Duration("settle", 2*time.Second, "steady load before each kill")
	steady := fs.Duration("steady", 10*time.Minute, "steady-load window after the kills in which leader changes are counted (0 skips)")
	bin := fs.String("node-bin", "", "node binary (default: build cmd/node)")
	dirFlag := fs.String("dir", "", "work directory (default: a temporary one, removed afterwards)")
	keep := fs.Bool("keep", false, "keep the temporary work directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *smoke || envSmoke() {
		*kills, *steady, *settle = 2, 3*time.Second, time.Second
	}
	if *kills < 0 || *rate <= 0 || *writers < 1 {
		return fmt.Errorf("%w: kills >= 0, rate > 0, writers >= 1", errUsage)
	}
	log := &progress{w: stderr}
	dir, nodeBin, cleanup, err := nodeWorkDir(ctx, *dirFlag, "surgebench-failover-", *keep, *bin)
	if err != nil {
		return err
	}
	defer cleanup()
	pc, err := startProcCluster(ctx, dir, nodeBin, 3, log)
	if err != nil {
		return err
	}
	defer pc.close()

	acks := &ackLog{}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var confirmed int64
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		confirmed = pacedWriters(loadCtx, pc.bases(), *writers, *rate, acks)
	}()

	var rounds []killRound
	for k := range *kills {
		if err := pc.waitReady(ctx, 60*time.Second); err != nil {
			return fmt.Errorf("kill %d: cluster not ready: %w", k+1, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(*settle):
		}
		var victim *proc
		var how string
		deadline := time.Now().Add(30 * time.Second)
		for victim == nil {
			v, h, err := pc.leader(ctx)
			if err == nil {
				victim, how = v, h
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("kill %d: find leader: %w", k+1, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		r := killRound{victim: victim.name, how: how}
		gains := map[*proc]time.Time{}
		for _, p := range pc.procs {
			gains[p] = bestGain(p)
		}
		tKill := time.Now()
		victim.kill()
		var ackAt time.Time
		for {
			if t, ok := acks.firstAckAfter(tKill); ok {
				ackAt = t
				break
			}
			if time.Since(tKill) > 60*time.Second {
				return fmt.Errorf("kill %d: no write acknowledged within 60s of killing %s", k+1, victim.name)
			}
			time.Sleep(5 * time.Millisecond)
		}
		r.recovery = ackAt.Sub(tKill)
		time.Sleep(time.Second)
		for _, p := range pc.procs {
			if g := bestGain(p); p != victim && g.After(gains[p]) && (r.newLeader == 0 || g.Sub(tKill) < r.newLeader) {
				r.newLeader = g.Sub(tKill)
			}
		}
		r.gap = acks.longestGap(tKill.Add(-500*time.Millisecond), ackAt.Add(500*time.Millisecond))
		_, r.failed, _ = acks.counts(tKill, ackAt.Add(time.Second))
		tRestart := time.Now()
		if err := victim.start(ctx); err != nil {
			return fmt.Errorf("kill %d: restart %s: %w", k+1, victim.name, err)
		}
		if err := waitReady(ctx, victim.base(), 60*time.Second, true); err != nil {
			return fmt.Errorf("kill %d: %s after restart: %w", k+1, victim.name, err)
		}
		r.restartReady = time.Since(tRestart)
		log.printf("kill %2d: leader %s (found by %s): next ack after %s, new leader logged after %s, longest ack gap %s, %d failed requests; restart→ready %s; load %s",
			k+1, r.victim, r.how, r.recovery.Round(time.Millisecond), r.newLeader.Round(time.Millisecond), r.gap.Round(time.Millisecond), r.failed, r.restartReady.Round(time.Millisecond), loadavg())
		rounds = append(rounds, r)
	}

	var steadyChanges, steadyAcks, steadyErrs int
	var steadyLat []time.Duration
	var rssMax []int64
	if *steady > 0 {
		if err := pc.waitReady(ctx, 60*time.Second); err != nil {
			return fmt.Errorf("steady window: %w", err)
		}
		log.printf("steady window: %s at %.0f donations/s", *steady, *rate)
		g0 := pc.gains()
		t0 := time.Now()
		rssMax = make([]int64, len(pc.procs))
		tick := time.NewTicker(time.Second)
	wait:
		for time.Since(t0) < *steady {
			select {
			case <-ctx.Done():
				tick.Stop()
				return ctx.Err()
			case <-tick.C:
				for i, p := range pc.procs {
					if m, err := readProcMem(p.pid()); err == nil {
						rssMax[i] = max(rssMax[i], m.rss)
					}
				}
				if time.Since(t0) >= *steady {
					break wait
				}
			}
		}
		tick.Stop()
		steadyChanges = pc.gains() - g0
		steadyAcks, steadyErrs, steadyLat = acks.counts(t0, time.Now())
	}
	stopLoad()
	<-loadDone

	// Nothing acknowledged may be lost: every acknowledged confirmation is
	// in the total (a confirmation cut off by a kill may have committed
	// without an ack, so the total may be larger).
	client := httpClient(4)
	tot, err := syncedTotal(ctx, client, pc.procs[0].base())
	if err != nil {
		return err
	}
	if confirmed == 0 {
		return fmt.Errorf("no confirmation acknowledged over the whole run: %v", errors.Join(acks.firsts...))
	}
	if tot.Donations < confirmed {
		return fmt.Errorf("lost writes: %d confirmations acknowledged, total counts %d donations", confirmed, tot.Donations)
	}

	fmt.Fprintf(stdout, "## failover: SIGKILL the leader under load, 3 node processes\n\n")
	fmt.Fprintf(stdout, "machine: %s\n\n", machine())
	fmt.Fprintf(stdout, "command: surgebench failover %s\n\n", strings.Join(args, " "))
	fmt.Fprintf(stdout, "%d writers start %.0f donations/s in total (create + signed confirm on the writer's node: %.0f writes/s); on an error a writer moves to the next node and retries after 10 ms. Before each kill: all nodes ready, then %s of load. Recovery = SIGKILL → first acknowledged write among requests sent after the kill. The killed node is restarted on its data dir and must pass /readyz?sync before the next round.\n\n", *writers, *rate, 2**rate, *settle)
	if len(rounds) > 0 {
		t := table{head: []string{"kill", "leader found by", "kill → next ack ms", "kill → new leader logged ms", "longest ack gap ms", "failed requests", "restart → ready ms"}}
		var rec, nl, gaps, rr []float64
		for i, r := range rounds {
			t.add(itoa(i+1), r.how, fmtMS(ms(r.recovery)), fmtMS(ms(r.newLeader)), fmtMS(ms(r.gap)), itoa(r.failed), fmtMS(ms(r.restartReady)))
			rec = append(rec, ms(r.recovery))
			nl = append(nl, ms(r.newLeader))
			gaps = append(gaps, ms(r.gap))
			rr = append(rr, ms(r.restartReady))
		}
		t.add("**median**", "", "**"+fmtMS(median(rec))+"**", fmtMS(median(nl)), fmtMS(median(gaps)), "", fmtMS(median(rr)))
		t.add("**max**", "", "**"+fmtMS(slices.Max(rec))+"**", fmtMS(slices.Max(nl)), fmtMS(slices.Max(gaps)), "", fmtMS(slices.Max(rr)))
		t.write(stdout)
		fmt.Fprintln(stdout)
	}
	if *steady > 0 {
		s := summarize(steadyLat)
		fmt.Fprintf(stdout, "Steady window %s (no kills): **%d leader changes** (\"gained leadership\" lines over all nodes), %d writes acknowledged, %d failed; write latency p50 %s ms, p99 %s ms, max %s ms.", *steady, steadyChanges, steadyAcks, steadyErrs, fmtMS(ms(s.P50)), fmtMS(ms(s.P99)), fmtMS(ms(s.Max)))
		var parts []string
		for i, p := range pc.procs {
			parts = append(parts, fmt.Sprintf("%s %.1f MiB", p.name, float64(rssMax[i])/(1<<20)))
		}
		fmt.Fprintf(stdout, " Peak RSS sampled each second: %s.\n\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(stdout, "Durability check: %d confirmations acknowledged over the whole run; the total counts %d donations (≥ acks: nothing acknowledged was lost).\n", confirmed, tot.Donations)
	acks.mu.Lock()
	firsts := acks.firsts
	acks.mu.Unlock()
	if len(firsts) > 0 {
		fmt.Fprintf(stdout, "\nFirst errors seen by writers: %v\n", errors.Join(firsts...))
	}
	return nil
}
