package web

import (
	"math"
	"net/netip"
	"sync"
	"time"
)

// limiter is a token bucket per client address (IPv6 per /64, so that a
// client cannot rotate through its own subnet). State is in memory and per
// node; see RateLimit.
type limiter struct {
	mu        sync.Mutex
	perSec    float64
	burst     float64
	buckets   map[netip.Addr]bucket
	lastSweep time.Time
	now       func() time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

const (
	sweepEvery = time.Minute
	maxBuckets = 1 << 20 // ~100 MB worst case before the map is dropped
)

func newLimiter(rl RateLimit, now func() time.Time) *limiter {
	burst := rl.Burst
	if burst == 0 {
		burst = max(rl.PerMinute/2, 1)
	}
	return &limiter{
		perSec:    float64(rl.PerMinute) / 60,
		burst:     float64(burst),
		buckets:   map[netip.Addr]bucket{},
		lastSweep: now(),
		now:       now,
	}
}

// limitKey groups IPv6 clients by /64.
func limitKey(a netip.Addr) netip.Addr {
	if a.Is6() && !a.Is4In6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a.Unmap()
}

// allow takes a token for a. When there is none it returns false and how
// long until there will be one.
func (l *limiter) allow(a netip.Addr) (bool, time.Duration) {
	key := limitKey(a)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, ok := l.buckets[key]
	if !ok {
		b = bucket{tokens: l.burst, last: now}
	} else if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+el*l.perSec)
		b.last = now
	}
	if b.tokens < 1 {
		l.buckets[key] = b
		wait := time.Duration((1 - b.tokens) / l.perSec * float64(time.Second))
		return false, wait
	}
	b.tokens--
	l.buckets[key] = b
	return true, 0
}

// sweep drops buckets that have refilled completely: they hold no
// information. Called with mu held.
func (l *limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < sweepEvery && len(l.buckets) < maxBuckets {
		return
	}
	l.lastSweep = now
	full := time.Duration((l.burst / l.perSec) * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= maxBuckets {
		clear(l.buckets) // under a flood of addresses, forget rather than grow without bound
	}
}

func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
