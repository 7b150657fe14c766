package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/surgefund/surge/web"
)

// commandList is every command, in the order help lists them.
func commandList() []*command {
	return []*command{
		{
			name: "status", summary: "show every member's view and the cluster's verdict", maxArgs: 0,
			help: `Asks the node for GET /admin/v1/status: the node asks every member for its own
figures (term, indexes, lag, total) and judges the cluster:
  healthy      a leader, every voter and member alive, reachable and caught up
  degraded     a leader, but some member is dead, unreachable or lagging
  unavailable  no leader (or no quorum): writes are failing
The exit code says the verdict, for scripts: 0 healthy, 1 degraded, 2 unavailable.

Examples:
  clusterctl status
  clusterctl status --addr http://10.0.0.12:8080 --token "$TOKEN"
  clusterctl status --json | jq '.members[] | {name, lag}'`,
			run: runStatus,
		},
		{
			name: "members", summary: "list the gossip members and their Raft roles", maxArgs: 0,
			help: `Lists every member gossip knows (alive, suspect, dead or left) with its addresses
and its role in the Raft configuration (leader, voter, nonvoter, none).

Examples:
  clusterctl members
  clusterctl members --json`,
			run: runMembers,
		},
		{
			name: "peers", summary: "list the Raft configuration", maxArgs: 0,
			help: `Lists the servers of the Raft configuration: who votes and who leads.

Examples:
  clusterctl peers
  clusterctl peers --json`,
			run: runPeers,
		},
		{
			name: "leave", summary: "make the node at --addr leave the cluster gracefully", maxArgs: 0,
			help: `The node at --addr hands over leadership if it leads, has itself removed from the
Raft configuration and leaves gossip. Stop its process afterwards. The only
voter of a cluster refuses to leave.

Examples:
  clusterctl leave --addr http://10.0.0.13:8080`,
			run: runLeave,
		},
		{
			name: "remove", args: "ID", summary: "remove a member (e.g. a dead node) from the cluster", minArgs: 1, maxArgs: 1,
			help: `Removes a member from the Raft configuration. ID is a full node ID, a unique
prefix of one (the 8 characters status shows) or a unique name. Refused for
the node at --addr itself (use leave on it), for the last voter, and when the
change would break the quorum. Asks for confirmation on a terminal; without
a terminal it needs --yes.

Examples:
  clusterctl remove 3f2a9c1e
  clusterctl remove n3 --yes`,
			run: runRemove,
		},
		{
			name: "transfer-leader", args: "[ID]", summary: "hand leadership to a voter (any voter without ID)", maxArgs: 1,
			help: `Makes the current leader hand over to the voter ID (a full ID, unique prefix or
unique name), or to the most up-to-date voter when ID is left out. Use it
before maintenance on the leader's machine.

Examples:
  clusterctl transfer-leader
  clusterctl transfer-leader n2`,
			run: runTransferLeader,
		},
		{
			name: "snapshot", args: "save FILE | restore FILE", summary: "save the cluster's state to a file, or restore it", minArgs: 2, maxArgs: 2,
			help: `save writes a snapshot of the state (every donation and total) to FILE ("-" for
standard output); FILE appears only once the snapshot is complete.
restore REPLACES the whole cluster's state with the one in FILE: every node
takes it, writes since the snapshot are gone. It runs on the leader (clusterctl
follows the leader's address when the node at --addr is a follower) and asks
for confirmation (--yes without a terminal). A progress bar is shown on a
terminal.

Examples:
  clusterctl snapshot save backup-$(date +%F).snapshot
  clusterctl snapshot restore backup-2026-03-01.snapshot --yes`,
			run: runSnapshot,
		},
		{
			name: "export", args: "[FILE|-]", summary: "write every donation as CSV (default: standard output)", maxArgs: 1,
			help: `Streams every donation as CSV: id, created_at (RFC 3339, UTC), status,
amount_minor, refunded_minor, currency, provider, provider_ref, name, email,
anonymous, message. It contains personal data: keep the file safe. Cells that
a spreadsheet would run as a formula start with an apostrophe. FILE appears
only once the export is complete; a cut-off export is an error (exit 2).

Examples:
  clusterctl export donations.csv
  clusterctl export - | wc -l`,
			run: runExport,
		},
		{
			name: "help", args: "[COMMAND]", summary: "show help for clusterctl or a command", maxArgs: 1,
			run: runHelp,
		},
	}
}

