package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/surgefund/surge/node"
)

// runLoadInproc is the child process of catchup: it starts the in-process
// cluster described by --dir/cluster.json, commits --donations confirmed
// donations through Propose, prints "LOADED <n>" and waits to be killed.
// Being killed (kill -9) instead of closing keeps the Raft configuration
// as it is, exactly like a crash of the whole cluster.
func runLoadInproc(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("load-inproc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "cluster directory with cluster.json")
	count := fs.Int64("donations", 1000, "confirmed donations to commit")
	clients := fs.Int("clients", 256, "concurrent proposers")
	memprofile := fs.String("memprofile", "", "after loading, write a heap profile of the 3 nodes to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(*dir, "cluster.json"))
	if err != nil {
		return err
	}
	var cfgs []node.Config
	if err := json.Unmarshal(b, &cfgs); err != nil {
		return err
	}
	log := &progress{w: stderr}
	c, err := startInproc(ctx, *dir, cfgs)
	if err != nil {
		return err
	}
	defer c.close()
	var next, done atomic.Int64
	var firstErr atomic.Value
	var errs atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for w := range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := c.nodes[w%len(c.nodes)]
			for ctx.Err() == nil && next.Add(1) <= *count {
				for ctx.Err() == nil {
					cmd := createCommand(1000)
					err := propose(ctx, n, cmd)
					if err == nil {
						err = propose(ctx, n, paymentCommand(cmd.Create.ID, 1000))
					}
					if err == nil {
						done.Add(1)
						break
					}
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d := done.Load()
				log.printf("loaded %d/%d confirmed donations (%.0f/s), %d errors, load %s", d, *count, float64(d)/time.Since(start).Seconds(), errs.Load(), loadavg())
			}
		}
	}()
	wg.Wait()
	close(stop)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	el := time.Since(start)
	if n := resubmitted.Load(); n > 0 {
		log.printf("%d commands answered duplicate (resubmitted by the cluster after a leader change; committed once, taken as success)", n)
	}
	if e := firstErr.Load(); e != nil {
		log.printf("%d errors while loading (retried); first: %v", errs.Load(), e)
	}
	if *memprofile != "" {
		runtime.GC()
		f, err := os.Create(*memprofile)
		if err != nil {
			return err
		}
		err = pprof.WriteHeapProfile(f)
		f.Close()
		if err != nil {
			return err
		}
		log.printf("heap profile of the 3 in-process nodes in %s", *memprofile)
	}
	fmt.Fprintf(stdout, "LOADED %d %d %d\n", done.Load(), el.Milliseconds(), errs.Load())
	<-ctx.Done()
	return nil
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					n += st.Blocks * 512 // on disk: Badger's files are sparse
				} else {
					n += fi.Size()
				}
			}
		}
		return nil
	})
	return n
}

