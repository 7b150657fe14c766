package systemtest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
)

// chromium finds a Chromium binary, or skips the test saying how to get one.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("browser test: no Chromium on PATH (apt-get install chromium; .ci/run installs it)")
	return ""
}

// TestBrowserDonorJourney drives a real headless Chromium through the
// donor's journey on the real node: home page, donate form without
// typing an amount (preset), the gateway's hosted page, Pay, and the
// success page confirming the payment; then the home page shows the new
// total.
func TestBrowserDonorJourney(t *testing.T) {
	needBinaries(t)
	exe := chromium(t)
	n := newProc(t, "browser", t.TempDir())
	n.start()
	waitReady(t, n.HTTP, 30*time.Second)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox,
		chromedp.WindowSize(390, 844), // a phone
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first Run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	defer cancelT()

	if err := chromedp.Do(ctx, chromedp.Navigate(n.HTTP+"/")); err != nil {
		t.Fatal(err)
	}
	raisedBefore := text(t, ctx, `[data-raised]`)
	err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`a.btn.big[href="/donate"]`)),
		chromedp.WaitVisible(chromedp.CSS(`form.donate`)),
		chromedp.Click(chromedp.CSS(`input[name=amount][value="5000"]`)),
		chromedp.SendKeys(chromedp.CSS(`#name`), "Grace"),
		chromedp.SendKeys(chromedp.CSS(`#email`), "grace@example.org"),
	)
	if err != nil {
		t.Fatalf("donate form: %v", err)
	}
	// Run the page's submit listener once without submitting, to read the
	// idempotency key it puts into the form; the real submit keeps it.
	key, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(function () {
		var f = document.querySelector('form.donate');
		f.dispatchEvent(new Event('submit', {cancelable: true}));
		f.querySelector('button[type=submit]').disabled = false;
		return document.querySelector('[data-idem]').value;
	})()`))
	if err != nil {
		t.Fatalf("read the idempotency key: %v", err)
	}
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`form.donate button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`button[value=succeeded]`)),
		chromedp.Click(chromedp.CSS(`button[value=succeeded]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-status]`)),
		void(chromedp.Poll[bool](`document.querySelector('[data-status]').textContent.includes('confirmed')`,
			chromedp.WithPollingTimeout(20*time.Second))),
	)
	url, _ := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatalf("browser journey: %v (at %s)", err, url)
	}
	if !strings.Contains(url, "/success?donation=") {
		t.Fatalf("ended on %s, want /success?donation=…", url)
	}
	// The key the page made and the ID the server made are both version 7
	// UUIDs stamped with the current time (web.NewID, site/static/app.js).
	id := url[strings.Index(url, "donation=")+len("donation="):]
	if i := strings.IndexByte(id, '&'); i >= 0 {
		id = id[:i]
	}
	for what, v := range map[string]string{"idempotency key from the page": key, "donation id from the server": id} {
		u, err := uuid.Parse(v)
		if err != nil || u.Version() != 7 || u.Variant() != uuid.RFC4122 {
			t.Fatalf("%s %q is not a version 7 UUID (%v)", what, v, err)
		}
		sec, nsec := u.Time().UnixTime()
		if at := time.Unix(sec, nsec); time.Since(at).Abs() > 2*time.Minute {
			t.Fatalf("%s %q carries the time %s, want about now", what, v, at)
		}
	}
	status := text(t, ctx, `[data-status]`)
	if dir := os.Getenv("SURGE_SCREENSHOTS"); dir != "" {
		if shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(80)); err == nil {
			os.WriteFile(dir+"/success-phone.jpg", shot, 0o644)
		}
	}
	tot := getTotal(t, n.HTTP)
	if tot.RaisedMinor != 5000 || tot.Donations != 1 {
		t.Fatalf("total after the journey: %+v, want 5000 in 1", tot)
	}

	// The home page shows the new total (re-rendered, or updated by its script).
	err = chromedp.Do(ctx,
		chromedp.Navigate(n.HTTP+"/"),
		void(chromedp.Poll[bool](`document.querySelector('[data-raised]').textContent.includes('50')`,
			chromedp.WithPollingTimeout(15*time.Second), chromedp.WithPollingInterval(500*time.Millisecond))),
	)
	if err != nil {
		t.Fatalf("home page after donating: %v (before: %q)", err, raisedBefore)
	}
	raisedAfter := text(t, ctx, `[data-raised]`)
	t.Logf("raised on the home page: %q -> %q; success page says %q", raisedBefore, raisedAfter, status)
}

// text reads the text of the first element matching a CSS selector.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// void drops an action's value so it can run among Do's steps.
func void[T any](a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := a(ctx, tg)
		return chromedp.Void{}, err
	}
}
