package storage

import (
	"slices"

	"github.com/surgefund/surge/donation"
)

// recentSize is how many recently written donations the apply path keeps
// decoded. A payment usually follows its create within a second; at a few
// thousand writes a second that is well inside 4096 entries (~2 MB).
const recentSize = 4096

// recentDonations holds the committed value of donations written by recent
// transactions, so that the next command on them (the payment after the
// create) skips a Badger read and a decode. Only the apply path uses it,
// under applyMu. It is exact, not a hint: every write to d/ goes through
// applyChunk, which adds its donations only after its commit succeeded,
// and the cache is emptied when the live generation changes (Restore).
// Eviction order does not matter for correctness: a miss reads Badger.
type recentDonations struct {
	gen  *generation
	m    map[string]donation.Donation
	ring []string // ids in insertion order; ring[next] is evicted next
	next int
}

// forGeneration returns the cache, emptied if g is not the generation it
// was filled from.
func (r *recentDonations) forGeneration(g *generation) *recentDonations {
	if r.gen != g {
		*r = recentDonations{gen: g, m: make(map[string]donation.Donation, recentSize)}
	}
	return r
}

func (r *recentDonations) get(id string) (donation.Donation, bool) {
	d, ok := r.m[id]
	d.Events = slices.Clip(d.Events) // an append by the reader copies
	return d, ok
}

func (r *recentDonations) put(d donation.Donation) {
	if _, ok := r.m[d.ID]; !ok {
		if len(r.ring) < recentSize {
			r.ring = append(r.ring, d.ID)
		} else {
			delete(r.m, r.ring[r.next])
			r.ring[r.next] = d.ID
			r.next = (r.next + 1) % recentSize
		}
	}
	r.m[d.ID] = d
}
