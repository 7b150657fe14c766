package main

import (
	"bufio"
	"bytes"
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
	"strconv"
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
	reuse := fs.String("reuse", "", "data set directory: when it holds a loaded data set of --donations, copy it instead of loading; when it holds none, load and save a copy there for later runs")
	cgroupLimit := fs.String("memory-cgroup", "", "run every node process in its own cgroup v1 memory cgroup with this memory.limit_in_bytes (e.g. 150MiB); skips the run with a message when the cgroup cannot be created")
	nodeArgs := fs.String("node-args", "", "extra flags for every node process, space-separated (e.g. \"--memory-limit 100MiB\")")
	nodeEnv := fs.String("node-env", "", "extra environment for every node process, space-separated KEY=value (e.g. GOMEMLIMIT=100MiB)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *smoke || envSmoke() {
		*count, *window, *joins, *clients, *joinTimeout = 2000, 3*time.Second, 1, 64, 60*time.Second
	}
	if *count < 1 || *joins < 0 {
		return fmt.Errorf("%w: donations must be positive, joins not negative", errUsage)
	}
	var limit int64
	var err error
	if *cgroupLimit != "" {
		if limit, err = node.ParseByteSize(*cgroupLimit); err != nil {
			return fmt.Errorf("%w: --memory-cgroup: %v", errUsage, err)
		}
	}
	log := &progress{w: stderr}
	var cgParent string
	if limit > 0 {
		// Try before the load or copy: a run that cannot be limited is
		// skipped, not silently run without the limit.
		if cgParent, err = ownMemCgroup(); err == nil {
			removeStaleCgroups(cgParent)
			var probe *memCgroup
			if probe, err = newMemCgroup(cgParent, fmt.Sprintf("surgebench-%d-probe", os.Getpid()), limit); err == nil {
				err = probe.remove()
			}
		}
		if err != nil {
			fmt.Fprintf(stdout, "catchup --memory-cgroup %s: skipped, cannot create a memory cgroup: %v\n", *cgroupLimit, err)
			log.printf("skipped: cannot create a memory cgroup: %v", err)
			return nil
		}
	}
	var cgroups []*memCgroup
	defer func() {
		for _, cg := range cgroups {
			if err := cg.remove(); err != nil {
				log.printf("%v", err)
			}
		}
	}()
	// limitProc puts p in a new memory cgroup of its own when the run is
	// limited (after the processes are gone, the deferred remove above
	// deletes them; it is registered before the processes' close).
	limitProc := func(p *proc) error {
		p.args = append(p.args, strings.Fields(*nodeArgs)...)
		p.env = strings.Fields(*nodeEnv)
		if limit == 0 {
			return nil
		}
		cg, err := newMemCgroup(cgParent, fmt.Sprintf("surgebench-%d-%s", os.Getpid(), p.name), limit)
		if err != nil {
			return fmt.Errorf("memory cgroup for %s: %w", p.name, err)
		}
		cgroups = append(cgroups, cg)
		p.cgroup = cg.dir
		return nil
	}
	dir, nodeBin, cleanup, err := nodeWorkDir(ctx, *dirFlag, "surgebench-catchup-", *keep, *bin)
	if err != nil {
		return err
	}
	defer cleanup()

	// 1. Load through Propose in a child process holding 3 in-process nodes,
	// or copy a data set an earlier run loaded and saved.
	var (
		cfgs                     []node.Config
		loaded, loadMS, loadErrs int64
		reused                   *savedLoad
	)
	if *reuse != "" {
		if reused, err = readSavedLoad(*reuse); err != nil {
			return err
		}
	}
	if reused != nil {
		if reused.Donations != *count {
			return fmt.Errorf("%w: %s holds %d donations, not --donations %d (use another directory)", errUsage, *reuse, reused.Donations, *count)
		}
		log.printf("copying the data set of %d donations loaded %s from %s", reused.Donations, reused.When.Format(time.RFC3339), *reuse)
		if cfgs, err = reused.restoreInto(ctx, *reuse, dir); err != nil {
			return err
		}
		loaded, loadMS, loadErrs = reused.Donations, reused.LoadMS, reused.LoadErrs
	} else {
		if cfgs, err = inprocConfigs(dir, 3); err != nil {
			return err
		}
		if loaded, loadMS, loadErrs, err = loadChild(ctx, dir, cfgs, *count, *clients, *memprofile, stderr); err != nil {
			return err
		}
		log.printf("loaded %d in %.1f s (%.0f confirmed donations/s = %.0f commands/s); child killed with SIGKILL", loaded, float64(loadMS)/1000, float64(loaded)/(float64(loadMS)/1000), 2*float64(loaded)/(float64(loadMS)/1000))
		if *reuse != "" {
			sl := &savedLoad{Donations: loaded, LoadMS: loadMS, LoadErrs: loadErrs, When: time.Now().UTC(), Configs: cfgs}
			if err := sl.save(ctx, dir, *reuse); err != nil {
				return err
			}
			log.printf("saved the loaded data set in %s (--reuse %s skips the load next time)", *reuse, *reuse)
		}
	}

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
	for _, p := range pc.procs {
		if err := limitProc(p); err != nil {
			return err
		}
		// Start cold: the pages of the copy or the load must not be in the
		// page cache already (they would be charged to the harness, not to
		// the node's cgroup, and be resident without the node reading them).
		if err := dropFileCache(p.dataDir); err != nil {
			return err
		}
	}
	t0 := time.Now()
	if err := pc.start(ctx); err != nil {
		for i, cg := range cgroups {
			c := cg.read()
			log.printf("%s's cgroup: max usage %s MiB of %s, failcnt %d, OOM kills %d", pc.procs[i].name, mib(c.maxUsage), mib(c.limit), c.failcnt, c.oomKills)
		}
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
	type mem struct {
		idle, peak, hwm, anon, file int64
		startHWM                    int64    // VmHWM before the window: the start's peak
		hwmReset                    bool     // VmHWM was reset at the window's start: hwm is the window's peak
		smaps                       smapsMem // the reading with the highest Rss
		gomem                       goMem    // read with it
		gcStart, gcEnd              goMem
		cpu                         time.Duration
	}
	mems := make([]mem, len(pc.procs))
	for i, p := range pc.procs {
		m, _ := readProcMem(p.pid())
		mems[i].idle, mems[i].startHWM = m.rss, m.hwm
		// From here VmHWM is the peak under load, between the 1-s samples too.
		mems[i].hwmReset = resetPeakRSS(p.pid()) == nil
		mems[i].gcStart, _ = readGoMem(ctx, client, p.base())
		mems[i].cpu, _ = procCPU(p.pid())
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
	wStart := time.Now()
sample:
	for s := 0; ; s++ {
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
				// The breakdown every 5 s (smaps of a node with a thousand
				// mappings costs a few ms of the kernel's time).
				if s%5 != 4 {
					continue
				}
				if sm, err := readSmaps(p.pid(), p.dataDir); err == nil && sm.rss > mems[i].smaps.rss {
					mems[i].smaps = sm
					mems[i].gomem, _ = readGoMem(loadCtx, client, p.base())
				}
			}
		}
	}
	tick.Stop()
	wEnd := time.Now()
	var nodeCPU time.Duration
	for i, p := range pc.procs {
		if m, err := readProcMem(p.pid()); err == nil {
			mems[i].hwm = m.hwm
		}
		if mems[i].smaps.rss == 0 { // a window shorter than the 5-s interval
			mems[i].smaps, _ = readSmaps(p.pid(), p.dataDir)
			mems[i].gomem, _ = readGoMem(ctx, client, p.base())
		}
		mems[i].gcEnd, _ = readGoMem(ctx, client, p.base())
		c, _ := procCPU(p.pid())
		mems[i].cpu = c - mems[i].cpu
		nodeCPU += mems[i].cpu
	}
	stopLoad()
	wg.Wait()
	var cgMems []cgroupMem
	for _, cg := range cgroups {
		cgMems = append(cgMems, cg.read())
	}
	var dead []string
	for _, p := range pc.procs {
		if !p.running() {
			dead = append(dead, p.name)
		}
	}
	wAcks, wErrs, wLat := acks.counts(time.Time{}, time.Now())
	ws := summarize(wLat)
	if len(dead) > 0 {
		log.printf("node processes gone after the memory window: %s (no joins)", strings.Join(dead, ", "))
		*joins = 0
	}
	if len(dead) == 0 && (confirmed == 0 || (*readers > 0 && reads.Load() == 0)) {
		return fmt.Errorf("memory window: %d confirmations and %d reads succeeded, want some of each: %v", confirmed, reads.Load(), errors.Join(acks.firsts...))
	}

	// 4. Fresh nodes join one after the other; each must serve the total
	// the cluster has. Requests cut off at the end of the window may still
	// commit: let them settle first.
	time.Sleep(time.Second)
	if len(dead) == 0 {
		if want, err = syncedTotal(ctx, client, pc.procs[0].base()); err != nil {
			return err
		}
	}
	if len(dead) == 0 && want.Donations < loaded+confirmed {
		return fmt.Errorf("after the memory window: total counts %d donations, %d were acknowledged", want.Donations, loaded+confirmed)
	}
	type joinResult struct {
		name          string
		http, total   time.Duration
		steps         joinSteps
		samples       []joinSample
		applied       uint64 // the new node's applied index once it served the right total
		mem           procMem
		cg            cgroupMem
		leadHWM, size int64
	}
	var joinsOut []joinResult
	for j := range *joins {
		p, err := pc.newProc(fmt.Sprintf("n%d", 4+j))
		if err != nil {
			return err
		}
		p.args = []string{"--join", pc.procs[0].gossip}
		if err := limitProc(p); err != nil {
			return err
		}
		pc.procs = append(pc.procs, p)
		log.printf("starting fresh %s with --join", p.name)
		tl := time.Now()
		base := joinSample{others: othersCPU(pc.procs[:3]), host: hostBusy()}
		if err := p.startFresh(ctx); err != nil {
			return err
		}
		jr := joinResult{name: p.name, http: time.Since(tl)}
		smp := startJoinSampler(p, pc.procs[:3], tl, base)
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
		jr.samples = smp.stop()
		if st, err := adminStatus(ctx, p.base()); err == nil {
			for _, m := range st.Members {
				if m.ID == st.NodeID {
					jr.applied = m.AppliedIndex
				}
			}
		}
		jr.mem, _ = readProcMem(p.pid())
		if p.cgroup != "" {
			jr.cg = cgroups[len(cgroups)-1].read()
		}
		for _, q := range pc.procs[:3] {
			if m, err := readProcMem(q.pid()); err == nil {
				jr.leadHWM = max(jr.leadHWM, m.hwm)
			}
		}
		jr.size = dirSize(p.dataDir)
		jr.steps = readJoinSteps(pc.procs, p, tl)
		log.printf("%s serves the right total after %s (%s), load %s", p.name, jr.total.Round(time.Millisecond), jr.steps, loadavg())
		joinsOut = append(joinsOut, jr)
	}

	fmt.Fprintf(stdout, "## catch-up and memory with %s confirmed donations, 3 node processes\n\n", fmtInt(float64(loaded)))
	fmt.Fprintf(stdout, "machine: %s\n\n", machine())
	fmt.Fprintf(stdout, "command: surgebench catchup %s\n\n", strings.Join(args, " "))
	if reused != nil {
		fmt.Fprintf(stdout, "Load: reused the data set in %s (loaded %s by an earlier run: ", *reuse, reused.When.Format(time.RFC3339))
	} else {
		fmt.Fprintf(stdout, "Load: ")
	}
	fmt.Fprintf(stdout, "%s confirmed donations (a create and a payment command each: %s Raft entries) through (*node.Node).Propose on 3 in-process nodes with %d proposers, in %.1f s (**%s confirmed donations/s, %s commands/s**, %d retried errors)",
		fmtInt(float64(loaded)), fmtInt(2*float64(loaded)), *clients, float64(loadMS)/1000, fmtInt(float64(loaded)/(float64(loadMS)/1000)), fmtInt(2*float64(loaded)/(float64(loadMS)/1000)), loadErrs)
	if reused != nil {
		fmt.Fprintf(stdout, ")")
	}
	fmt.Fprintf(stdout, ". That process was then killed with SIGKILL and the same data dirs started as 3 node processes: up and synced in %s, total %s donations (none lost).\n\n",
		restart.Round(time.Millisecond), fmtInt(float64(restartTotal.Donations)))
	fmt.Fprintf(stdout, "### memory (VmRSS / VmHWM from /proc/PID/status)\n\n")
	fmt.Fprintf(stdout, "Load window %s: %.0f donations/s (create + confirm) from 16 paced writers and %d closed-loop readers (GET / and GET /api/v1/total alternately): %d writes acknowledged (p99 %s ms), %d failed, %d reads.\n\n", *window, *rate, *readers, wAcks, fmtMS(ms(ws.P99)), wErrs, reads.Load())
	t := table{head: []string{"node", "RSS after start MiB", "peak RSS under load MiB (1-s samples)", "of which anon / file-backed MiB", "VmHWM under load MiB", "VmHWM at start MiB", "data dir MiB"}}
	for i, p := range pc.procs[:3] {
		hwm := mib(mems[i].hwm)
		if !mems[i].hwmReset {
			hwm = "? (not reset; since start: " + hwm + ")"
		}
		t.add(p.name, mib(mems[i].idle), "**"+mib(mems[i].peak)+"**", mib(mems[i].anon)+" / "+mib(mems[i].file), hwm, mib(mems[i].startHWM), mib(dirSize(p.dataDir)))
	}
	t.write(stdout)
	win := wEnd.Sub(wStart).Seconds()
	fmt.Fprintf(stdout, "\nLoad window: **%.0f writes/s** acknowledged (%d in %.1f s; p50 %s ms, p99 %s ms, %d failed), %.0f reads/s; nodes' CPU %.1f s = **%s µs per acknowledged write** (3 nodes; the closed-loop readers add their own CPU: compare runs with the same --readers, or use --readers 0 for the cost of writes alone).",
		float64(wAcks)/win, wAcks, win, fmtMS(ms(ws.P50)), fmtMS(ms(ws.P99)), wErrs, float64(reads.Load())/win, nodeCPU.Seconds(), fmtInt(float64(nodeCPU.Microseconds())/float64(max(wAcks, 1))))
	if *nodeArgs != "" || *nodeEnv != "" {
		fmt.Fprintf(stdout, " Node flags added: `%s`; environment added: `%s`.", *nodeArgs, *nodeEnv)
	}
	fmt.Fprintf(stdout, "\n\n#### where the resident pages are (/proc/PID/smaps, the reading with the highest Rss, every 5 s of the window; MiB)\n\n")
	head := append([]string{"node", "Rss"}, memKinds...)
	t = table{head: head}
	for i, p := range pc.procs[:3] {
		row := []string{p.name, mib(mems[i].smaps.rss)}
		for _, k := range memKinds {
			row = append(row, mib(mems[i].smaps.kinds[k]))
		}
		t.add(row...)
	}
	t.write(stdout)
	fmt.Fprintf(stdout, "\n\"anon\" is every anonymous page (Go heap, stacks, runtime metadata); the rest are file pages mapped by Badger (its tables and memtable WALs are mmapped), which are page cache: the kernel can reclaim them, and a memory cgroup counts them.\n\n")
	fmt.Fprintf(stdout, "#### Go runtime (the node's /metrics, go_memstats_*, read with that smaps reading; MiB)\n\n")
	t = table{head: []string{"node", "heap alloc (live + garbage not yet swept)", "heap in use (spans)", "heap goal (next_gc)", "heap idle not released", "stacks", "Go sys total", "GOMEMLIMIT", "GC cycles in the window", "goroutines", "--rss-limit page-outs in the window"}}
	for i, p := range pc.procs[:3] {
		g := mems[i].gomem
		if !g.ok {
			t.add(p.name, "?", "?", "?", "?", "?", "?", "?", "?", "?", "?")
			continue
		}
		pageOuts := "–" // no --rss-limit
		if g.rssLimit > 0 {
			pageOuts = fmt.Sprint(mems[i].gcEnd.pagerRounds - mems[i].gcStart.pagerRounds)
		}
		lim := "off"
		if g.memLimit > 0 && g.memLimit < 1<<62 {
			lim = mib(g.memLimit)
		}
		t.add(p.name, mib(g.heapAlloc), mib(g.heapInuse), mib(g.nextGC), mib(g.heapIdle-g.heapReleased), mib(g.stack), mib(g.sys), lim,
			fmt.Sprint(mems[i].gcEnd.gcCycles-mems[i].gcStart.gcCycles), fmt.Sprint(g.goroutines), pageOuts)
	}
	t.write(stdout)
	if len(cgMems) > 0 {
		fmt.Fprintf(stdout, "\n#### memory cgroups (cgroup v1, one per node, memory.limit_in_bytes %s; MiB)\n\n", *cgroupLimit)
		t = table{head: []string{"node", "limit", "memory.max_usage_in_bytes", "memory.failcnt", "OOM kills (memory.oom_control)", "at the end: rss / cache / mapped_file (memory.stat)", "alive after the window"}}
		for i, p := range pc.procs[:3] {
			c := cgMems[i]
			t.add(p.name, mib(c.limit), "**"+mib(c.maxUsage)+"**", fmt.Sprint(c.failcnt), fmt.Sprint(c.oomKills), mib(c.rss)+" / "+mib(c.cache)+" / "+mib(c.mappedFile), fmt.Sprint(p.running()))
		}
		t.write(stdout)
	}
	if len(dead) > 0 {
		fmt.Fprintf(stdout, "\n**Node processes gone after the window: %s** (see their logs); no join was tried.\n", strings.Join(dead, ", "))
	}
	if len(joinsOut) == 0 {
		return nil
	}
	fmt.Fprintf(stdout, "\n### catch-up of a fresh node (--join, empty data dir)\n\n")
	t = table{head: []string{"node", "launch → HTTP up ms", "launch → right total s", "launch → added s", "added → restore starts s", "restore s", "restored → right total s", "its RSS (anon / file) MiB, VmHWM MiB", "its data dir MiB", "max VmHWM of the 3 others MiB"}}
	if limit > 0 {
		t.head = append(t.head, "its cgroup: max usage MiB, failcnt, OOM kills")
	}
	for _, j := range joinsOut {
		st := j.steps
		t.add(j.name, fmtMS(ms(j.http)), fmt.Sprintf("**%.2f**", j.total.Seconds()),
			st.span(0, st.added), st.span(st.added, st.restoreStart), st.span(st.restoreStart, st.restored), st.span(st.restored, j.total),
			mib(j.mem.rss)+" ("+mib(j.mem.anon)+" / "+mib(j.mem.file)+"), "+mib(j.mem.hwm), mib(j.size), mib(j.leadHWM))
		if limit > 0 {
			t.rows[len(t.rows)-1] = append(t.rows[len(t.rows)-1], fmt.Sprintf("%s, %d, %d", mib(j.cg.maxUsage), j.cg.failcnt, j.cg.oomKills))
		}
	}
	t.write(stdout)
	fmt.Fprintf(stdout, "\nWhere the time goes (CPU seconds from /proc/PID/stat; \"host\" is every CPU's busy time from /proc/stat, 2 cores = 2 s per second, so host − new − others is load from outside the cluster):\n\n")
	t = table{head: []string{"node", "phase", "wall s", "new node CPU s", "3 others CPU s", "host busy CPU s", "peak anon of the new node MiB"}}
	for _, j := range joinsOut {
		st := j.steps
		type mark struct {
			name string
			at   time.Duration
		}
		var marks []mark
		if st.added >= 0 {
			marks = append(marks, mark{"launch → added", st.added})
		}
		restore := "restore"
		if st.restores > 1 {
			restore = fmt.Sprintf("restores (%d: the leader took a newer snapshot and compacted its log meanwhile)", st.restores)
		}
		switch {
		case st.restoreStart >= 0 && st.restored >= 0:
			marks = append(marks, mark{"added → restore starts (snapshot opened, sent, stored)", st.restoreStart}, mark{restore, st.restored})
		case st.restored >= 0: // a node that does not log the restore's start
			marks = append(marks, mark{"added → restored (snapshot sent, stored, " + restore + ")", st.restored})
		}
		last := "→ right total (no snapshot install: log entries only)"
		if st.restored >= 0 {
			last = "restored → right total"
			if st.restoredAt > 0 && j.applied > st.restoredAt {
				last = fmt.Sprintf("restored → right total (%s entries after the snapshot's index %d)", fmtInt(float64(j.applied-st.restoredAt)), st.restoredAt)
			}
		}
		marks = append(marks, mark{last, j.total})
		from := time.Duration(0)
		for _, m := range marks {
			a, b := sampleAt(j.samples, from), sampleAt(j.samples, m.at)
			t.add(j.name, m.name, fmt.Sprintf("%.2f", (m.at-from).Seconds()),
				fmt.Sprintf("%.2f", (b.cpu-a.cpu).Seconds()), fmt.Sprintf("%.2f", (b.others-a.others).Seconds()),
				fmt.Sprintf("%.2f", (b.host-a.host).Seconds()), mib(peakAnon(j.samples, from, m.at)))
			from = m.at
		}
	}
	t.write(stdout)
	fmt.Fprintf(stdout, "\nSteps, from the nodes' logs (times since the launch): \"added\" is the leader's `added non-voter` line; from there to the restore's start the leader opens its snapshot and streams it, and the new node writes and syncs it into its snapshot store; \"restore\" is the FSM's own `restoring fsm from snapshot stream` → `fsm restored`; after it Raft sends and the node applies the entries after the snapshot's index. \"?\" = the line was not found.\n")
	fmt.Fprintf(stdout, "\n\"Right total\" = GET /api/v1/total on the new node equals the leader's raised_minor and donations (%s donations, %s minor units).\n", fmtInt(float64(want.Donations)), fmtInt(float64(want.RaisedMinor)))
	return nil
}

