package node

import (
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"strconv"
	"strings"
)

// ParseByteSize reads a byte count: a whole number with an optional unit,
// binary (KiB, MiB, GiB, TiB, as GOMEMLIMIT writes them; K, M, G, T mean
// the same) or decimal (kB, MB, GB, TB), or B. "0" is zero.
func ParseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%q is not a size (want e.g. 128MiB)", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size: %w", s, err)
	}
	var mult int64
	switch strings.ToLower(strings.TrimSpace(t[i:])) {
	case "", "b":
		mult = 1
	case "k", "kib":
		mult = 1 << 10
	case "m", "mib":
		mult = 1 << 20
	case "g", "gib":
		mult = 1 << 30
	case "t", "tib":
		mult = 1 << 40
	case "kb":
		mult = 1e3
	case "mb":
		mult = 1e6
	case "gb":
		mult = 1e9
	case "tb":
		mult = 1e12
	default:
		return 0, fmt.Errorf("%q has an unknown unit (use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB)", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}

// ByteSize is a flag.Value holding a byte count written with a unit. Set
// records that the flag was given (on the command line or through its
// environment variable), so a default can be told from a choice.
type ByteSize struct {
	N     int64
	Given bool
}

// String writes the size back in the largest binary unit that divides it.
func (b *ByteSize) String() string {
	if b == nil {
		return "0"
	}
	n := b.N
	for _, u := range []struct {
		name string
		v    int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.v == 0 {
			return strconv.FormatInt(n/u.v, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// Set parses s (ParseByteSize).
func (b *ByteSize) Set(s string) error {
	n, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	b.N, b.Given = n, true
	return nil
}

// MemoryLimitDecision is what ApplyMemoryLimit did, for the start log.
type MemoryLimitDecision struct {
	Limit  int64  // the Go soft memory limit now in force; 0 = none
	Source string // "flag", "GOMEMLIMIT", "cgroup", "rss-limit", "default" or "off"
	// Budget is the memory budget the limit was derived from: the
	// cgroup's limit (Source "cgroup") or --rss-limit (Source
	// "rss-limit").
	Budget int64
	// Overrode is GOMEMLIMIT's value when an explicit --memory-limit
	// replaced it.
	Overrode string
}

// ApplyMemoryLimit sets the Go runtime's soft memory limit
// (debug.SetMemoryLimit) from --memory-limit, and says which setting won:
//
//   - GOMEMLIMIT set in the environment (gomemlimit, "" when unset) and the
//     flag not given: the runtime already applied GOMEMLIMIT at start;
//     nothing changes.
//   - The flag given explicitly: its value wins, also over GOMEMLIMIT (the
//     decision names the value it replaced, and the caller logs it as a
//     warning). 0 turns the limit off.
//   - Neither: the flag's default (flag.N), if not 0; else, when the node
//     has a memory budget, two thirds of it, leaving the rest to Badger's
//     memory-mapped tables and the runtime (storage/DESIGN.md "Memory
//     limit"). The budget is the smaller of the cgroup's memory limit
//     (cgroupLimit, 0 = none) and --rss-limit (rssLimit, 0 = none).
//
// A limit makes the garbage collector run more often as the heap nears it,
// instead of letting the heap grow to twice the live data (GOGC=100); it
// is soft: the heap may exceed it when the live data does, and the GC then
// gives up at about half the CPU rather than stall the program.
func ApplyMemoryLimit(flag ByteSize, gomemlimit string, cgroupLimit, rssLimit int64) MemoryLimitDecision {
	gomemlimit = strings.TrimSpace(gomemlimit)
	if !flag.Given {
		budget, source := cgroupLimit, "cgroup"
		if rssLimit > 0 && (budget <= 0 || rssLimit < budget) {
			budget, source = rssLimit, "rss-limit"
		}
		switch {
		case gomemlimit != "":
			cur := debug.SetMemoryLimit(-1) // -1 reads without changing
			if cur == math.MaxInt64 {
				cur = 0 // GOMEMLIMIT=off
			}
			return MemoryLimitDecision{Limit: cur, Source: "GOMEMLIMIT"}
		case flag.N > 0:
			debug.SetMemoryLimit(flag.N)
			return MemoryLimitDecision{Limit: flag.N, Source: "default"}
		case budget > 0:
			// Two thirds, down to a whole MiB so the start log reads well.
			lim := budget / 3 * 2
			if lim >= 1<<20 {
				lim &^= 1<<20 - 1
			}
			debug.SetMemoryLimit(lim)
			return MemoryLimitDecision{Limit: lim, Source: source, Budget: budget}
		}
		return MemoryLimitDecision{Source: "off"} // the runtime's own default (none)
	}
	if flag.N <= 0 {
		debug.SetMemoryLimit(math.MaxInt64)
		return MemoryLimitDecision{Source: "off", Overrode: gomemlimit}
	}
	debug.SetMemoryLimit(flag.N)
	return MemoryLimitDecision{Limit: flag.N, Source: "flag", Overrode: gomemlimit}
}

// Log writes the decision: a warning when the flag replaced GOMEMLIMIT,
// an info line otherwise.
func (d MemoryLimitDecision) Log(l *slog.Logger) {
	lim := "off"
	if d.Limit > 0 {
		lim = (&ByteSize{N: d.Limit}).String()
	}
	if d.Overrode != "" {
		l.Warn("--memory-limit overrides GOMEMLIMIT", "memory_limit", lim, "gomemlimit", d.Overrode)
		return
	}
	args := []any{"memory_limit", lim, "source", d.Source}
	if key := budgetLogKeys[d.Source]; key != "" {
		args = append(args, key, (&ByteSize{N: d.Budget}).String())
	}
	l.Info("go memory limit", args...)
}

// budgetLogKeys names, by Source, the budget a derived limit came from in
// the start log.
var budgetLogKeys = map[string]string{"cgroup": "cgroup_limit", "rss-limit": "rss_limit"}
