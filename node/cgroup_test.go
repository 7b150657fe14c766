package node

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCgroupMemoryLimit reads the limit from fake cgroup trees laid out as
// v1, v2 and hybrid hosts and containers present them.
func TestCgroupMemoryLimit(t *testing.T) {
	write := func(t *testing.T, root, rel, content string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const mib150 = 150 << 20
	for _, c := range []struct {
		name  string
		files map[string]string
		self  string
		want  int64
	}{
		{"v1 own cgroup", map[string]string{"memory/surge/n1/memory.limit_in_bytes": "157286400\n"},
			"4:memory:/surge/n1\n0::/\n", mib150},
		{"v1 in a container: host path not visible, the mount root is the container's cgroup",
			map[string]string{"memory/memory.limit_in_bytes": "157286400\n"},
			"12:cpu,cpuacct:/docker/abc\n9:memory:/docker/abc\n", mib150},
		{"v1 no limit", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"},
			"9:memory:/\n", 0},
		{"v2", map[string]string{"system.slice/surge.service/memory.max": "157286400\n"},
			"0::/system.slice/surge.service\n", mib150},
		{"v2 max", map[string]string{"memory.max": "max\n"}, "0::/\n", 0},
		{"v2 on a hybrid host", map[string]string{"unified/surge/memory.max": "157286400\n"},
			"1:name=systemd:/surge\n0::/surge\n", mib150},
		{"nothing readable", map[string]string{}, "0::/\n", 0},
		{"garbage", map[string]string{"memory.max": "lots\n"}, "0::/\n", 0},
		{"no cgroup file content", map[string]string{"memory.max": "157286400\n"}, "", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			for rel, content := range c.files {
				write(t, root, rel, content)
			}
			if got := cgroupMemoryLimit(root, []byte(c.self)); got != c.want {
				t.Fatalf("limit %d, want %d", got, c.want)
			}
		})
	}
}
