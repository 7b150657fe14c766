package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/surgefund/surge/payment"
)

// randomKey returns a fresh random identifier: idempotency keys, event ids.
func randomKey(prefix string) string {
	var b [12]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// created is the part of the created donation the confirmation needs.
type created struct {
	ID          string `json:"id"`
	AmountMinor int64  `json:"amount_minor"`
	Currency    string `json:"currency"`
}

// createDonation is POST /api/v1/donations; it wants 201.
func createDonation(ctx context.Context, c *http.Client, base string, amount int64) (created, error) {
	var d created
	body := randomDonor().createBody(amount, "EUR")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/donations", bytes.NewReader(body))
	if err != nil {
		return d, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", randomKey("bench-"))
	resp, err := c.Do(req)
	if err != nil {
		return d, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	if resp.StatusCode != http.StatusCreated {
		return d, fmt.Errorf("create: %s %s", resp.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return d, fmt.Errorf("create: %w", err)
	}
	return d, nil
}

// notification is the dev gateway's notify body (payment/verify.go).
type notification struct {
	ID          string `json:"id"`
	Type        string `json:"type"`
	DonationID  string `json:"donation_id"`
	Amount      money  `json:"amount"`
	ProviderRef string `json:"provider_ref"`
	Created     int64  `json:"created"`
}

type money struct {
	Minor    int64  `json:"minor"`
	Currency string `json:"currency"`
}

// confirmDonation posts a signed payment.succeeded notification for d to
// base, as the dev gateway would; it wants 200, which the node sends only
// after the event committed.
func confirmDonation(ctx context.Context, c *http.Client, base string, d created) error {
	now := time.Now()
	body, err := json.Marshal(notification{
		ID:          randomKey("evt_"),
		Type:        "payment.succeeded",
		DonationID:  d.ID,
		Amount:      money{Minor: d.AmountMinor, Currency: d.Currency},
		ProviderRef: randomKey("dev_"),
		Created:     now.Unix(),
	})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/payments/dev/notify", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(payment.SignatureHeader, payment.Sign([]byte(devSecret), now, body))
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("notify: %s %s", resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// total is the part of GET /api/v1/total the harness compares.
type total struct {
	RaisedMinor int64 `json:"raised_minor"`
	Donations   int64 `json:"donations"`
}

func fetchTotal(ctx context.Context, c *http.Client, base string) (total, error) {
	var t total
	body, err := getOK(ctx, c, base+"/api/v1/total")
	if err != nil {
		return t, err
	}
	defer body.Close()
	if err := json.NewDecoder(body).Decode(&t); err != nil {
		return t, fmt.Errorf("total: %w", err)
	}
	return t, nil
}

// getOK GETs u and returns the body of a 200 answer for the caller to
// read and close; any other status is an error.
func getOK(ctx context.Context, c *http.Client, u string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return resp.Body, nil
}

// syncedTotal waits until base has applied what the leader committed and
// then reads its total.
func syncedTotal(ctx context.Context, c *http.Client, base string) (total, error) {
	if err := waitReady(ctx, base, 30*time.Second, true); err != nil {
		return total{}, err
	}
	return fetchTotal(ctx, c, base)
}

func itoa(n int) string { return strconv.Itoa(n) }

// getPage GETs u with gzip accepted (as browsers do) and reads the whole
// body; it wants 200.
func getPage(ctx context.Context, c *http.Client, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept-Encoding", "gzip, br")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s, want 200", u, resp.Status)
	}
	return nil
}