// loadChild writes cluster.json, runs load-inproc in a child process until
// it has committed count confirmed donations, and SIGKILLs it.
func loadChild(ctx context.Context, dir string, cfgs []node.Config, count int64, clients int, memprofile string, stderr io.Writer) (loaded, loadMS, loadErrs int64, err error) {
	b, _ := json.MarshalIndent(cfgs, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "cluster.json"), b, 0o644); err != nil {
		return 0, 0, 0, err
	}
	self, err := os.Executable()
	if err != nil {
		return 0, 0, 0, err
	}
	(&progress{w: stderr}).printf("loading %d confirmed donations through Propose (3 in-process nodes, %d proposers)", count, clients)
	childArgs := []string{"load-inproc", "--dir", dir, "--donations", fmt.Sprint(count), "--clients", fmt.Sprint(clients)}
	if memprofile != "" {
		abs, err := filepath.Abs(memprofile)
		if err != nil {
			return 0, 0, 0, err
		}
		childArgs = append(childArgs, "--memprofile", abs)
	}
	child := exec.CommandContext(ctx, self, childArgs...)
	child.Stderr = stderr
	out, err := child.StdoutPipe()
	if err != nil {
		return 0, 0, 0, err
	}
	if err := child.Start(); err != nil {
		return 0, 0, 0, err
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "LOADED %d %d %d", &loaded, &loadMS, &loadErrs); err == nil {
			break
		}
	}
	child.Process.Kill()
	child.Wait()
	if loaded < count {
		return 0, 0, 0, fmt.Errorf("load: child ended after %d of %d donations", loaded, count)
	}
	return loaded, loadMS, loadErrs, nil
}