const overviewText = `clusterctl operates a Surge cluster through any node's admin API.

Usage:
  clusterctl COMMAND [ARGS] [FLAGS]

Commands:
%s
Flags (every command; before or after the command and its arguments):
  --addr URL        the node's HTTP address (env SURGE_ADDR; default http://127.0.0.1:8080)
  --token TOKEN     the admin bearer token (env SURGE_TOKEN, preferred: flags show up in ps)
  --json            print the API's raw JSON instead of a table
  --timeout DUR     time to connect and get an answer (default 10s; streams may take longer)
  --yes, -y         do not ask for confirmation (remove, snapshot restore)
  -h, --help        show help

Exit codes:
  0  done; for status: the cluster is healthy
  1  status only: the cluster is degraded (a leader, but redundancy lost)
  2  error, usage mistake; for status: the cluster is unavailable

Without --token the node answers only callers on its own machine (loopback).
Run "clusterctl help COMMAND" for details and examples.
`

func writeOverview(w io.Writer) {
	var b strings.Builder
	for _, c := range commandList() {
		syn := c.name
		if c.args != "" {
			syn += " " + c.args
		}
		fmt.Fprintf(&b, "  %-36s %s\n", syn, c.summary)
	}
	fmt.Fprintf(w, overviewText, b.String())
}

func writeCommandHelp(w io.Writer, c *command) {
	syn := c.name
	if c.args != "" {
		syn += " " + c.args
	}
	fmt.Fprintf(w, "Usage: clusterctl %s [FLAGS]\n\n%s.\n", syn, strings.ToUpper(c.summary[:1])+c.summary[1:])
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", c.help)
	}
	fmt.Fprint(w, "\nFlags: --addr URL, --token TOKEN, --json, --timeout DUR, --yes (see clusterctl help).\n")
}

func runHelp(_ context.Context, a *app, args []string) (int, error) {
	if len(args) == 0 {
		writeOverview(a.stdout)
		return exitOK, nil
	}
	c := lookup(args[0])
	if c == nil {
		return exitError, usagef("unknown command %q", args[0])
	}
	writeCommandHelp(a.stdout, c)
	return exitOK, nil
}

// callCtx bounds a non-streaming call.
func (a *app) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	// The node may wait on its peers (status) or on an election (actions):
	// give it the timeout twice over.
	return context.WithTimeout(ctx, 2*a.opts.timeout)
}

// printRaw prints a JSON body as the node sent it.
func (a *app) printRaw(raw json.RawMessage) {
	a.stdout.Write(raw)
	if len(raw) > 0 && raw[len(raw)-1] != '\n' {
		io.WriteString(a.stdout, "\n")
	}
}

func runStatus(ctx context.Context, a *app, _ []string) (int, error) {
	cctx, cancel := a.callCtx(ctx)
	defer cancel()
	raw, err := a.client.RawJSON(cctx, http.MethodGet, web.PathStatus, nil)
	if err != nil {
		return exitError, err
	}
	var s web.ClusterStatus
	if err := json.Unmarshal(raw, &s); err != nil {
		return exitError, fmt.Errorf("decode status: %w", err)
	}
	if a.opts.json {
		a.printRaw(raw)
	} else {
		writeStatus(a.stdout, s)
	}
	switch s.Verdict {
	case web.VerdictHealthy:
		return exitOK, nil
	case web.VerdictDegraded:
		return exitDegraded, nil
	}
	return exitError, nil
}

func runMembers(ctx context.Context, a *app, _ []string) (int, error) {
	cctx, cancel := a.callCtx(ctx)
	defer cancel()
	if a.opts.json {
		raw, err := a.client.RawJSON(cctx, http.MethodGet, web.PathMembers, nil)
		if err != nil {
			return exitError, err
		}
		a.printRaw(raw)
		return exitOK, nil
	}
	ms, err := a.client.Members(cctx)
	if err != nil {
		return exitError, err
	}
	writeMembers(a.stdout, ms)
	return exitOK, nil
}

