package payment

import (
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/surgefund/surge/donation"
)

// FuzzVerifyNotification feeds arbitrary headers and bodies, half of them
// correctly signed so that the JSON decoder is reached too. It must never
// panic; it returns one of the three sentinels or events that make a valid
// ledger command.
func FuzzVerifyNotification(f *testing.F) {
	now := time.Unix(1_760_000_000, 0)
	good := notificationBody(f, nil)
	f.Add("", good, true, int64(0))
	f.Add(Sign(testSecret, now, good), good, false, int64(0))
	f.Add("t=1760000000,v1=00", good, false, int64(0))
	f.Add("t=,v1=,v1=,=,,", []byte("{}"), false, int64(0))
	f.Add("", []byte(`{"id":"evt_1","type":"payment.processing","donation_id":"d","amount":{"minor":1,"currency":"JPY"},"provider_ref":"dev_1","created":1}`), true, int64(-301))
	f.Add("", []byte(`{"id":"evt_1","type":"payment.failed","donation_id":"d","amount":{"minor":1e3,"currency":"eur"},"provider_ref":"x","created":1,"created":2}`), true, int64(0))
	f.Add("", []byte("\xff\xfe"), true, int64(0))
	f.Add("", []byte(`{"amount":null}`), true, int64(299))

	d, err := NewDev(testConfig("http://gw.test"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, header string, body []byte, sign bool, skew int64) {
		h := http.Header{}
		if sign {
			h.Set(SignatureHeader, Sign(testSecret, now.Add(time.Duration(skew%100_000)*time.Second), body))
		} else if header != "" {
			h.Set(SignatureHeader, header)
		}
		evs, err := d.VerifyNotification(h, body, now)
		if err != nil {
			if !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrStale) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			if evs != nil {
				t.Fatal("events with an error")
			}
			return
		}
		if len(evs) != 1 {
			t.Fatalf("%d events", len(evs))
		}
		ev := evs[0]
		cmd := donation.Command{Kind: donation.KindPayment, Payment: &donation.Payment{
			Provider: DevName, EventID: ev.EventID, DonationID: ev.DonationID, Outcome: ev.Outcome,
			Amount: ev.Amount, ProviderRef: ev.ProviderRef, At: ev.At.UnixNano(),
		}}
		if err := cmd.Validate(); err != nil {
			t.Fatalf("verified event makes an invalid command: %v (%+v)", err, ev)
		}
	})
}

// FuzzCheckoutToken sends arbitrary tokens and forms to the hosted page:
// never a panic, never a 5xx but a busy 503, and nothing sent for a token it did not issue.
func FuzzCheckoutToken(f *testing.F) {
	d, err := NewDev(testConfig("http://gw.test"))
	if err != nil {
		f.Fatal(err)
	}
	co, err := d.Checkout(f.Context(), CheckoutRequest{DonationID: "d1", Amount: eur(1), ReturnURL: "http://gw.test/r", NotifyURL: "http://127.0.0.1:1/n"})
	if err != nil {
		f.Fatal(err)
	}
	u, _ := url.Parse(co.URL)
	f.Add(u.Path[len(DevPrefix+"checkout/"):], "succeeded")
	f.Add("eyJ2IjoxfQ.AAAA", "failed")
	f.Add("%zz", "")
	f.Fuzz(func(t *testing.T, token, outcome string) {
		target := DevPrefix + "checkout/" + url.PathEscape(token)
		for _, w := range []int{
			serve(d, http.MethodGet, target, nil).Code,
			serve(d, http.MethodPost, target, url.Values{"outcome": {outcome}}).Code,
		} {
			// 503 is the honest answer when the retry queue is full (the
			// workers are not started here); only a token the gateway
			// issued can get that far.
			if w == http.StatusServiceUnavailable {
				if _, err := decodeToken(testSecret, token, time.Now()); err != nil {
					t.Fatalf("503 for a token the gateway did not issue: %q", token)
				}
				continue
			}
			if w >= 500 {
				t.Fatalf("status %d for token %q", w, token)
			}
		}
	})
}
