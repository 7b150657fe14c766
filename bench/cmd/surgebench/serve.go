package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"time"

	"github.com/surgefund/surge/node"
)

// runServe starts one node in this process, prints its URL on stdout and
// serves for --duration while taking a CPU profile: the way to profile the
// page path under an external load generator (pin it with taskset, as
// pages.sh pins the node binary).
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	smoke := fs.Bool("smoke", false, "smoke mode: serve for one second")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole serving time to this file")
	duration := fs.Duration("duration", 30*time.Second, "how long to serve")
	dirFlag := fs.String("dir", "", "work directory (default: a temporary one, removed afterwards)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *smoke || envSmoke() {
		*duration = time.Second
	}
	dir, cleanup, err := workDir(*dirFlag, "surgebench-serve-", false)
	if err != nil {
		return err
	}
	defer cleanup()
	c, err := startFreshInproc(ctx, dir, 1, func(cfgs []node.Config) {
		cfgs[0].Join = nil // alone: it bootstraps itself
	})
	if err != nil {
		return err
	}
	defer c.close()
	fmt.Fprintln(stdout, c.bases()[0])
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	select {
	case <-ctx.Done():
	case <-time.After(*duration):
	}
	return nil
}
