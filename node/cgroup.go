package node

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CgroupMemoryLimit returns the memory limit of the cgroup this process
// runs in, in bytes, or 0 when there is none (or it cannot be read). It
// reads the unified hierarchy (cgroup v2, memory.max) and the v1 memory
// controller (memory.limit_in_bytes) under /sys/fs/cgroup, looking at the
// process's own cgroup first and then at the mount's root, which is the
// container's own cgroup when /proc/self/cgroup shows a host path the
// container cannot see.
func CgroupMemoryLimit() int64 {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	return cgroupMemoryLimit("/sys/fs/cgroup", self)
}

// noLimitV1 is where cgroup v1 reports "no limit": the page-rounded
// maximum, about 2^63. Anything at or above 2^62 is taken as none.
const noLimitV1 = int64(1) << 62

// cgroupMemoryLimit does the work of CgroupMemoryLimit for a cgroup mount
// at root and the contents of /proc/self/cgroup.
func cgroupMemoryLimit(root string, selfCgroup []byte) int64 {
	var v1Path, v2Path string
	haveV2 := false
	sc := bufio.NewScanner(bytes.NewReader(selfCgroup))
	for sc.Scan() {
		// hierarchy-ID:controller-list:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2Path, haveV2 = parts[2], true
		case hasController(parts[1], "memory"):
			v1Path = parts[2]
		}
	}
	if v1Path != "" {
		base := filepath.Join(root, "memory")
		for _, dir := range []string{filepath.Join(base, v1Path), base} {
			if n, ok := readLimit(filepath.Join(dir, "memory.limit_in_bytes")); ok {
				return n
			}
		}
	}
	if haveV2 {
		// The unified mount is /sys/fs/cgroup on a v2-only host and
		// /sys/fs/cgroup/unified on a hybrid one.
		for _, base := range []string{root, filepath.Join(root, "unified")} {
			for _, dir := range []string{filepath.Join(base, v2Path), base} {
				if n, ok := readLimit(filepath.Join(dir, "memory.max")); ok {
					return n
				}
			}
		}
	}
	return 0
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// readLimit reads a limit file: ok is false when the file is missing or
// unreadable, n is 0 for "max" (v2) or a v1 "no limit" value.
func readLimit(path string) (n int64, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, true
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 || v >= noLimitV1 {
		return 0, true
	}
	return v, true
}