func runPeers(ctx context.Context, a *app, _ []string) (int, error) {
	cctx, cancel := a.callCtx(ctx)
	defer cancel()
	if a.opts.json {
		raw, err := a.client.RawJSON(cctx, http.MethodGet, web.PathPeers, nil)
		if err != nil {
			return exitError, err
		}
		a.printRaw(raw)
		return exitOK, nil
	}
	ps, err := a.client.Peers(cctx)
	if err != nil {
		return exitError, err
	}
	writePeers(a.stdout, ps)
	return exitOK, nil
}

// action posts to an action endpoint and reports the result.
func (a *app) action(ctx context.Context, path string, body any, done func(web.ActionResult) string) (int, error) {
	cctx, cancel := a.callCtx(ctx)
	defer cancel()
	raw, err := a.client.RawJSON(cctx, http.MethodPost, path, body)
	if err != nil {
		return exitError, err
	}
	if a.opts.json {
		a.printRaw(raw)
		return exitOK, nil
	}
	var r web.ActionResult
	if err := json.Unmarshal(raw, &r); err != nil {
		return exitError, fmt.Errorf("decode answer: %w", err)
	}
	fmt.Fprintln(a.stdout, done(r))
	return exitOK, nil
}

func runLeave(ctx context.Context, a *app, _ []string) (int, error) {
	return a.action(ctx, web.PathLeave, struct{}{}, func(r web.ActionResult) string {
		return fmt.Sprintf("node %s left the cluster; stop its process now", shortID(r.ID))
	})
}

func runRemove(ctx context.Context, a *app, args []string) (int, error) {
	m, err := a.resolve(ctx, args[0])
	if err != nil {
		return exitError, err
	}
	ok, err := a.confirm(fmt.Sprintf("Remove node %s (%s)?", shortID(m.ID), displayName(m.Name)))
	if err != nil {
		return exitError, err
	}
	if !ok {
		fmt.Fprintln(a.stderr, "not removed")
		return exitError, nil
	}
	return a.action(ctx, web.PathRemove, web.IDRequest{ID: m.ID}, func(web.ActionResult) string {
		return fmt.Sprintf("removed %s (%s) from the cluster", displayName(m.Name), shortID(m.ID))
	})
}

func runTransferLeader(ctx context.Context, a *app, args []string) (int, error) {
	var req web.IDRequest
	if len(args) == 1 {
		m, err := a.resolve(ctx, args[0])
		if err != nil {
			return exitError, err
		}
		req.ID = m.ID
	}
	var names map[string]string
	if !a.opts.json {
		names = a.names(ctx)
	}
	return a.action(ctx, web.PathTransferLeader, req, func(r web.ActionResult) string {
		if r.LeaderID == "" {
			return "leadership handed over; the new leader is being elected"
		}
		return fmt.Sprintf("leadership handed over; the leader is now %s (%s)", displayName(names[r.LeaderID]), shortID(r.LeaderID))
	})
}

// resolve finds a member by full ID, unique ID prefix or unique name.
func (a *app) resolve(ctx context.Context, ref string) (web.ClusterMember, error) {
	cctx, cancel := a.callCtx(ctx)
	defer cancel()
	ms, err := a.client.Members(cctx)
	if err != nil {
		return web.ClusterMember{}, err
	}
	var byPrefix, byName []web.ClusterMember
	for _, m := range ms {
		if m.ID == ref {
			return m, nil
		}
		if strings.HasPrefix(m.ID, ref) {
			byPrefix = append(byPrefix, m)
		}
		if m.Name == ref {
			byName = append(byName, m)
		}
	}
	switch {
	case len(byPrefix) == 1 && len(ref) >= 4:
		return byPrefix[0], nil
	case len(byPrefix) > 1 && len(ref) >= 4:
		return web.ClusterMember{}, fmt.Errorf("%q matches %d members: give more of the ID", ref, len(byPrefix))
	case len(byName) == 1:
		return byName[0], nil
	case len(byName) > 1:
		return web.ClusterMember{}, fmt.Errorf("%d members are named %q: give the ID", len(byName), ref)
	}
	return web.ClusterMember{}, fmt.Errorf("no member matches %q (give an ID, a prefix of 4+ characters or a name; see clusterctl members)", ref)
}

