package main

import (
	"io"
	"testing"
)

func TestParseMemoryLimit(t *testing.T) {
	_, lo, err := parse(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if lo.memoryLimit.Given || lo.memoryLimit.N != defaultMemoryLimit {
		t.Fatalf("no flag: %+v", lo.memoryLimit)
	}
	_, lo, err = parse([]string{"--memory-limit", "100MiB"}, io.Discard)
	if err != nil || !lo.memoryLimit.Given || lo.memoryLimit.N != 100<<20 {
		t.Fatalf("--memory-limit 100MiB: %v %+v", err, lo.memoryLimit)
	}
	t.Setenv("SURGE_MEMORY_LIMIT", "64MiB")
	_, lo, err = parse(nil, io.Discard)
	if err != nil || !lo.memoryLimit.Given || lo.memoryLimit.N != 64<<20 {
		t.Fatalf("SURGE_MEMORY_LIMIT=64MiB: %v %+v", err, lo.memoryLimit)
	}
	if _, _, err := parse([]string{"--memory-limit", "lots"}, io.Discard); err == nil {
		t.Fatal("--memory-limit lots accepted")
	}
}