// savedLoad describes a data set saved by --reuse: the data dirs of the 3
// nodes as the SIGKILL of the loading process left them, and their
// configurations (the Raft configuration in them holds their addresses, so
// a reused set runs on the same ports).
type savedLoad struct {
	Donations int64         `json:"donations"`
	LoadMS    int64         `json:"load_ms"`
	LoadErrs  int64         `json:"load_errors"`
	When      time.Time     `json:"when"`
	Configs   []node.Config `json:"configs"`
}

const savedLoadFile = "loaded.json"

// readSavedLoad returns the data set saved in dir, nil when there is none.
func readSavedLoad(dir string) (*savedLoad, error) {
	b, err := os.ReadFile(filepath.Join(dir, savedLoadFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var sl savedLoad
	if err := json.Unmarshal(b, &sl); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, savedLoadFile), err)
	}
	if len(sl.Configs) == 0 {
		return nil, fmt.Errorf("%s: no node configurations", filepath.Join(dir, savedLoadFile))
	}
	return &sl, nil
}

// save copies the nodes' data dirs from workdir into dir and writes the
// description last, so that an interrupted save is not taken for a data set.
func (sl *savedLoad) save(ctx context.Context, workdir, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, cfg := range sl.Configs {
		dst := filepath.Join(dir, filepath.Base(cfg.DataDir))
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
		if err := copyTree(ctx, cfg.DataDir, dst); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(sl, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, savedLoadFile), b, 0o644)
}