// names maps member IDs to names, best effort.
func (a *app) names(ctx context.Context) map[string]string {
	out := map[string]string{}
	cctx, cancel := a.callCtx(ctx)
	defer cancel()
	if ms, err := a.client.Members(cctx); err == nil {
		for _, m := range ms {
			out[m.ID] = m.Name
		}
	}
	return out
}

func runSnapshot(ctx context.Context, a *app, args []string) (int, error) {
	switch args[0] {
	case "save":
		return a.snapshotSave(ctx, args[1])
	case "restore":
		return a.snapshotRestore(ctx, args[1])
	}
	return exitError, usagef("snapshot wants save or restore, not %q", args[0])
}

func (a *app) snapshotSave(ctx context.Context, path string) (int, error) {
	rc, size, err := a.client.Snapshot(ctx)
	if err != nil {
		return exitError, err
	}
	defer rc.Close()
	toStdout := path == "-"
	p := a.newProgress("snapshot", size, !(toStdout && a.stdoutTTY))
	n, err := writeAtomically(path, a.stdout, io.TeeReader(rc, p))
	p.finish()
	if err != nil {
		return exitError, fmt.Errorf("save snapshot: %w", err)
	}
	if size >= 0 && n != size {
		return exitError, fmt.Errorf("save snapshot: got %d of %d bytes", n, size)
	}
	if !toStdout {
		fmt.Fprintf(a.stderr, "saved snapshot to %s (%s)\n", path, humanBytes(n))
	}
	return exitOK, nil
}

func (a *app) snapshotRestore(ctx context.Context, path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return exitError, fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return exitError, fmt.Errorf("restore: %w", err)
	}
	if !st.Mode().IsRegular() || st.Size() == 0 {
		return exitError, fmt.Errorf("restore: %s is not a snapshot file", path)
	}
	ok, err := a.confirm(fmt.Sprintf("Replace the WHOLE cluster's state with %s (%s)? Writes since that snapshot are lost.", path, humanBytes(st.Size())))
	if err != nil {
		return exitError, err
	}
	if !ok {
		fmt.Fprintln(a.stderr, "not restored")
		return exitError, nil
	}
	p := a.newProgress("restore", st.Size(), true)
	r, err := a.client.Restore(ctx, &progressReadSeeker{r: f, p: p})
	p.finish()
	if err != nil {
		return exitError, err
	}
	if a.opts.json {
		b, _ := json.Marshal(r)
		a.printRaw(b)
		return exitOK, nil
	}
	fmt.Fprintf(a.stdout, "restored the cluster's state from %s (%s)\n", path, humanBytes(st.Size()))
	return exitOK, nil
}

func runExport(ctx context.Context, a *app, args []string) (int, error) {
	path := "-"
	if len(args) == 1 {
		path = args[0]
	}
	rc, err := a.client.Export(ctx)
	if err != nil {
		return exitError, err
	}
	defer rc.Close()
	toStdout := path == "-"
	p := a.newProgress("export", -1, !(toStdout && a.stdoutTTY))
	n, err := writeAtomically(path, a.stdout, io.TeeReader(rc, p))
	p.finish()
	if err != nil {
		if errors.Is(err, web.ErrIncompleteExport) && toStdout {
			return exitError, fmt.Errorf("%w (the output above is incomplete)", err)
		}
		return exitError, err
	}
	if !toStdout {
		fmt.Fprintf(a.stderr, "exported to %s (%s)\n", path, humanBytes(n))
	}
	return exitOK, nil
}

// writeAtomically copies r to path through a temporary file in the same
// directory, synced and renamed into place only when the copy is complete
// ("-" writes to stdout directly).
func writeAtomically(path string, stdout io.Writer, r io.Reader) (int64, error) {
	if path == "-" {
		return io.Copy(stdout, r)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.part")
	if err != nil {
		return 0, err
	}
	fail := func(err error) (int64, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return 0, err
	}
	if err := tmp.Chmod(0o600); err != nil {
		return fail(err)
	}
	n, err := io.Copy(tmp, r)
	if err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return 0, err
	}
	return n, nil
}
