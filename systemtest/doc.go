// Package systemtest holds tests that build the real binaries and run them
// as separate processes on 127.0.0.1: one node end to end, a three-process
// cluster with SIGKILL and restart, and the Docker Compose cluster. They
// skip under -short.
package systemtest
