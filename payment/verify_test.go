package payment

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/surgefund/surge/donation"
)

func TestSignMatchesSchemeComputedIndependently(t *testing.T) {
	at := time.Unix(1_760_000_123, 999)
	body := []byte(`{"a":1}`)
	m := hmac.New(sha256.New, testSecret)
	m.Write([]byte("1760000123." + string(body)))
	want := "t=1760000123,v1=" + hex.EncodeToString(m.Sum(nil))
	if got := Sign(testSecret, at, body); got != want {
		t.Fatalf("Sign = %q, want %q", got, want)
	}
}

func TestVerifyNotification(t *testing.T) {
	d, err := NewDev(testConfig("http://gw.test"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_760_000_000, 0)
	good := notificationBody(t, nil)
	sig := func(b []byte, at time.Time) string { return Sign(testSecret, at, b) }
	v1 := func(h string) string { _, v, _ := strings.Cut(h, ",v1="); return v }
	ts := strconv.FormatInt(now.Unix(), 10)
	forged := strings.Repeat("ab", 32)
	with := func(f func(map[string]any)) []byte { return notificationBody(t, f) }

	cases := []struct {
		name    string
		headers []string // Surge-Signature values; nil means no header
		body    []byte
		now     time.Time
		want    error
		outcome donation.Outcome
	}{
		{"valid succeeded", []string{sig(good, now)}, good, now, nil, donation.OutcomeSucceeded},
		{"valid failed", []string{sig(with(func(m map[string]any) { m["type"] = "payment.failed" }), now)},
			with(func(m map[string]any) { m["type"] = "payment.failed" }), now, nil, donation.OutcomeFailed},
		{"valid processing", []string{sig(with(func(m map[string]any) { m["type"] = "payment.processing" }), now)},
			with(func(m map[string]any) { m["type"] = "payment.processing" }), now, nil, donation.OutcomeProcessing},
		{"rotation: old key and new key", []string{"t=" + ts + ",v1=" + forged + ",v1=" + v1(sig(good, now))}, good, now, nil, donation.OutcomeSucceeded},
		{"unknown scheme ignored, spaces tolerated", []string{"t=" + ts + ", v0=zz, v1=" + v1(sig(good, now))}, good, now, nil, donation.OutcomeSucceeded},
		{"window edge: exactly 5 min old", []string{sig(good, now.Add(-5*time.Minute))}, good, now, nil, donation.OutcomeSucceeded},
		{"window edge: exactly 5 min ahead", []string{sig(good, now.Add(5*time.Minute))}, good, now, nil, donation.OutcomeSucceeded},

		{"missing header", nil, good, now, ErrBadSignature, ""},
		{"empty header", []string{""}, good, now, ErrBadSignature, ""},
		{"garbage header", []string{"hello world"}, good, now, ErrBadSignature, ""},
		{"two headers", []string{sig(good, now), sig(good, now)}, good, now, ErrBadSignature, ""},
		{"no timestamp", []string{"v1=" + v1(sig(good, now))}, good, now, ErrBadSignature, ""},
		{"timestamp not a number", []string{"t=soon,v1=" + v1(sig(good, now))}, good, now, ErrBadSignature, ""},
		{"negative timestamp", []string{"t=-1,v1=" + forged}, good, now, ErrBadSignature, ""},
		{"timestamp overflows", []string{"t=99999999999999999999,v1=" + forged}, good, now, ErrBadSignature, ""},
		{"two timestamps", []string{"t=" + ts + ",t=" + ts + ",v1=" + v1(sig(good, now))}, good, now, ErrBadSignature, ""},
		{"no v1", []string{"t=" + ts}, good, now, ErrBadSignature, ""},
		{"v1 not hex", []string{"t=" + ts + ",v1=xyz"}, good, now, ErrBadSignature, ""},
		{"v1 too short", []string{"t=" + ts + ",v1=abcd"}, good, now, ErrBadSignature, ""},
		{"too many v1", []string{"t=" + ts + strings.Repeat(",v1="+forged, 9)}, good, now, ErrBadSignature, ""},
		{"header too long", []string{"t=" + ts + ",v1=" + v1(sig(good, now)) + ",x=" + strings.Repeat("a", 1100)}, good, now, ErrBadSignature, ""},
		{"forged signature", []string{"t=" + ts + ",v1=" + forged}, good, now, ErrBadSignature, ""},
		{"wrong secret", []string{Sign([]byte("another-secret-of-16+bytes"), now, good)}, good, now, ErrBadSignature, ""},
		{"tampered body", []string{sig(good, now)}, with(func(m map[string]any) { m["amount"] = map[string]any{"minor": 250000, "currency": "EUR"} }), now, ErrBadSignature, ""},
		{"timestamp moved", []string{"t=" + strconv.FormatInt(now.Unix()+1, 10) + ",v1=" + v1(sig(good, now))}, good, now, ErrBadSignature, ""},
		{"stale and forged is a bad signature", []string{"t=1,v1=" + forged}, good, now, ErrBadSignature, ""},

		{"stale: 6 min old", []string{sig(good, now.Add(-6*time.Minute))}, good, now, ErrStale, ""},
		{"future: 6 min ahead", []string{sig(good, now.Add(6*time.Minute))}, good, now, ErrStale, ""},
		{"replay a day later", []string{sig(good, now.Add(-24*time.Hour))}, good, now, ErrStale, ""},
	}
	malformed := []struct {
		name string
		body []byte
	}{
		{"not json", []byte("payment succeeded")},
		{"empty body", []byte{}},
		{"unknown type", with(func(m map[string]any) { m["type"] = "payment.refunded" })},
		{"unknown field", with(func(m map[string]any) { m["livemode"] = true })},
		{"missing donation_id", with(func(m map[string]any) { delete(m, "donation_id") })},
		{"missing id", with(func(m map[string]any) { delete(m, "id") })},
		{"missing provider_ref", with(func(m map[string]any) { delete(m, "provider_ref") })},
		{"missing created", with(func(m map[string]any) { delete(m, "created") })},
		{"created out of range", with(func(m map[string]any) { m["created"] = int64(1) << 60 })},
		{"missing amount", with(func(m map[string]any) { delete(m, "amount") })},
		{"zero amount", with(func(m map[string]any) { m["amount"] = map[string]any{"minor": 0, "currency": "EUR"} })},
		{"unknown currency", with(func(m map[string]any) { m["amount"] = map[string]any{"minor": 1, "currency": "XXX"} })},
		{"amount as float", with(func(m map[string]any) { m["amount"] = map[string]any{"minor": 25.5, "currency": "EUR"} })},
		{"donation id with slash", with(func(m map[string]any) { m["donation_id"] = "../admin" })},
		{"donation id too long", with(func(m map[string]any) { m["donation_id"] = strings.Repeat("a", 65) })},
		{"trailing data", append(append([]byte(nil), good...), []byte(` {}`)...)},
		{"array", []byte(`[` + string(good) + `]`)},
		{"invalid utf-8", append(append([]byte(nil), good[:len(good)-1]...), []byte(`,"x":"\xff"}`)...)},
	}
	for _, m := range malformed {
		cases = append(cases, struct {
			name    string
			headers []string
			body    []byte
			now     time.Time
			want    error
			outcome donation.Outcome
		}{"malformed: " + m.name, []string{sig(m.body, now)}, m.body, now, ErrMalformed, ""})
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.headers {
				h.Add(SignatureHeader, v)
			}
			evs, err := d.VerifyNotification(h, tc.body, tc.now)
			if !isSentinel(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			for _, s := range []error{ErrBadSignature, ErrStale, ErrMalformed} {
				if err != nil && s != tc.want && errors.Is(err, s) {
					t.Fatalf("err %v also matches %v", err, s)
				}
			}
			if tc.want != nil {
				if evs != nil {
					t.Fatalf("events %v returned with error", evs)
				}
				return
			}
			if len(evs) != 1 {
				t.Fatalf("got %d events, want 1", len(evs))
			}
			ev := evs[0]
			if ev.Outcome != tc.outcome || ev.DonationID != "don-1" || ev.EventID != "evt_0123456789abcdef01234567" ||
				ev.ProviderRef != "dev_0123456789abcdef" || ev.Amount == nil || *ev.Amount != eur(2500) ||
				!ev.At.Equal(time.Unix(1_760_000_000, 0)) {
				t.Fatalf("event = %+v", ev)
			}
			// Whatever verifies must make a valid ledger command.
			cmd := donation.Command{Kind: donation.KindPayment, Payment: &donation.Payment{
				Provider: DevName, EventID: ev.EventID, DonationID: ev.DonationID, Outcome: ev.Outcome,
				Amount: ev.Amount, ProviderRef: ev.ProviderRef, At: ev.At.UnixNano(),
			}}
			if err := cmd.Validate(); err != nil {
				t.Fatalf("event does not make a valid command: %v", err)
			}
		})
	}
}

func TestVerifyHonoursWindow(t *testing.T) {
	cfg := testConfig("http://gw.test")
	cfg.Window = 30 * time.Second
	d, err := NewDev(cfg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_760_000_000, 0)
	body := notificationBody(t, nil)
	for _, tc := range []struct {
		skew time.Duration
		want error
	}{{0, nil}, {30 * time.Second, nil}, {-30 * time.Second, nil}, {31 * time.Second, ErrStale}, {-31 * time.Second, ErrStale}} {
		h := http.Header{SignatureHeader: {Sign(testSecret, now.Add(tc.skew), body)}}
		if _, err := d.VerifyNotification(h, body, now); !isSentinel(err, tc.want) {
			t.Errorf("skew %s: err = %v, want %v", tc.skew, err, tc.want)
		}
	}
}
