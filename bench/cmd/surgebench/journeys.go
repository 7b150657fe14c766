package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// journeySteps names the requests of one donor journey, in order.
var journeySteps = []string{"GET /", "GET /donate", "POST /donate", "GET gateway", "POST gateway Pay", "GET return", "GET /success", "GET /api/v1/total"}

// journey walks one donor through the site as a browser without script
// would, on node base: each step checks its status and follows the
// Location of the previous redirect.
func journey(ctx context.Context, c *http.Client, base string, rec func(step string, d time.Duration)) error {
	do := func(step, method, u string, form url.Values, want int) (*url.URL, error) {
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequestWithContext(ctx, method, u, body)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "text/html")
		req.Header.Set("Accept-Encoding", "gzip, br")
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", req.URL.Scheme+"://"+req.URL.Host)
			req.Header.Set("Sec-Fetch-Site", "same-origin")
		}
		t0 := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", step, err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", step, err)
		}
		if resp.StatusCode != want {
			return nil, fmt.Errorf("%s %s: %s, want %d", step, u, resp.Status, want)
		}
		rec(step, time.Since(t0))
		if want != http.StatusSeeOther {
			return nil, nil
		}
		loc, err := resp.Location()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", step, err)
		}
		return loc, nil
	}
	if _, err := do(journeySteps[0], http.MethodGet, base+"/", nil, http.StatusOK); err != nil {
		return err
	}
	if _, err := do(journeySteps[1], http.MethodGet, base+"/donate", nil, http.StatusOK); err != nil {
		return err
	}
	form := randomDonor().form("25")
	checkout, err := do(journeySteps[2], http.MethodPost, base+"/donate", form, http.StatusSeeOther)
	if err != nil {
		return err
	}
	if _, err := do(journeySteps[3], http.MethodGet, checkout.String(), nil, http.StatusOK); err != nil {
		return err
	}
	ret, err := do(journeySteps[4], http.MethodPost, checkout.String(), url.Values{"outcome": {"succeeded"}}, http.StatusSeeOther)
	if err != nil {
		return err
	}
	success, err := do(journeySteps[5], http.MethodGet, ret.String(), nil, http.StatusSeeOther)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(success.Path, "/success") {
		return fmt.Errorf("return: redirected to %s, not /success", success)
	}
	if _, err := do(journeySteps[6], http.MethodGet, success.String(), nil, http.StatusOK); err != nil {
		return err
	}
	_, err = do(journeySteps[7], http.MethodGet, base+"/api/v1/total", nil, http.StatusOK)
	return err
}

// runJourneys: design brief item 6.
func runJourneys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	hc, err := startHTTPCurve(ctx, "journeys", "16,64,256", args, stderr)
	if err != nil {
		return err
	}
	defer hc.close()
	f, tc, client, sub := &hc.f, hc.tc, hc.client, &hc.sub
	op := func(ctx context.Context, w, _ int) error {
		return journey(ctx, client, tc.bases[w%len(tc.bases)], func(step string, d time.Duration) { sub.record(w, step, d) })
	}
	// Cut-off journeys settle for 200 ms before the total is compared.
	rows, err := hc.run(ctx, op, 200*time.Millisecond, "journeys completed")
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "## journeys: full donor path on 3 node processes\n\n")
	fmt.Fprintf(stdout, "machine: %s\n\n", machine())
	fmt.Fprintf(stdout, "command: surgebench journeys %s\n\n", strings.Join(args, " "))
	fmt.Fprintf(stdout, "%d rounds × %s per level. Donor i stays on node i%%3 and walks: %s (8 requests; the gateway's Pay sends the signed notification and waits for its commit before the 303). Every run checks that the public donation count grew by at least the number of completed journeys.\n\n", f.rounds, f.duration, strings.Join(journeySteps, " → "))
	head := []string{"donors", "journeys/s median (min–max)", "journey p99 ms", "errors", "node CPU µs/journey"}
	for _, s := range journeySteps {
		head = append(head, s+" p99")
	}
	t := table{head: head}
	for _, r := range rows {
		rates := r.rates()
		lo, hi := minMax(rates)
		row := []string{itoa(r.clients),
			fmt.Sprintf("**%s** (%s–%s)", fmtInt(median(rates)), fmtInt(lo), fmtInt(hi)),
			fmtMS(median(r.pct(func(s summary) time.Duration { return s.P99 }))),
			itoa(r.errors()),
			fmtInt(r.cpuPerOp(func(x runResult) time.Duration { return x.Procs }))}
		for _, s := range journeySteps {
			row = append(row, fmtMS(median(r.subPct(s, func(s summary) time.Duration { return s.P99 }))))
		}
		t.add(row...)
	}
	t.write(stdout)
	fmt.Fprintln(stdout, "\nPer-page columns: p99 ms of that request, median over the runs.")
	return reportErrors(stdout, rows, "donors", "journey completed")
}
