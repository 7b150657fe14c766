package node

import (
	"os/exec"
	"sort"
	"strings"
	"testing"
)

// TestDependencyDirection enforces design.md §2: dependencies point one
// way. Each package may import only the internal packages listed here.
func TestDependencyDirection(t *testing.T) {
	const mod = "github.com/surgefund/surge/"
	allowed := map[string][]string{
		"donation":           {},
		"donation/memledger": {"donation"},
		"storage":            {"donation"},
		"cluster":            {},
		"payment":            {"donation"},
		"site":               {},
		"web":                {"donation", "payment", "site"},
		"node":               {"*"},
		"cmd/node":           {"node"},
		"cmd/clusterctl":     {"web"},
		"systemtest":         {},
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", mod+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], mod)
		rules, ok := allowed[pkg]
		if !ok {
			if pkg == "bench" || strings.HasPrefix(pkg, "bench/") {
				continue // the benchmark harness drives the product from outside, like a test
			}
			t.Errorf("package %s has no dependency rule: add it to this test", pkg)
			continue
		}
		seen++
		if len(rules) == 1 && rules[0] == "*" {
			continue
		}
		ok2 := map[string]bool{}
		for _, r := range rules {
			ok2[r] = true
		}
		var bad []string
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			if dep := strings.TrimPrefix(imp, mod); !ok2[dep] {
				bad = append(bad, dep)
			}
		}
		sort.Strings(bad)
		if len(bad) > 0 {
			t.Errorf("%s imports %v; allowed: %v", pkg, bad, rules)
		}
	}
	if seen < 6 {
		t.Fatalf("checked only %d packages; go list output:\n%s", seen, out)
	}
}