// restoreInto copies the saved data dirs into workdir and returns the
// configurations, pointed at the copies.
func (sl *savedLoad) restoreInto(ctx context.Context, dir, workdir string) ([]node.Config, error) {
	cfgs := make([]node.Config, len(sl.Configs))
	for i, cfg := range sl.Configs {
		name := filepath.Base(cfg.DataDir)
		cfg.DataDir = filepath.Join(workdir, name)
		if err := os.RemoveAll(cfg.DataDir); err != nil {
			return nil, err
		}
		if err := copyTree(ctx, filepath.Join(dir, name), cfg.DataDir); err != nil {
			return nil, err
		}
		cfgs[i] = cfg
	}
	b, _ := json.MarshalIndent(cfgs, "", "  ")
	return cfgs, os.WriteFile(filepath.Join(workdir, "cluster.json"), b, 0o644)
}

// copyTree copies a directory with cp -a, which keeps Badger's sparse
// files sparse.
func copyTree(ctx context.Context, src, dst string) error {
	if out, err := exec.CommandContext(ctx, "cp", "-a", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("cp -a %s %s: %v: %s", src, dst, err, bytes.TrimSpace(out))
	}
	return nil
}

// joinSteps are the moments of a join, as offsets from the launch of the
// new node, read from the nodes' logs; -1 when the line was not found.
type joinSteps struct {
	added, restoreStart, restored time.Duration
	restores                      int    // "fsm restored" lines (a second one when the leader compacted past the node meanwhile)
	restoredAt                    uint64 // the applied index of the last restore
}