func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// runCatchup: design brief items 4 and 5.
func runCatchup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("catchup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	smoke := fs.Bool("smoke", false, "smoke mode: 2,000 donations, short windows; exit 0 when the harness worked")
	count := fs.Int64("donations", 1_000_000, "confirmed donations to load (each is a create and a payment command)")
	clients := fs.Int("load-clients", 256, "concurrent proposers while loading")
	window := fs.Duration("memory-window", 60*time.Second, "load window in which RSS is sampled")
	rate := fs.Float64("rate", 200, "donations/s started during the memory window (plus readers)")
	readers := fs.Int("readers", 16, "closed-loop readers (GET / and GET /api/v1/total) during the memory window")
	joinTimeout := fs.Duration("join-timeout", 5*time.Minute, "give up when a fresh node has not caught up after this long")
	joins := fs.Int("joins", 2, "fresh nodes to join one after the other (each is one catch-up sample)")
	bin := fs.String("node-bin", "", "node binary (default: build cmd/node)")
	dirFlag := fs.String("dir", "", "work directory (default: a temporary one, removed afterwards)")
	keep := fs.Bool("keep", false, "keep the temporary work directory")
	memprofile := fs.String("memprofile", "", "after loading, write a heap profile of the 3 in-process nodes to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *smoke || envSmoke() {
		*count, *window, *joins, *clients, *joinTimeout = 2000, 3*time.Second, 1, 64, 60*time.Second
	}
	if *count < 1 || *joins < 1 {
		return fmt.Errorf("%w: donations and joins must be positive", errUsage)
	}
	log := &progress{w: stderr}
	dir, nodeBin, cleanup, err := nodeWorkDir(ctx, *dirFlag, "surgebench-catchup-", *keep, *bin)
	if err != nil {
		return err
	}
	defer cleanup()

	// 1. Load through Propose in a child process holding 3 in-process nodes.
	cfgs, err := inprocConfigs(dir, 3)
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(cfgs, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "cluster.json"), b, 0o644); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	log.printf("loading %d confirmed donations through Propose (3 in-process nodes, %d proposers)", *count, *clients)
	childArgs := []string{"load-inproc", "--dir", dir, "--donations", fmt.Sprint(*count), "--clients", fmt.Sprint(*clients)}
	if *memprofile != "" {
		abs, err := filepath.Abs(*memprofile)
		if err != nil {
			return err
		}
		childArgs = append(childArgs, "--memprofile", abs)
	}
	child := exec.Command(self, childArgs...)
	child.Stderr = stderr
	out, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	var loaded, loadMS, loadErrs int64
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "LOADED %d %d %d", &loaded, &loadMS, &loadErrs); err == nil {
			break
		}
	}
	child.Process.Kill()
	child.Wait()
	if loaded < *count {
		return fmt.Errorf("load: child ended after %d of %d donations", loaded, *count)
	}
	log.printf("loaded %d in %.1f s (%.0f confirmed donations/s = %.0f commands/s); child killed with SIGKILL", loaded, float64(loadMS)/1000, float64(loaded)/(float64(loadMS)/1000), 2*float64(loaded)/(float64(loadMS)/1000))

	// 2. The same data dirs and ports as node processes.
	pc := &procCluster{dir: dir, bin: nodeBin}
	var gossips []string
	for _, cfg := range cfgs {
		gossips = append(gossips, cfg.GossipAddr)
	}
	for _, cfg := range cfgs {
		pc.procs = append(pc.procs, &proc{
			name: cfg.Name, bin: nodeBin, dataDir: cfg.DataDir,
			http: cfg.HTTPAddr, gossip: cfg.GossipAddr, raft: cfg.RaftAddr,
			args:    []string{"--bootstrap-expect", "3", "--join", strings.Join(gossips, ",")},
			logPath: filepath.Join(dir, cfg.Name+".log"),
		})
	}
	t0 := time.Now()
	if err := pc.start(ctx); err != nil {
		pc.close()
		return err
	}
	defer pc.close()
	client := httpClient(*readers + 8)
	want, err := syncedTotal(ctx, client, pc.procs[0].base())
	if err != nil {
		return err
	}
	for _, p := range pc.procs[1:] {
		if _, err := syncedTotal(ctx, client, p.base()); err != nil {
			return err
		}
	}
	restart := time.Since(t0)
	restartTotal := want
	if want.Donations < loaded {
		return fmt.Errorf("after restart: total counts %d donations, %d were acknowledged", want.Donations, loaded)
	}
	log.printf("3 processes up and synced in %s; total %d donations", restart.Round(time.Millisecond), want.Donations)
	type mem struct{ idle, peak, hwm, anon, file int64 }
	mems := make([]mem, len(pc.procs))
	for i, p := range pc.procs {
		m, _ := readProcMem(p.pid())
		mems[i].idle = m.rss
	}

	// 3. Memory under load.
	log.printf("memory window %s: %.0f donations/s + %d readers", *window, *rate, *readers)
	acks := &ackLog{}
	loadCtx, stopLoad := context.WithTimeout(ctx, *window)
	var wg sync.WaitGroup
	var confirmed int64
	wg.Add(1)
	go func() { defer wg.Done(); confirmed = pacedWriters(loadCtx, pc.bases(), 16, *rate, acks) }()
	var reads atomic.Int64
	for r := range *readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bases := pc.bases()
			for i := 0; loadCtx.Err() == nil; i++ {
				base := bases[(r+i)%len(bases)]
				if i%2 == 0 {
					if _, err := fetchTotal(loadCtx, client, base); err == nil {
						reads.Add(1)
					}
				} else if getPage(loadCtx, client, base+"/") == nil {
					reads.Add(1)
				}
			}
		}()
	}
	tick := time.NewTicker(time.Second)
