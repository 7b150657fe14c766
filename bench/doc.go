// Package bench holds the performance harness of Surge: the scripts and
// the surgebench program that measure a node against nginx, the write
// paths of a 3-node cluster, failover, catch-up, memory and full donor
// journeys. Its results are written down in BENCHMARKS.md.
//
// The package itself has no code: smoke_test.go runs every harness in its
// smoke mode (a few seconds on small data) so that `go test ./...` checks
// that they still work. Speed is never judged in a test.
//
// It may import nothing internal; bench/cmd/surgebench may import node,
// donation, payment and web (the admin API's client).
package bench