func (s joinSteps) span(from, to time.Duration) string {
	if from < 0 || to < 0 {
		return "?"
	}
	return fmt.Sprintf("%.2f", (to - from).Seconds())
}

func (s joinSteps) String() string {
	return fmt.Sprintf("added at %s s, restore %s → %s s", s.span(0, s.added), s.span(0, s.restoreStart), s.span(0, s.restored))
}

// readJoinSteps finds the leader's "added non-voter" line for p and p's
// own restore lines after launch.
func readJoinSteps(procs []*proc, p *proc, launch time.Time) joinSteps {
	st := joinSteps{added: -1, restoreStart: -1, restored: -1}
	first := func(path, msg, also string) time.Duration {
		f, err := os.Open(path)
		if err != nil {
			return -1
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			l := sc.Text()
			if !strings.Contains(l, `msg="`+msg+`"`) || !strings.Contains(l, also) {
				continue
			}
			ts, ok := strings.CutPrefix(l, "time=")
			if !ok {
				continue
			}
			ts, _, _ = strings.Cut(ts, " ")
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil || at.Before(launch.Add(-time.Second)) {
				continue
			}
			return max(0, at.Sub(launch))
		}
		return -1
	}
	for _, q := range procs {
		if q != p {
			if d := first(q.logPath, "added non-voter", "name="+p.name+" "); d >= 0 && (st.added < 0 || d < st.added) {
				st.added = d
			}
		}
	}
	st.restoreStart = first(p.logPath, "restoring fsm from snapshot stream", "")
	// The last restore: a node can need two when the leader takes a newer
	// snapshot and compacts its log while the node catches up.
	if f, err := os.Open(p.logPath); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			l := sc.Text()
			if !strings.Contains(l, `msg="fsm restored"`) {
				continue
			}
			st.restores++
			if _, v, ok := strings.Cut(l, " applied_index="); ok {
				v, _, _ = strings.Cut(v, " ")
				st.restoredAt, _ = strconv.ParseUint(v, 10, 64)
			}
			if ts, ok := strings.CutPrefix(l, "time="); ok {
				ts, _, _ = strings.Cut(ts, " ")
				if at, err := time.Parse(time.RFC3339Nano, ts); err == nil {
					st.restored = max(0, at.Sub(launch))
				}
			}
		}
		f.Close()
	}
	return st
}