sample:
	for {
		select {
		case <-loadCtx.Done():
			break sample
		case <-tick.C:
			for i, p := range pc.procs {
				if m, err := readProcMem(p.pid()); err == nil {
					if m.rss > mems[i].peak {
						mems[i].peak, mems[i].anon, mems[i].file = m.rss, m.anon, m.file
					}
					mems[i].hwm = m.hwm
				}
			}
		}
	}
	tick.Stop()
	stopLoad()
	wg.Wait()
	for i, p := range pc.procs {
		if m, err := readProcMem(p.pid()); err == nil {
			mems[i].hwm = m.hwm
		}
	}
	wAcks, wErrs, wLat := acks.counts(time.Time{}, time.Now())
	ws := summarize(wLat)
	if confirmed == 0 || reads.Load() == 0 {
		return fmt.Errorf("memory window: %d confirmations and %d reads succeeded, want some of each: %v", confirmed, reads.Load(), errors.Join(acks.firsts...))
	}

	// 4. Fresh nodes join one after the other; each must serve the total
	// the cluster has. Requests cut off at the end of the window may still
	// commit: let them settle first.
	time.Sleep(time.Second)
	want, err = syncedTotal(ctx, client, pc.procs[0].base())
	if err != nil {
		return err
	}
	if want.Donations < loaded+confirmed {
		return fmt.Errorf("after the memory window: total counts %d donations, %d were acknowledged", want.Donations, loaded+confirmed)
	}
	type joinResult struct {
		name          string
		http, total   time.Duration
		mem           procMem
		leadHWM, size int64
	}
	var joinsOut []joinResult
	for j := range *joins {
		p, err := pc.newProc(fmt.Sprintf("n%d", 4+j))
		if err != nil {
			return err
		}
		p.args = []string{"--join", pc.procs[0].gossip}
		pc.procs = append(pc.procs, p)
		log.printf("starting fresh %s with --join", p.name)
		tl := time.Now()
		if err := p.start(ctx); err != nil {
			return err
		}
		jr := joinResult{name: p.name, http: time.Since(tl)}
		for {
			t, err := fetchTotal(ctx, client, p.base())
			if err == nil && t == want {
				jr.total = time.Since(tl)
				break
			}
			if err == nil && t != want && t.Donations > 0 {
				// Should not move without load; if it did, follow the leader.
				if lt, lerr := fetchTotal(ctx, client, pc.procs[0].base()); lerr == nil && lt != want {
					log.printf("leader total moved from %+v to %+v", want, lt)
					want = lt
				}
			}
			if time.Since(tl) > *joinTimeout {
				return fmt.Errorf("%s: total %+v after %s, want %+v (%v)", p.name, t, *joinTimeout, want, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		jr.mem, _ = readProcMem(p.pid())
		for _, q := range pc.procs[:3] {
			if m, err := readProcMem(q.pid()); err == nil {
				jr.leadHWM = max(jr.leadHWM, m.hwm)
			}
		}
		jr.size = dirSize(p.dataDir)
		log.printf("%s serves the right total after %s", p.name, jr.total.Round(time.Millisecond))
		joinsOut = append(joinsOut, jr)
	}

	fmt.Fprintf(stdout, "## catch-up and memory with %s confirmed donations, 3 node processes\n\n", fmtInt(float64(loaded)))
	fmt.Fprintf(stdout, "machine: %s\n\n", machine())
	fmt.Fprintf(stdout, "command: surgebench catchup %s\n\n", strings.Join(args, " "))
	fmt.Fprintf(stdout, "Load: %s confirmed donations (a create and a payment command each: %s Raft entries) through (*node.Node).Propose on 3 in-process nodes with %d proposers, in %.1f s (**%s confirmed donations/s, %s commands/s**, %d retried errors). That process was then killed with SIGKILL and the same data dirs started as 3 node processes: up and synced in %s, total %s donations (none lost).\n\n",
		fmtInt(float64(loaded)), fmtInt(2*float64(loaded)), *clients, float64(loadMS)/1000, fmtInt(float64(loaded)/(float64(loadMS)/1000)), fmtInt(2*float64(loaded)/(float64(loadMS)/1000)), loadErrs, restart.Round(time.Millisecond), fmtInt(float64(restartTotal.Donations)))
	fmt.Fprintf(stdout, "### memory (VmRSS / VmHWM from /proc/PID/status)\n\n")
	fmt.Fprintf(stdout, "Load window %s: %.0f donations/s (create + confirm) from 16 paced writers and %d closed-loop readers (GET / and GET /api/v1/total alternately): %d writes acknowledged (p99 %s ms), %d failed, %d reads.\n\n", *window, *rate, *readers, wAcks, fmtMS(ms(ws.P99)), wErrs, reads.Load())
	t := table{head: []string{"node", "RSS after start MiB", "peak RSS under load MiB", "of which anon / file-backed MiB", "VmHWM MiB", "data dir MiB"}}
	for i, p := range pc.procs[:3] {
		t.add(p.name, mib(mems[i].idle), "**"+mib(mems[i].peak)+"**", mib(mems[i].anon)+" / "+mib(mems[i].file), mib(mems[i].hwm), mib(dirSize(p.dataDir)))
	}
	t.write(stdout)
	fmt.Fprintf(stdout, "\n### catch-up of a fresh node (--join, empty data dir)\n\n")
	t = table{head: []string{"node", "launch → HTTP up ms", "launch → right total s", "its RSS (anon / file) MiB, VmHWM MiB", "its data dir MiB", "max VmHWM of the 3 others MiB"}}
	for _, j := range joinsOut {
		t.add(j.name, fmtMS(ms(j.http)), fmt.Sprintf("**%.2f**", j.total.Seconds()), mib(j.mem.rss)+" ("+mib(j.mem.anon)+" / "+mib(j.mem.file)+"), "+mib(j.mem.hwm), mib(j.size), mib(j.leadHWM))
	}
	t.write(stdout)
	fmt.Fprintf(stdout, "\n\"Right total\" = GET /api/v1/total on the new node equals the leader's raised_minor and donations (%s donations, %s minor units).\n", fmtInt(float64(want.Donations)), fmtInt(float64(want.RaisedMinor)))
	return nil
}
