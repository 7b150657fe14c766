package storage

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/surgefund/surge/donation"
)

// Environment of a crash-test child process (this test binary run again).
const (
	envCrashMode = "SURGE_STORAGE_CRASH_CHILD" // "apply", "restore", "idle" or "baseline"
	envCrashDir  = "SURGE_STORAGE_CRASH_DIR"
	envSnapA     = "SURGE_STORAGE_CRASH_SNAP_A"
	envSnapB     = "SURGE_STORAGE_CRASH_SNAP_B"
	envCountA    = "SURGE_STORAGE_CRASH_COUNT_A"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envCrashMode); mode != "" {
		os.Exit(crashChild(mode))
	}
	os.Exit(m.Run())
}

// crashChild does the work a parent test kills at a random moment. It
// prints "ready" once its stores are open and one line per acknowledged
// step, and never runs longer than a minute even if nobody kills it.
func crashChild(mode string) int {
	dir := os.Getenv(envCrashDir)
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 1
	}
	switch mode {
	case "apply":
		if err := crashChildApply(dir); err != nil {
			return fail(err)
		}
	case "restore":
		if err := crashChildRestore(dir); err != nil {
			return fail(err)
		}
	case "idle", "baseline":
		if err := idleChild(dir, mode == "idle"); err != nil {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("unknown mode %q", mode))
	}
	return 0
}

func pairAmount(k uint64) int64 { return 100 + int64(k%97) }
func pairID(k uint64) string    { return fmt.Sprintf("c%08d", k) }

// pairLogs is the create+payment pair stored at indexes k and k+1.
func pairLogs(k uint64) ([]*raft.Log, error) {
	id := pairID(k)
	var logs []*raft.Log
	for i, c := range []donation.Command{createCmd(id, pairAmount(k), "EUR"), paymentCmd("ev-"+id, id, donation.OutcomeSucceeded)} {
		b, err := donation.Encode(c)
		if err != nil {
			return nil, err
		}
		logs = append(logs, &raft.Log{Index: k + uint64(i), Term: 1, Type: raft.LogCommand, Data: b, AppendedAt: time.Now()})
	}
	return logs, nil
}

// replay applies stored entries the FSM has not applied yet, as Raft does
// on start.
func replay(logs *LogStore, fsm *FSM) error {
	last, err := logs.LastIndex()
	if err != nil {
		return err
	}
	for i := fsm.AppliedIndex() + 1; i <= last; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			return fmt.Errorf("replay %d: %w", i, err)
		}
		if r, ok := fsm.Apply(&l).(error); ok {
			return fmt.Errorf("replay %d: %w", i, r)
		}
	}
	return nil
}

func crashChildApply(dir string) (err error) {
	logs, err := OpenLogStore(filepath.Join(dir, "log"), nil)
	if err != nil {
		return err
	}
	fsm, err := OpenFSM(filepath.Join(dir, "fsm"), nil)
	if err != nil {
		return err
	}
	if err := replay(logs, fsm); err != nil {
		return err
	}
	last, err := logs.LastIndex()
	if err != nil {
		return err
	}
	fmt.Println("ready")
	deadline := time.Now().Add(time.Minute)
	for k := last + 1; time.Now().Before(deadline); k += 2 {
		pair, err := pairLogs(k)
		if err != nil {
			return err
		}
		if err := logs.StoreLogs(pair); err != nil {
			return err
		}
		var resp []any
		if k%4 == 1 {
			resp = fsm.ApplyBatch(pair)
		} else {
			resp = []any{fsm.Apply(pair[0]), fsm.Apply(pair[1])}
		}
		for _, r := range resp {
			b, ok := r.([]byte)
			if !ok {
				return fmt.Errorf("apply %d: %v", k, r)
			}
			if res, err := donation.DecodeResult(b); err != nil || res.Code != donation.CodeOK {
				return fmt.Errorf("apply %d: %s %v", k, res.Code, err)
			}
		}
		fmt.Println("ack", k+1)
	}
	return nil
}

func crashChildRestore(dir string) error {
	fsm, err := OpenFSM(dir, nil)
	if err != nil {
		return err
	}
	countA, err := strconv.ParseInt(os.Getenv(envCountA), 10, 64)
	if err != nil {
		return err
	}
	next := os.Getenv(envSnapA)
	if fsm.Count() == countA {
		next = os.Getenv(envSnapB)
	}
	fmt.Println("ready")
	fh, err := os.Open(next)
	if err != nil {
		return err
	}
	if err := fsm.Restore(fh); err != nil {
		return err
	}
	fmt.Println("done")
	return fsm.Close()
}

