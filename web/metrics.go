package web

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the HTTP metrics of one node, registered on the registry
// given to NewMetrics (never the global default registry).
type Metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	rejected    *prometheus.CounterVec
	rateLimited prometheus.Counter
	inFlight    prometheus.Gauge

	// series caches the children of requests and duration per label set,
	// so that a request costs one sync.Map read instead of two
	// WithLabelValues (label validation, hashing, a lock and the status
	// formatted as a string). The label sets are bounded (see Middleware),
	// so the cache is too.
	series sync.Map // seriesKey -> *seriesObs

	// epoch is a monotonic clock reading taken once: time.Since(epoch)
	// reads only the monotonic clock, where time.Now reads the wall clock
	// too, which the request timing does not need.
	epoch time.Time
}

type seriesKey struct {
	route, method string
	code          int
}

type seriesObs struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// observers returns the cached children for one label set, creating them
// on first use.
func (m *Metrics) observers(route, method string, code int) *seriesObs {
	k := seriesKey{route, method, code}
	if v, ok := m.series.Load(k); ok {
		return v.(*seriesObs)
	}
	o := &seriesObs{
		requests: m.requests.WithLabelValues(route, method, strconv.Itoa(code)),
		duration: m.duration.WithLabelValues(route),
	}
	v, _ := m.series.LoadOrStore(k, o)
	return v.(*seriesObs)
}

// NewMetrics creates the HTTP metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		epoch: time.Now(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_http_requests_total",
			Help: "HTTP requests answered, by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "surge_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route template.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "surge_http_rejected_total",
			Help: "Requests answered with a 4xx, by error code.",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "surge_http_rate_limited_total",
			Help: "Requests refused by the rate limiter (429).",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "surge_http_requests_in_flight",
			Help: "HTTP requests being answered now.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.rejected, m.rateLimited, m.inFlight} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Middleware records every request. Install it outermost (e.Pre) so that
// it sees the final status of every answer, including echo's own 404/405
// and recovered panics: it hands a handler's error to echo's HTTP error
// handler itself (as echo's logger middleware does) and returns nil.
//
// The route label is echo's route template (c.Path(), e.g.
// "/api/v1/donations/:id"), never the raw URL, so the label set stays
// bounded; requests that match no route are "unmatched".
func (m *Metrics) Middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Since(m.epoch)
			m.inFlight.Inc()
			defer m.inFlight.Dec()
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			status := c.Response().Status
			o := m.observers(route, methodLabel(c.Request().Method), status)
			o.requests.Inc()
			o.duration.Observe((time.Since(m.epoch) - start).Seconds())
			if status >= 400 && status < 500 {
				m.rejected.WithLabelValues(rejectReason(c, err, status)).Inc()
				if status == http.StatusTooManyRequests {
					m.rateLimited.Inc()
				}
			}
			return nil
		}
	}
}

// methodLabel keeps the method label bounded.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// rejectReason is the error code the server's error handler answers
// with (asError, the same mapping that writes the body), else one derived
// from the status. Only snake_case codes of up to 48 bytes become labels;
// anything else is "other".
func rejectReason(c echo.Context, err error, status int) string {
	var code string
	switch {
	case err != nil:
		code = asError(err, c.Request()).Code
	case codeForStatus(status) != CodeInternal:
		code = codeForStatus(status)
	default:
		code = "status_" + strconv.Itoa(status)
	}
	if !validCode(code) {
		return "other"
	}
	return code
}

func validCode(s string) bool {
	if len(s) > 48 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; (b < 'a' || b > 'z') && (b < '0' || b > '9') && b != '_' {
			return false
		}
	}
	return true
}

// MetricsHandler serves the registry's metrics in the Prometheus text
// format (GET /metrics).
func MetricsHandler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}
