package payment

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/surgefund/surge/donation"
)

// maxFallbacks is how many other nodes one delivery round tries after the
// NotifyURL failed. Rounds rotate through the list, so over several
// rounds every live node gets its turn.
const maxFallbacks = 3

var errQueueFull = errors.New("dev gateway delivery queue full")

// job is one notification on its way to the cluster. The body is fixed
// when the job is made; the signature is made afresh for every attempt,
// since retries may run far longer than the signature window.
type job struct {
	eventID    string
	donationID string
	typ        string
	body       []byte
	notify     string
	first      time.Time // when the job was made (real time), for GiveUpAfter
	attempt    int       // rounds done so far
	due        time.Time // when the next round may run (real time)
	then       *job      // sent once this one is settled (Reorder)
	index      int       // position in the heap
}

// copyJob returns an independent copy without the chained follower: the
// second delivery of a Duplicate pair.
func (j *job) copyJob() *job {
	c := *j
	c.then = nil
	c.index = -1
	return &c
}

func (d *Dev) newJob(c claims, o donation.Outcome, created time.Time) (*job, error) {
	n := notification{
		ID:          d.eventID(c.ID, o),
		Type:        typeOf(o),
		DonationID:  c.ID,
		Amount:      c.amount(),
		ProviderRef: d.ref(c.ID),
		Created:     created.Unix(),
	}
	b, err := json.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("encode notification: %w", err)
	}
	return &job{eventID: n.ID, donationID: n.DonationID, typ: n.Type, body: b, notify: c.Notify, first: time.Now(), index: -1}, nil
}

// send hands the notification(s) of one Pay or Decline click to delivery:
// the final event, and the processing event after it when Reorder is set.
// Without Delay the final event gets one synchronous round, bounded by
// AttemptTimeout, before send returns; failures go on to the retry queue.
func (d *Dev) send(ctx context.Context, c claims, o donation.Outcome) error {
	need := 1
	if d.cfg.Reorder {
		need = 2
	}
	if d.cfg.Duplicate {
		need *= 2
	}
	if err := d.q.reserve(need); err != nil {
		return err
	}
	now := d.now()
	final, err := d.newJob(c, o, now)
	if err != nil {
		d.q.release(need)
		return err
	}
	if d.cfg.Reorder {
		if final.then, err = d.newJob(c, donation.OutcomeProcessing, now); err != nil {
			d.q.release(need)
			return err
		}
	}
	if d.cfg.Delay > 0 {
		d.launch(final, time.Now().Add(d.cfg.Delay))
		return nil
	}
	if d.cfg.Duplicate {
		// The twin goes to a worker now and races the synchronous round.
		d.push(final.copyJob(), time.Now())
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.AttemptTimeout)
	res := d.round(rctx, final)
	cancel()
	d.settleRound(final, res)
	return nil
}

// launch queues j (and its twin when Duplicate) to run at due.
func (d *Dev) launch(j *job, due time.Time) {
	if d.cfg.Duplicate {
		d.push(j.copyJob(), due)
	}
	d.push(j, due)
}

func (d *Dev) push(j *job, due time.Time) {
	j.due = due
	if !d.q.push(j) {
		d.log.Warn("dev gateway closed, notification dropped", "event", j.eventID, "donation", j.donationID, "type", j.typ)
	}
}

// settle ends a job, delivered or given up, and starts its follower.
func (d *Dev) settle(j *job) {
	d.q.release(1)
	if j.then != nil {
		d.launch(j.then, time.Now())
	}
}

func (d *Dev) work(ctx context.Context, ready <-chan *job) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-ready:
			res := d.round(ctx, j)
			if ctx.Err() != nil && res.kind == resultRetry {
				return // closing: the job is dropped with the queue
			}
			d.settleRound(j, res)
		}
	}
}

type resultKind int

const (
	resultRetry resultKind = iota
	resultDelivered
	resultPermanent
)

type roundResult struct {
	kind       resultKind
	target     string
	status     int
	err        error
	detail     string        // start of the response body of a refusal
	retryAfter time.Duration // from a Retry-After header
}

// settleRound acts on the result of a round: done, dropped, or scheduled
// again with backoff until GiveUpAfter.
func (d *Dev) settleRound(j *job, r roundResult) {
	j.attempt++
	switch r.kind {
	case resultDelivered:
		d.stats.delivered.Add(1)
		d.log.Debug("dev notification delivered", "event", j.eventID, "donation", j.donationID, "type", j.typ,
			"attempt", j.attempt, "target", r.target)
		d.settle(j)
		return
	case resultPermanent:
		// The cluster refused the content (bad signature, unknown donation,
		// amount mismatch): retrying cannot change its answer.
		d.stats.dropped.Add(1)
		d.log.Error("dev notification refused, dropped", "event", j.eventID, "donation", j.donationID, "type", j.typ,
			"attempt", j.attempt, "target", r.target, "status", r.status, "response", r.detail)
		d.settle(j)
		return
	}
	if time.Since(j.first) >= d.cfg.GiveUpAfter {
		d.stats.dropped.Add(1)
		d.log.Error("dev notification undeliverable, giving up", "event", j.eventID, "donation", j.donationID, "type", j.typ,
			"attempts", j.attempt, "after", time.Since(j.first).Round(time.Millisecond), "status", r.status, "err", r.err)
		d.settle(j)
		return
	}
	wait := d.backoff(j.attempt)
	if ra := min(r.retryAfter, d.cfg.RetryMax); ra > wait {
		wait = ra
	}
	d.stats.retried.Add(1)
	d.log.Warn("dev notification not delivered, will retry", "event", j.eventID, "donation", j.donationID, "type", j.typ,
		"attempt", j.attempt, "target", r.target, "status", r.status, "err", r.err, "retry_in", wait)
	d.push(j, time.Now().Add(wait))
}

