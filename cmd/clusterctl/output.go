package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/surgefund/surge/web"
)

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}

// shortID is the first 8 characters of an ID.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	if id == "" {
		return "-"
	}
	return id
}

func displayName(name string) string {
	if name == "" {
		return "(unnamed)"
	}
	return name
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeStatus prints the status table, the verdict line and the problems.
func writeStatus(w io.Writer, s web.ClusterStatus) {
	t := newTable(w)
	fmt.Fprintln(t, "NAME\tID\tADDRESS\tGOSSIP\tROLE\tTERM\tCOMMIT\tAPPLIED\tLAG\tLAST CONTACT\tRAISED\tVERSION")
	for _, m := range s.Members {
		term, commit, applied, lag, contact, raised := "-", "-", "-", "-", "-", "-"
		if m.Reachable {
			term = strconv.FormatUint(m.Term, 10)
			commit = strconv.FormatUint(m.CommitIndex, 10)
			applied = strconv.FormatUint(m.AppliedIndex, 10)
			lag = strconv.FormatUint(m.Lag, 10)
			raised = m.RaisedDisplay()
			if m.Currency != "" {
				raised += " " + m.Currency
			}
			switch {
			case m.Role == "leader":
				contact = "-"
			case m.LastContact != "":
				contact = m.LastContact
			case m.LastContactMS < 0:
				contact = "never"
			}
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", displayName(m.Name), shortID(m.ID), orDash(m.HTTPAddr),
			orDash(m.Gossip), orDash(m.Role), term, commit, applied, lag, contact, raised, orDash(m.Version))
	}
	t.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, verdictLine(s))
	for _, p := range s.Problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
}

// verdictLine says the cluster's state in one line, e.g. "cluster healthy:
// leader n1, 3 voters, tolerates 1 failure".
func verdictLine(s web.ClusterStatus) string {
	leader := "no leader"
	if s.LeaderID != "" {
		name := shortID(s.LeaderID)
		for _, m := range s.Members {
			if m.ID == s.LeaderID && m.Name != "" {
				name = m.Name
			}
		}
		leader = "leader " + name
	}
	return fmt.Sprintf("cluster %s: %s, %s, tolerates %s", s.Verdict, leader, plural(s.Voters, "voter"), plural(s.FailureTolerance, "failure"))
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

func writeMembers(w io.Writer, ms []web.ClusterMember) {
	ms = slices.Clone(ms)
	slices.SortStableFunc(ms, func(a, b web.ClusterMember) int { return strings.Compare(a.Name, b.Name) })
	t := newTable(w)
	fmt.Fprintln(t, "NAME\tID\tGOSSIP\tROLE\tHTTP\tGOSSIP ADDRESS\tRAFT ADDRESS\tVERSION")
	for _, m := range ms {
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", displayName(m.Name), shortID(m.ID), orDash(m.Gossip), orDash(m.Role),
			orDash(m.HTTPAddr), orDash(m.GossipAddr), orDash(m.RaftAddr), orDash(m.Version))
	}
	t.Flush()
}

func writePeers(w io.Writer, ps []web.RaftPeer) {
	t := newTable(w)
	fmt.Fprintln(t, "NAME\tID\tADDRESS\tSUFFRAGE\tLEADER")
	for _, p := range ps {
		leader := "no"
		if p.Leader {
			leader = "yes"
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\n", displayName(p.Name), shortID(p.ID), orDash(p.Address), p.Suffrage, leader)
	}
	t.Flush()
}

// humanBytes formats a byte count with binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// progress draws a one-line progress bar on stderr when it is a terminal:
// bytes, percentage when the total is known, and the rate. It is an
// io.Writer (for io.TeeReader) counting the bytes that pass.
type progress struct {
	w       io.Writer
	on      bool
	label   string
	total   int64 // -1 unknown
	done    int64
	start   time.Time
	last    time.Time
	now     func() time.Time
	drawn   bool
	lastLen int
}

// newProgress returns a progress bar; show=false (or no terminal on
// stderr) makes it silent.
func (a *app) newProgress(label string, total int64, show bool) *progress {
	now := a.now
	t := now()
	return &progress{w: a.stderr, on: show && a.stderrTTY, label: label, total: total, start: t, now: now}
}

func (p *progress) Write(b []byte) (int, error) {
	p.add(int64(len(b)))
	return len(b), nil
}

func (p *progress) add(n int64) {
	p.done += n
	if !p.on {
		return
	}
	if t := p.now(); t.Sub(p.last) >= 100*time.Millisecond {
		p.last = t
		p.draw()
	}
}

// reset restarts the count (a retried upload).
func (p *progress) reset() {
	p.done = 0
	p.start = p.now()
}

func (p *progress) draw() {
	elapsed := p.now().Sub(p.start).Seconds()
	rate := "-"
	if elapsed > 0 {
		rate = humanBytes(int64(float64(p.done)/elapsed)) + "/s"
	}
	var line string
	if p.total > 0 {
		frac := min(float64(p.done)/float64(p.total), 1)
		const width = 24
		filled := int(frac * width)
		bar := strings.Repeat("=", filled)
		if filled < width {
			bar += ">" + strings.Repeat(" ", width-filled-1)
		}
		line = fmt.Sprintf("%s [%s] %3.0f%% %s / %s  %s", p.label, bar, frac*100, humanBytes(p.done), humanBytes(p.total), rate)
	} else {
		line = fmt.Sprintf("%s %s  %s", p.label, humanBytes(p.done), rate)
	}
	pad := ""
	if p.lastLen > len(line) {
		pad = strings.Repeat(" ", p.lastLen-len(line))
	}
	p.lastLen = len(line)
	fmt.Fprintf(p.w, "\r%s%s", line, pad)
	p.drawn = true
}

// finish draws the final state and ends the line.
func (p *progress) finish() {
	if !p.on {
		return
	}
	p.draw()
	fmt.Fprintln(p.w)
}

// progressReadSeeker counts what the upload reads; a rewind resets it.
type progressReadSeeker struct {
	r io.ReadSeeker
	p *progress
}

func (r *progressReadSeeker) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.p.add(int64(n))
	return n, err
}

func (r *progressReadSeeker) Seek(off int64, whence int) (int64, error) {
	pos, err := r.r.Seek(off, whence)
	if err == nil && pos == 0 {
		r.p.reset()
	}
	return pos, err
}