// child is a running crash-test child and the lines it printed.
type child struct {
	cmd   *exec.Cmd
	lines chan string
}

func startChild(t *testing.T, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 1024)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	return c
}

// waitFor reads lines until want appears, failing after a deadline.
func (c *child) waitFor(t *testing.T, want string, seen func(string)) {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("child exited before %q: %v", want, c.cmd.Wait())
			}
			seen(l)
			if l == want {
				return
			}
		case <-timeout:
			_ = c.cmd.Process.Kill()
			t.Fatalf("child did not print %q within 60s", want)
		}
	}
}

// killAfter SIGKILLs the child after d and returns every line it printed.
func (c *child) killAfter(t *testing.T, d time.Duration, seen func(string)) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-c.lines:
			if !ok { // exited by itself
				if err := c.cmd.Wait(); err != nil {
					t.Fatalf("child failed: %v", err)
				}
				return
			}
			seen(l)
		case <-timer.C:
			if err := c.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			for l := range c.lines { // what it printed before dying
				seen(l)
			}
			_ = c.cmd.Wait()
			return
		}
	}
}

func TestCrashKillDuringApply(t *testing.T) {
	rounds := 20
	if testing.Short() {
		rounds = 3
	}
	dir := t.TempDir()
	acked := map[uint64]bool{}
	var maxAck uint64
	for round := range rounds {
		c := startChild(t, envCrashMode+"=apply", envCrashDir+"="+dir)
		onLine := func(l string) {
			if s, ok := strings.CutPrefix(l, "ack "); ok {
				n, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					t.Fatalf("bad ack %q", l)
				}
				acked[n] = true
				maxAck = max(maxAck, n)
			}
		}
		c.waitFor(t, "ready", onLine)
		c.killAfter(t, time.Duration(20+rand.IntN(181))*time.Millisecond, onLine)
		checkAfterApplyCrash(t, dir, acked, maxAck, round)
	}
	if len(acked) == 0 {
		t.Fatal("no child ever acknowledged a write")
	}
	t.Logf("%d rounds, %d acknowledged pairs, last ack %d", rounds, len(acked), maxAck)
}

