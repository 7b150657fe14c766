// Package memledger is an in-memory ledger: donation.Decide applied to maps,
// with the effects written exactly as the storage package writes them.
//
// It is the stand-in for the replicated store in tests of packages that
// consume the ledger (web, payment), in the way hashicorp/raft ships
// InmemStore. It is safe for concurrent use; commands are applied one at a
// time, as a Raft log applies them.
package memledger

import (
	"context"
	"sync"

	"github.com/surgefund/surge/donation"
)

// Ledger holds donations, unique keys and totals in memory.
type Ledger struct {
	mu        sync.RWMutex
	donations map[string]donation.Donation
	keys      map[string]string
	totals    map[donation.Currency]donation.Totals
	applied   int
}

// New returns an empty Ledger.
func New() *Ledger {
	return &Ledger{
		donations: map[string]donation.Donation{},
		keys:      map[string]string{},
		totals:    map[donation.Currency]donation.Totals{},
	}
}

type state struct{ l *Ledger }

func (s state) Donation(id string) (donation.Donation, bool, error) {
	d, ok := s.l.donations[id]
	return d, ok, nil
}

func (s state) Key(key string) (string, bool, error) {
	id, ok := s.l.keys[key]
	return id, ok, nil
}

// Propose validates cmd as the envelope decoder would, decides it and
// applies its effects. It never fails for rule violations: those are in the
// Result's Code.
func (l *Ledger) Propose(ctx context.Context, cmd donation.Command) (donation.Result, error) {
	if err := ctx.Err(); err != nil {
		return donation.Result{}, err
	}
	if err := cmd.Validate(); err != nil {
		return donation.Result{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	res, eff, err := donation.Decide(state{l}, cmd)
	if err != nil {
		return donation.Result{}, err
	}
	l.applied++
	if eff.Put != nil {
		l.donations[eff.Put.ID] = *eff.Put
	}
	for _, k := range eff.Keys {
		l.keys[k] = eff.KeyID
	}
	if eff.Delta.Currency != "" {
		t := l.totals[eff.Delta.Currency]
		t.Currency = eff.Delta.Currency
		t.RaisedMinor += eff.Delta.Raised
		t.Donations += eff.Delta.Donations
		l.totals[eff.Delta.Currency] = t
	}
	return res, nil
}

// Totals returns the public total of currency c.
func (l *Ledger) Totals(c donation.Currency) donation.Totals {
	l.mu.RLock()
	defer l.mu.RUnlock()
	t := l.totals[c]
	t.Currency = c
	return t
}

// Donation returns the donation with id.
func (l *Ledger) Donation(id string) (donation.Donation, bool, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	d, ok := l.donations[id]
	return d, ok, nil
}

// Applied is the number of commands applied so far.
func (l *Ledger) Applied() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.applied
}