// backoff is exponential from RetryMin to RetryMax with "equal jitter":
// half the step fixed, half random, so retries from many donations spread
// out instead of arriving together.
func (d *Dev) backoff(attempt int) time.Duration {
	b := d.cfg.RetryMin
	for i := 1; i < attempt && b < d.cfg.RetryMax; i++ {
		b *= 2
	}
	b = min(b, d.cfg.RetryMax)
	half := b / 2
	return half + rand.N(b-half+1)
}

// round tries the NotifyURL, then up to maxFallbacks other nodes, and
// stops at the first answer that is not worth another target.
func (d *Dev) round(ctx context.Context, j *job) roundResult {
	var last roundResult
	for _, t := range d.targets(j) {
		last = d.post(ctx, t, j)
		if last.kind != resultRetry || ctx.Err() != nil {
			return last
		}
	}
	return last
}

// targets is the NotifyURL followed by the same path on other base URLs,
// rotated by the attempt number.
func (d *Dev) targets(j *job) []string {
	out := []string{j.notify}
	if d.cfg.Fallback == nil {
		return out
	}
	bases := d.cfg.Fallback()
	if len(bases) == 0 {
		return out
	}
	nu, err := url.Parse(j.notify)
	if err != nil {
		return out
	}
	seen := map[string]bool{j.notify: true}
	for i := range bases {
		if len(out) > maxFallbacks {
			break
		}
		u, ok := rebase(bases[(j.attempt+i)%len(bases)], nu)
		if ok && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}

// rebase puts the path and query of notify on another base URL.
func rebase(base string, notify *url.URL) (string, bool) {
	if checkAbsURL(base) != nil {
		return "", false
	}
	b, _ := url.Parse(base)
	u := url.URL{
		Scheme:   b.Scheme,
		Host:     b.Host,
		Path:     strings.TrimRight(b.Path, "/") + notify.Path,
		RawQuery: notify.RawQuery,
	}
	return u.String(), true
}

// post makes one signed HTTP attempt.
func (d *Dev) post(ctx context.Context, target string, j *job) roundResult {
	res := roundResult{target: target}
	actx, cancel := context.WithTimeout(ctx, d.cfg.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, target, bytes.NewReader(j.body))
	if err != nil {
		res.err = fmt.Errorf("build request: %w", err)
		return res
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "surge-dev-gateway/1")
	req.Header.Set(SignatureHeader, Sign(d.secret, d.now(), j.body))
	d.stats.attempts.Add(1)
	resp, err := d.client.Do(req)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	res.status = resp.StatusCode
	res.kind = classify(resp.StatusCode)
	switch res.kind {
	case resultPermanent:
		res.detail = strings.ToValidUTF8(string(head), "")
	case resultRetry:
		res.retryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return res
}

// classify maps a response status to what delivery does next: 2xx done;
// 408, 409, 425 and 429 say "later"; any other 4xx is a refusal of the
// content and final; 5xx and anything else are retried.
func classify(status int) resultKind {
	switch {
	case status >= 200 && status < 300:
		return resultDelivered
	case status == http.StatusRequestTimeout, status == http.StatusConflict,
		status == http.StatusTooEarly, status == http.StatusTooManyRequests:
		return resultRetry
	case status >= 400 && status < 500:
		return resultPermanent
	}
	return resultRetry
}

// retryAfter reads a Retry-After header: delay-seconds or an HTTP-date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 32); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// queue is a bounded set of jobs ordered by due time. One dispatcher hands
// due jobs to the workers; reserve bounds the jobs waiting or in flight.
type queue struct {
	mu       sync.Mutex
	h        jobHeap
	limit    int
	reserved int
	closed   bool
	wake     chan struct{}
}

func (q *queue) init(limit int) {
	q.limit = limit
	q.wake = make(chan struct{}, 1)
}

func (q *queue) reserve(n int) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	if q.reserved+n > q.limit {
		return errQueueFull
	}
	q.reserved += n
	return nil
}

func (q *queue) release(n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.reserved -= n
	}
}

func (q *queue) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.reserved
}

// push adds j; false when the queue is closed.
func (q *queue) push(j *job) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	heap.Push(&q.h, j)
	top := j.index == 0
	q.mu.Unlock()
	if top {
		q.signal()
	}
	return true
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// close drops every job and returns how many were waiting or in flight.
func (q *queue) close() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.reserved
	q.closed, q.h, q.reserved = true, nil, 0
	q.signal()
	return n
}

// dispatch sends due jobs to ready until ctx ends or the queue closes.
func (q *queue) dispatch(ctx context.Context, ready chan<- *job) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return
		}
		var next *job
		wait := time.Duration(-1)
		if len(q.h) > 0 {
			if w := time.Until(q.h[0].due); w > 0 {
				wait = w
			} else {
				next = heap.Pop(&q.h).(*job)
			}
		}
		q.mu.Unlock()
		if next != nil {
			select {
			case ready <- next:
			case <-ctx.Done():
				return
			}
			continue
		}
		if wait >= 0 {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// jobHeap orders jobs by due time (container/heap).
type jobHeap []*job

func (h jobHeap) Len() int           { return len(h) }
func (h jobHeap) Less(a, b int) bool { return h[a].due.Before(h[b].due) }
func (h jobHeap) Swap(a, b int) {
	h[a], h[b] = h[b], h[a]
	h[a].index, h[b].index = a, b
}
func (h *jobHeap) Push(x any) {
	j := x.(*job)
	j.index = len(*h)
	*h = append(*h, j)
}
func (h *jobHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	old[len(old)-1] = nil
	j.index = -1
	*h = old[:len(old)-1]
	return j
}
