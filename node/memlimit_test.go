package node

import (
	"bytes"
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

func TestParseByteSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"65536", 65536}, {"100B", 100}, {"128MiB", 128 << 20}, {"128M", 128 << 20},
		{"1GiB", 1 << 30}, {" 2 KiB ", 2048}, {"150MB", 150e6}, {"1kB", 1000}, {"3TiB", 3 << 40}, {"1gib", 1 << 30},
	} {
		got, err := ParseByteSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1MiB", "1.5GiB", "12 parsecs", "99999999999999999999", "9000000TiB"} {
		if n, err := ParseByteSize(bad); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", bad, n)
		}
	}
}

func TestByteSizeFlag(t *testing.T) {
	var b ByteSize
	if b.Given || b.String() != "0" {
		t.Fatalf("zero value: %+v %q", b, b.String())
	}
	if err := b.Set("96MiB"); err != nil || !b.Given || b.N != 96<<20 || b.String() != "96MiB" {
		t.Fatalf("Set(96MiB): %v %+v %q", err, b, b.String())
	}
	if err := b.Set("1000"); err != nil || b.String() != "1000" {
		t.Fatalf("Set(1000): %v %q", err, b.String())
	}
	if err := b.Set("lots"); err == nil {
		t.Fatal("Set(lots) accepted")
	}
}

// TestApplyMemoryLimit covers who wins between --memory-limit (given or
// its default) and GOMEMLIMIT. The runtime's limit is process-wide: it is
// restored afterwards, and the test does not run in parallel.
func TestApplyMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	const envLimit = 300 << 20

	for _, c := range []struct {
		name       string
		flag       ByteSize
		gomemlimit string // the variable; the runtime is set to envLimit when not ""
		cgroup     int64  // the cgroup's memory limit; 0 = none
		rss        int64  // --rss-limit; 0 = none
		want       MemoryLimitDecision
		runtime    int64
	}{
		{"nothing", ByteSize{}, "", 0, 0, MemoryLimitDecision{Source: "off"}, math.MaxInt64},
		{"default", ByteSize{N: 64 << 20}, "", 0, 0, MemoryLimitDecision{Limit: 64 << 20, Source: "default"}, 64 << 20},
		{"flag", ByteSize{N: 100 << 20, Given: true}, "", 0, 0, MemoryLimitDecision{Limit: 100 << 20, Source: "flag"}, 100 << 20},
		{"GOMEMLIMIT beats the default", ByteSize{N: 64 << 20}, "300MiB", 0, 0, MemoryLimitDecision{Limit: envLimit, Source: "GOMEMLIMIT"}, envLimit},
		{"flag beats GOMEMLIMIT, not silently", ByteSize{N: 100 << 20, Given: true}, "300MiB", 0, 0, MemoryLimitDecision{Limit: 100 << 20, Source: "flag", Overrode: "300MiB"}, 100 << 20},
		{"flag 0 turns GOMEMLIMIT off", ByteSize{Given: true}, "300MiB", 0, 0, MemoryLimitDecision{Source: "off", Overrode: "300MiB"}, math.MaxInt64},
		{"cgroup: two thirds of its limit", ByteSize{}, "", 150 << 20, 0, MemoryLimitDecision{Limit: 100 << 20, Source: "cgroup", Budget: 150 << 20}, 100 << 20},
		{"flag beats the cgroup", ByteSize{N: 64 << 20, Given: true}, "", 150 << 20, 0, MemoryLimitDecision{Limit: 64 << 20, Source: "flag"}, 64 << 20},
		{"flag 0 turns the cgroup default off", ByteSize{Given: true}, "", 150 << 20, 0, MemoryLimitDecision{Source: "off"}, math.MaxInt64},
		{"GOMEMLIMIT beats the cgroup", ByteSize{}, "300MiB", 150 << 20, 0, MemoryLimitDecision{Limit: envLimit, Source: "GOMEMLIMIT"}, envLimit},
		{"rss-limit: two thirds of it", ByteSize{}, "", 0, 150 << 20, MemoryLimitDecision{Limit: 100 << 20, Source: "rss-limit", Budget: 150 << 20}, 100 << 20},
		{"rss-limit below the cgroup's", ByteSize{}, "", 300 << 20, 150 << 20, MemoryLimitDecision{Limit: 100 << 20, Source: "rss-limit", Budget: 150 << 20}, 100 << 20},
		{"cgroup below rss-limit", ByteSize{}, "", 150 << 20, 300 << 20, MemoryLimitDecision{Limit: 100 << 20, Source: "cgroup", Budget: 150 << 20}, 100 << 20},
		{"rss-limit: down to a whole MiB", ByteSize{}, "", 0, 64 << 20, MemoryLimitDecision{Limit: 42 << 20, Source: "rss-limit", Budget: 64 << 20}, 42 << 20},
		{"flag beats rss-limit", ByteSize{N: 64 << 20, Given: true}, "", 0, 150 << 20, MemoryLimitDecision{Limit: 64 << 20, Source: "flag"}, 64 << 20},
		{"GOMEMLIMIT beats rss-limit", ByteSize{}, "300MiB", 0, 150 << 20, MemoryLimitDecision{Limit: envLimit, Source: "GOMEMLIMIT"}, envLimit},
	} {
		t.Run(c.name, func(t *testing.T) {
			debug.SetMemoryLimit(math.MaxInt64)
			if c.gomemlimit != "" {
				debug.SetMemoryLimit(envLimit) // what the runtime did with the variable at start
			}
			got := ApplyMemoryLimit(c.flag, c.gomemlimit, c.cgroup, c.rss)
			if got != c.want {
				t.Errorf("decision %+v, want %+v", got, c.want)
			}
			if r := debug.SetMemoryLimit(-1); r != c.runtime {
				t.Errorf("runtime limit %d, want %d", r, c.runtime)
			}
		})
	}
}

// TestMemoryLimitDecisionLog: the start log names the budget a derived
// limit came from, and nothing more for the other sources.
func TestMemoryLimitDecisionLog(t *testing.T) {
	for _, c := range []struct {
		d    MemoryLimitDecision
		want string
	}{
		{MemoryLimitDecision{Limit: 100 << 20, Source: "cgroup", Budget: 150 << 20}, "memory_limit=100MiB source=cgroup cgroup_limit=150MiB"},
		{MemoryLimitDecision{Limit: 42 << 20, Source: "rss-limit", Budget: 64 << 20}, "memory_limit=42MiB source=rss-limit rss_limit=64MiB"},
		{MemoryLimitDecision{Limit: 64 << 20, Source: "flag"}, "memory_limit=64MiB source=flag\n"},
		{MemoryLimitDecision{Source: "off"}, "memory_limit=off source=off\n"},
		{MemoryLimitDecision{Limit: 64 << 20, Source: "flag", Overrode: "300MiB"}, "level=WARN msg=\"--memory-limit overrides GOMEMLIMIT\" memory_limit=64MiB gomemlimit=300MiB"},
	} {
		var b bytes.Buffer
		c.d.Log(slog.New(slog.NewTextHandler(&b, nil)))
		if !strings.Contains(b.String(), c.want) {
			t.Errorf("%+v logged %q, want it to contain %q", c.d, b.String(), c.want)
		}
	}
}
