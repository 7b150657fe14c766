package donation

import (
	"fmt"
	"testing"
)

var allStatuses = []Status{StatusPending, StatusSucceeded, StatusFailed, StatusRefunded}

// TestCanMoveTo lists every pair of the four states: the transitions of
// design.md §5 are allowed, everything else (staying put, going backward,
// failed <-> succeeded, skipping to refunded) is not.
func TestCanMoveTo(t *testing.T) {
	tests := []struct {
		from, to Status
		want     bool
	}{
		{StatusPending, StatusPending, false},
		{StatusPending, StatusSucceeded, true},
		{StatusPending, StatusFailed, true},
		{StatusPending, StatusRefunded, false},

		{StatusSucceeded, StatusPending, false},
		{StatusSucceeded, StatusSucceeded, false},
		{StatusSucceeded, StatusFailed, false},
		{StatusSucceeded, StatusRefunded, true},

		{StatusFailed, StatusPending, false},
		{StatusFailed, StatusSucceeded, false},
		{StatusFailed, StatusFailed, false},
		{StatusFailed, StatusRefunded, false},

		{StatusRefunded, StatusPending, false},
		{StatusRefunded, StatusSucceeded, false},
		{StatusRefunded, StatusFailed, false},
		{StatusRefunded, StatusRefunded, false},
	}
	if len(tests) != len(allStatuses)*len(allStatuses) {
		t.Fatalf("table has %d cases, want %d", len(tests), len(allStatuses)*len(allStatuses))
	}
	seen := map[[2]Status]bool{}
	for _, tt := range tests {
		seen[[2]Status{tt.from, tt.to}] = true
		t.Run(fmt.Sprintf("%s->%s", tt.from, tt.to), func(t *testing.T) {
			if got := tt.from.CanMoveTo(tt.to); got != tt.want {
				t.Fatalf("%s.CanMoveTo(%s) = %v, want %v", tt.from, tt.to, got, tt.want)
			}
		})
	}
	if len(seen) != len(tests) {
		t.Fatalf("table repeats a pair: %d distinct of %d", len(seen), len(tests))
	}
}

func TestCanMoveToUnknownStatus(t *testing.T) {
	for _, s := range allStatuses {
		if Status("").CanMoveTo(s) || Status("bogus").CanMoveTo(s) {
			t.Errorf("an unknown status may move to %s", s)
		}
		if s.CanMoveTo("") || s.CanMoveTo("bogus") {
			t.Errorf("%s may move to an unknown status", s)
		}
	}
}

func TestStatusValidAndFinal(t *testing.T) {
	tests := []struct {
		s            Status
		valid, final bool
	}{
		{StatusPending, true, false},
		{StatusSucceeded, true, true},
		{StatusFailed, true, true},
		{StatusRefunded, true, true},
		{"", false, true},
		{"Pending", false, true},
		{"processing", false, true},
	}
	for _, tt := range tests {
		if got := tt.s.Valid(); got != tt.valid {
			t.Errorf("%q.Valid() = %v, want %v", tt.s, got, tt.valid)
		}
		if got := tt.s.Final(); got != tt.final {
			t.Errorf("%q.Final() = %v, want %v", tt.s, got, tt.final)
		}
	}
}

func TestCounted(t *testing.T) {
	eur := func(minor int64) Money { return Money{minor, "EUR"} }
	tests := []struct {
		name   string
		d      Donation
		want   int64
		wantOK bool
	}{
		{"pending", Donation{Amount: eur(2500), Status: StatusPending}, 0, false},
		{"failed", Donation{Amount: eur(2500), Status: StatusFailed}, 0, false},
		{"succeeded", Donation{Amount: eur(2500), Status: StatusSucceeded}, 2500, true},
		{"partly refunded", Donation{Amount: eur(2500), RefundedMinor: 1000, Status: StatusSucceeded}, 1500, true},
		{"refunded", Donation{Amount: eur(2500), RefundedMinor: 2500, Status: StatusRefunded}, 0, false},
	}
	for _, tt := range tests {
		got, ok := tt.d.Counted()
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("%s: Counted() = %d, %v; want %d, %v", tt.name, got, ok, tt.want, tt.wantOK)
		}
	}
}
