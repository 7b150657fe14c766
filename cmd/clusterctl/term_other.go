//go:build !linux && !darwin && !freebsd && !netbsd && !openbsd && !dragonfly

package main

// isTerminalFD is false where clusterctl cannot tell: it then never
// prompts (use --yes) and draws no progress bar.
func isTerminalFD(uintptr) bool { return false }
