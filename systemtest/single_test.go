package systemtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSingleNodeEndToEnd is the donor's journey on the real binary: give,
// pay through the dev gateway, see the total rise; decline and see nothing
// counted; then kill -9 and find everything as it was.
func TestSingleNodeEndToEnd(t *testing.T) {
	needBinaries(t)
	ctx := context.Background()
	data := t.TempDir()
	n := newProc(t, "solo", data)
	n.start()
	waitReady(t, n.HTTP, 30*time.Second)

	before := getTotal(t, n.HTTP)
	if before.Currency != "EUR" || before.GoalMinor <= 0 {
		t.Fatalf("total before: %+v", before)
	}

	// Every page is there.
	for _, p := range []string{"/", "/donate", "/success", "/error", "/contact", "/about"} {
		resp, err := client.Get(n.HTTP + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("GET %s: %d %s", p, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}

	// A donation paid through the gateway lands on /success and counts.
	paid, err := createDonation(ctx, n.HTTP, 2500, "")
	if err != nil {
		t.Fatal(err)
	}
	if paid.Status != "pending" || paid.CheckoutURL == "" {
		t.Fatalf("created: %+v", paid)
	}
	loc, err := pay(ctx, paid.CheckoutURL, "succeeded")
	if err != nil {
		t.Fatal(err)
	}
	if want := "/success?donation=" + paid.ID; !strings.HasSuffix(loc, want) {
		t.Fatalf("after paying: Location %q, want …%s", loc, want)
	}
	resp, err := client.Get(n.HTTP + loc[strings.Index(loc, "/success"):])
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("success page: %v %v", err, resp)
	}
	resp.Body.Close()
	after := getTotal(t, n.HTTP)
	if after.RaisedMinor != before.RaisedMinor+2500 || after.Donations != before.Donations+1 {
		t.Fatalf("total after paying: %+v, before %+v", after, before)
	}
	if d := getDonation(t, n.HTTP, paid.ID); d.Status != "succeeded" || d.AmountMinor != 2500 {
		t.Fatalf("paid donation: %+v", d)
	}

	// A declined payment lands on /error and counts nothing.
	declined, err := createDonation(ctx, n.HTTP, 4000, "")
	if err != nil {
		t.Fatal(err)
	}
	loc, err = pay(ctx, declined.CheckoutURL, "failed")
	if err != nil {
		t.Fatal(err)
	}
	if want := "/error?donation=" + declined.ID; !strings.HasSuffix(loc, want) {
		t.Fatalf("after declining: Location %q, want …%s", loc, want)
	}
	if got := getTotal(t, n.HTTP); got != after {
		t.Fatalf("total after decline: %+v, want %+v", got, after)
	}
	if d := getDonation(t, n.HTTP, declined.ID); d.Status != "failed" {
		t.Fatalf("declined donation: %+v", d)
	}

	// The home page shows the new total once re-rendered (at most once a second).
	var shown struct {
		RaisedDisplay string `json:"raised_display"`
	}
	getJSON(t, n.HTTP+"/api/v1/total", &shown)
	want := shown.RaisedDisplay
	if !strings.Contains(want, "25") {
		t.Fatalf("raised_display %q does not show 25", want)
	}
	eventually(t, 5*time.Second, func() error {
		resp, err := http.Get(n.HTTP + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), want) {
			return fmt.Errorf("home page does not show %s yet", want)
		}
		return nil
	})

	// kill -9 and restart on the same data dir: same total, same states.
	n.kill()
	n2 := newProc(t, "solo", data)
	n2.start()
	waitReady(t, n2.HTTP, 30*time.Second)
	if got := getTotal(t, n2.HTTP); got != after {
		t.Fatalf("total after restart: %+v, want %+v", got, after)
	}
	if d := getDonation(t, n2.HTTP, paid.ID); d.Status != "succeeded" {
		t.Fatalf("paid donation after restart: %+v", d)
	}
	if d := getDonation(t, n2.HTTP, declined.ID); d.Status != "failed" {
		t.Fatalf("declined donation after restart: %+v", d)
	}

	// A clean stop on SIGTERM exits 0.
	n2.stop()
}
