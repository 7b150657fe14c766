package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildTools compiles cmd/node and bench/cmd/surgebench into a temporary
// directory. surgebench is built with -race when the tests are, so the
// harness and the in-process nodes it runs are checked too; the node
// binary is built without it (systemtest covers the node under -race) to
// keep the smoke runs short.
func buildTools(t *testing.T) (node, surgebench string) {
	t.Helper()
	dir := t.TempDir()
	node = filepath.Join(dir, "node")
	surgebench = filepath.Join(dir, "surgebench")
	builds := [][]string{
		{"build", "-o", node, "./cmd/node"},
		{"build", "-o", surgebench, "./bench/cmd/surgebench"},
	}
	if raceEnabled {
		builds[1] = append([]string{"build", "-race"}, builds[1][1:]...)
	}
	for _, args := range builds {
		cmd := exec.Command("go", args...)
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return node, surgebench
}

// runSmoke runs one harness with a deadline and returns its stdout; it
// fails the test when the harness exits non-zero.
func runSmoke(t *testing.T, limit time.Duration, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s %s: %s", filepath.Base(name), strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("%s %v: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(name), args, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func wantAll(t *testing.T, out string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(out, p) {
			t.Errorf("output lacks %q:\n%s", p, out)
		}
	}
}

// TestSmoke runs every harness in its smoke mode, one after the other
// (they load the machine; running them in parallel would only make each
// slower). Each harness exits non-zero when it did not work: no operation
// succeeded, an acknowledged write is missing from the total, a node did
// not catch up, nginx and the node sent different bytes.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("bench smoke: starts node processes and clusters; skipped under -short")
	}
	node, sb := buildTools(t)
	nodeBin := "--node-bin=" + node

	t.Run("propose", func(t *testing.T) {
		tr := filepath.Join(t.TempDir(), "propose.trace")
		out := runSmoke(t, 2*time.Minute, nil, sb, "propose", "--smoke", "--trace", tr)
		wantAll(t, out, "## propose", "| 1 | **", "| 8 | **", "stalls, median")
		out = runSmoke(t, time.Minute, nil, sb, "tracewin", tr)
		wantAll(t, out, "| from s | compaction |", "| 0.0 |")
	})
	t.Run("writes", func(t *testing.T) {
		out := runSmoke(t, 2*time.Minute, nil, sb, "writes", "--smoke", nodeBin)
		wantAll(t, out, "## writes", "| 1 | **", "| 8 | **")
	})
	t.Run("journeys", func(t *testing.T) {
		out := runSmoke(t, 2*time.Minute, nil, sb, "journeys", "--smoke", nodeBin)
		wantAll(t, out, "## journeys", "| 1 | **", "| 8 | **", "GET /success p99")
	})
	t.Run("failover", func(t *testing.T) {
		out := runSmoke(t, 3*time.Minute, nil, sb, "failover", "--smoke", nodeBin)
		wantAll(t, out, "## failover", "| **median** |", "leader changes", "nothing acknowledged was lost")
	})
	t.Run("catchup", func(t *testing.T) {
		// The first run loads and saves its data set, the second reuses it.
		set := filepath.Join(t.TempDir(), "set")
		out := runSmoke(t, 3*time.Minute, nil, sb, "catchup", "--smoke", nodeBin, "--reuse", set)
		wantAll(t, out, "## catch-up", "| n1 |", "| n4 |", "Right total", "Where the time goes")
		out = runSmoke(t, 3*time.Minute, nil, sb, "catchup", "--smoke", nodeBin, "--reuse", set)
		wantAll(t, out, "## catch-up", "Load: reused the data set in "+set, "| n4 |", "Right total")
	})
	t.Run("serve", func(t *testing.T) {
		out := runSmoke(t, time.Minute, nil, sb, "serve", "--smoke")
		wantAll(t, out, "http://127.0.0.1:")
	})
	t.Run("pages", func(t *testing.T) {
		for _, tool := range []string{"nginx", "wrk", "taskset", "curl", "bash"} {
			if _, err := exec.LookPath(tool); err != nil {
				t.Skipf("pages.sh needs %s, which is not installed: apt-get install nginx wrk util-linux curl (.ci/run installs them)", tool)
			}
		}
		out := runSmoke(t, 3*time.Minute, []string{"NODE_BIN=" + node}, "bash", "pages.sh", "--smoke")
		wantAll(t, out, "## pages", "| / | node |", "| / | nginx |", "| /api/v1/total | nginx |")
	})
}
