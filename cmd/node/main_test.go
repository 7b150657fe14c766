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

func TestParseRSSLimit(t *testing.T) {
	cfg, _, err := parse(nil, io.Discard)
	if err != nil || cfg.RSSLimit != 0 {
		t.Fatalf("no flag: %v, RSSLimit %d, want 0 (none)", err, cfg.RSSLimit)
	}
	cfg, _, err = parse([]string{"--rss-limit", "128MiB"}, io.Discard)
	if err != nil || cfg.RSSLimit != 128<<20 {
		t.Fatalf("--rss-limit 128MiB: %v, RSSLimit %d", err, cfg.RSSLimit)
	}
	t.Setenv("SURGE_RSS_LIMIT", "150MB")
	cfg, _, err = parse(nil, io.Discard)
	if err != nil || cfg.RSSLimit != 150e6 {
		t.Fatalf("SURGE_RSS_LIMIT=150MB: %v, RSSLimit %d", err, cfg.RSSLimit)
	}
	if _, _, err := parse([]string{"--rss-limit", "-5"}, io.Discard); err == nil {
		t.Fatal("--rss-limit -5 accepted")
	}
}