// joinSample is the CPU used so far by the new node, by the others and by
// the whole host, and the new node's anonymous memory, at an offset from
// the launch.
type joinSample struct {
	at                time.Duration
	cpu, others, host time.Duration
	anon              int64
}

type joinSampler struct {
	stopc   chan struct{}
	done    chan struct{}
	samples []joinSample
}

// startJoinSampler samples every 20 ms until stop; base holds the others'
// and the host's CPU at the launch.
func startJoinSampler(p *proc, others []*proc, launch time.Time, base joinSample) *joinSampler {
	s := &joinSampler{stopc: make(chan struct{}), done: make(chan struct{}), samples: []joinSample{{}}}
	go func() {
		defer close(s.done)
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			js := joinSample{at: time.Since(launch), others: othersCPU(others) - base.others, host: hostBusy() - base.host}
			js.cpu, _ = procCPU(p.pid())
			if m, err := readProcMem(p.pid()); err == nil {
				js.anon = m.anon
			}
			s.samples = append(s.samples, js)
			select {
			case <-s.stopc:
				return
			case <-tk.C:
			}
		}
	}()
	return s
}

func (s *joinSampler) stop() []joinSample {
	close(s.stopc)
	<-s.done
	return s.samples
}

func othersCPU(procs []*proc) time.Duration {
	var sum time.Duration
	for _, q := range procs {
		if c, err := procCPU(q.pid()); err == nil {
			sum += c
		}
	}
	return sum
}

// sampleAt is the first sample at or after d (the last one if none).
func sampleAt(ss []joinSample, d time.Duration) joinSample {
	for _, s := range ss {
		if s.at >= d {
			return s
		}
	}
	return ss[len(ss)-1]
}

func peakAnon(ss []joinSample, from, to time.Duration) int64 {
	var peak int64
	for _, s := range ss {
		if s.at >= from && s.at <= to+20*time.Millisecond {
			peak = max(peak, s.anon)
		}
	}
	return peak
}
