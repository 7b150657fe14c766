package payment

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"
)

func BenchmarkVerifyNotification(b *testing.B) {
	d, err := NewDev(testConfig("http://gw.test"))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Unix(1_760_000_000, 0)
	body := notificationBody(b, nil)
	h := http.Header{SignatureHeader: {Sign(testSecret, now, body)}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.VerifyNotification(h, body, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckout(b *testing.B) {
	d, err := NewDev(testConfig("http://gw.test"))
	if err != nil {
		b.Fatal(err)
	}
	req := CheckoutRequest{DonationID: "0f8fad5b-d9cb-469f-a165-70867728950e", Amount: eur(2500), Description: "Test campaign",
		ReturnURL: "https://donate.example.org/payments/dev/return", NotifyURL: "https://donate.example.org/payments/dev/notify"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Checkout(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckoutPage(b *testing.B) {
	d, err := NewDev(testConfig("http://gw.test"))
	if err != nil {
		b.Fatal(err)
	}
	co, err := d.Checkout(context.Background(), CheckoutRequest{DonationID: "0f8fad5b-d9cb-469f-a165-70867728950e", Amount: eur(2500),
		ReturnURL: "https://donate.example.org/payments/dev/return", NotifyURL: "https://donate.example.org/payments/dev/notify"})
	if err != nil {
		b.Fatal(err)
	}
	u, _ := url.Parse(co.URL)
	b.ReportAllocs()
	for b.Loop() {
		if w := serve(d, http.MethodGet, u.Path, nil); w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
}