func checkAfterApplyCrash(t *testing.T, dir string, acked map[uint64]bool, maxAck uint64, round int) {
	t.Helper()
	logs, err := OpenLogStore(filepath.Join(dir, "log"), testLogger(t))
	if err != nil {
		t.Fatalf("round %d: reopen log store: %v", round, err)
	}
	defer func() {
		if err := logs.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	fsm, err := OpenFSM(filepath.Join(dir, "fsm"), testLogger(t))
	if err != nil {
		t.Fatalf("round %d: reopen fsm: %v", round, err)
	}
	defer func() {
		if err := fsm.Close(); err != nil {
			t.Fatal(err)
		}
	}()

	// Every acknowledged entry is in the log and applied in the FSM.
	var wantAcked int64
	for n := range acked {
		var l raft.Log
		if err := logs.GetLog(n, &l); err != nil {
			t.Fatalf("round %d: acked log %d: %v", round, n, err)
		}
		d, ok, err := fsm.Donation(pairID(n - 1))
		if err != nil || !ok || d.Status != donation.StatusSucceeded {
			t.Fatalf("round %d: acked donation %s: ok=%v status=%s err=%v", round, pairID(n-1), ok, d.Status, err)
		}
		wantAcked += pairAmount(n - 1)
	}
	if fsm.AppliedIndex() < maxAck {
		t.Fatalf("round %d: applied index %d below the last ack %d", round, fsm.AppliedIndex(), maxAck)
	}
	if got := fsm.Totals("EUR"); got.RaisedMinor < wantAcked || got.Donations < int64(len(acked)) {
		t.Fatalf("round %d: totals %+v below what the acks imply (%d in %d)", round, got, wantAcked, len(acked))
	}
	mustVerify(t, fsm) // totals equal the sum over the donations stored

	// StoreLogs is atomic: pairs are whole. After replaying what was stored
	// but not applied, the totals are exactly the sum over the log.
	first, last := bounds(t, logs)
	if first != 1 || last%2 != 0 {
		t.Fatalf("round %d: log holds %d..%d, a pair was split", round, first, last)
	}
	if err := replay(logs, fsm); err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	want := donation.Totals{Currency: "EUR"}
	for k := uint64(1); k < last; k += 2 {
		want.RaisedMinor += pairAmount(k)
		want.Donations++
	}
	if got := fsm.Totals("EUR"); got != want || fsm.AppliedIndex() != last {
		t.Fatalf("round %d: after replay totals %+v applied %d, want %+v applied %d", round, got, fsm.AppliedIndex(), want, last)
	}
	mustVerify(t, fsm)
}

func digest(t testing.TB, f *FSM) string {
	t.Helper()
	b, err := json.Marshal(fingerprintOf(t, f))
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// TestCrashKillDuringRestore SIGKILLs a child process at random moments of
// a restore (spread over the time one takes here, so that most kills land
// while the StreamWriter is building and syncing tables, or during the
// close, reopen and switch) and checks that the FSM then holds exactly the
// old or the new state. A is 20,000 donations: a 4 MB stream, three tables.
//
// The window a kill is drawn from follows the restores the children
// themselves finished: the first restore, in this process, may run on a busy
// machine and take several times what the children take later, and kills
// drawn from such a window would all land after the restore. Rounds go on
// (up to maxRounds) until enough kills landed during a restore.
func TestCrashKillDuringRestore(t *testing.T) {
	rounds, maxRounds, wantLanded := 10, 40, 5
	n := 20000
	if testing.Short() {
		rounds, maxRounds, wantLanded, n = 2, 2, 0, 300
	}
	tmp := t.TempDir()
	write := func(name string, f *FSM) (string, string, int64) {
		path := filepath.Join(tmp, name)
		if err := os.WriteFile(path, snapshotBytes(t, f), 0o640); err != nil {
			t.Fatal(err)
		}
		return path, digest(t, f), f.Count()
	}
	pathA, digestA, countA := write("a.snap", populated(t, n))
	pathB, digestB, countB := write("b.snap", populated(t, n/2))
	if countA == countB {
		t.Fatal("the two states must differ")
	}

	dir := filepath.Join(tmp, "fsm")
	f, err := OpenFSM(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(pathA)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := f.Restore(fh); err != nil {
		t.Fatal(err)
	}
	span := time.Since(start)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// window[s] is the shortest restore towards state s seen so far.
	window := map[string]time.Duration{"A": span, "B": span}
	states := map[string]int{}
	current := "A"
	finished, landed, round := 0, 0, 0
	for ; round < maxRounds && (round < rounds || landed < wantLanded); round++ {
		next := "B"
		if current == "B" {
			next = "A"
		}
		c := startChild(t, envCrashMode+"=restore", envCrashDir+"="+dir,
			envSnapA+"="+pathA, envSnapB+"="+pathB, envCountA+"="+strconv.FormatInt(countA, 10))
		c.waitFor(t, "ready", func(string) {})
		ready := time.Now()
		done := false
		c.killAfter(t, rand.N(window[next]*3/2+10*time.Millisecond), func(l string) {
			if l == "done" {
				done = true
				window[next] = min(window[next], time.Since(ready))
			}
		})
		if done {
			finished++
		} else {
			landed++
		}

		f, err := OpenFSM(dir, testLogger(t))
		if err != nil {
			t.Fatalf("round %d: open after kill: %v\n%s", round, err, listing(dir))
		}
		switch d := digest(t, f); d {
		case digestA:
			current = "A"
		case digestB:
			current = "B"
		default:
			t.Fatalf("round %d: state is neither the old nor the new one (count %d)", round, f.Count())
		}
		states[current]++
		if !done && current != next {
			// Killed during the restore and left with the old state: the
			// restore's switch had not happened yet, as it must be.
			states["old after kill"]++
		}
		if err := f.Verify(context.Background()); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if gens := generations(t, dir); len(gens) != 1 {
			t.Fatalf("round %d: generations left: %v", round, gens)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d rounds (the first restore of A took %s here, the children's shortest A %s, B %s): "+
		"%d kills landed during a restore, %d restores finished before the kill, states seen %v",
		round, span.Round(time.Millisecond), window["A"].Round(time.Millisecond), window["B"].Round(time.Millisecond),
		landed, finished, states)
	if landed < wantLanded {
		t.Fatalf("only %d of %d kills landed during a restore (want %d)", landed, round, wantLanded)
	}
}

// listing names every file under dir with its size, for failure messages.
func listing(dir string) string {
	var b strings.Builder
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				fmt.Fprintf(&b, "%s %d\n", strings.TrimPrefix(path, dir+"/"), fi.Size())
			}
		}
		return nil
	})
	return b.String()
}
