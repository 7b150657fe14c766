package web

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches /metrics over HTTP and parses the text format.
func scrapeMetrics(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// sample returns the metric of family name whose labels include want.
func metricSample(fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

func counterValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	m := metricSample(fams, name, labels)
	if m == nil || m.Counter == nil {
		return 0
	}
	return m.Counter.GetValue()
}

func TestMetricsMiddleware(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("registering the metrics twice on one registry succeeded")
	}
	ws := newOpsServer(t, func(c *Config) { c.RateLimit = RateLimit{PerMinute: 1, Burst: 1} })
	e := ws.Echo()
	e.Pre(m.Middleware())
	e.GET("/fails", func(c echo.Context) error { return errors.New("boom") })
	e.GET("/teapot", func(c echo.Context) error { return c.NoContent(http.StatusTeapot) })
	e.GET("/metrics", echo.WrapHandler(MetricsHandler(reg)))
	srv := httptest.NewServer(ws.Handler())
	defer srv.Close()

	call := func(method, path, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const donationRoute = "/api/v1/donations/:id"
	before := scrapeMetrics(t, srv.URL+"/metrics")
	if v := counterValue(before, "surge_http_requests_total", map[string]string{"route": donationRoute}); v != 0 {
		t.Fatalf("counter before any request = %v", v)
	}
	steps := []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/api/v1/donations/0123456789abcdefghijklmnop", "", 404},
		{"GET", "/api/v1/donations/zz0123456789abcdefghijklmn", "", 404},
		{"GET", "/api/v1/donations/" + strings.Repeat("x", 300), "", 400},
		{"GET", "/api/v1/total", "", 200},
		{"POST", "/api/v1/donations", `{"amount_minor":2500,"currency":"EUR","name":"Ada","email":"ada@example.org"}`, 201},
		{"POST", "/api/v1/donations", `{"amount_minor":2500,"currency":"EUR","name":"Ada","email":"ada@example.org"}`, 429},
		{"GET", "/nowhere/at/all", "", 404},
		{"DELETE", "/api/v1/total", "", 405},
		{"BREW", "/api/v1/total", "", 405},
		{"GET", "/fails", "", 500},
		{"GET", "/teapot", "", 418},
	}
	for _, st := range steps {
		if got := call(st.method, st.path, st.body); got != st.want {
			t.Fatalf("%s %s = %d, want %d", st.method, st.path, got, st.want)
		}
	}

	after := scrapeMetrics(t, srv.URL+"/metrics")
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"surge_http_requests_total", map[string]string{"route": donationRoute, "method": "GET", "code": "404"}, 2},
		{"surge_http_requests_total", map[string]string{"route": donationRoute, "method": "GET", "code": "400"}, 1},
		{"surge_http_requests_total", map[string]string{"route": "/api/v1/total", "method": "GET", "code": "200"}, 1},
		{"surge_http_requests_total", map[string]string{"route": "/api/v1/donations", "method": "POST", "code": "201"}, 1},
		{"surge_http_requests_total", map[string]string{"route": "/api/v1/donations", "method": "POST", "code": "429"}, 1},
		{"surge_http_requests_total", map[string]string{"route": "unmatched", "method": "GET", "code": "404"}, 1},
		{"surge_http_requests_total", map[string]string{"route": "/api/v1/total", "method": "DELETE", "code": "405"}, 1},
		{"surge_http_requests_total", map[string]string{"route": "/api/v1/total", "method": "OTHER", "code": "405"}, 1},
		{"surge_http_requests_total", map[string]string{"route": "/fails", "method": "GET", "code": "500"}, 1},
		{"surge_http_rejected_total", map[string]string{"reason": "not_found"}, 3},
		{"surge_http_rejected_total", map[string]string{"reason": "invalid_id"}, 1},
		{"surge_http_rejected_total", map[string]string{"reason": "rate_limited"}, 1},
		{"surge_http_rejected_total", map[string]string{"reason": "method_not_allowed"}, 2},
		{"surge_http_rejected_total", map[string]string{"reason": "status_418"}, 1},
		{"surge_http_rate_limited_total", nil, 1},
	}
	for _, c := range checks {
		if got := counterValue(after, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	h := metricSample(after, "surge_http_request_duration_seconds", map[string]string{"route": donationRoute})
	if h == nil || h.Histogram.GetSampleCount() != 3 {
		t.Fatalf("duration histogram for the route: %v", h)
	}
	if metricSample(after, "surge_http_requests_in_flight", nil) == nil {
		t.Fatal("no in-flight gauge")
	}
	// Raw URLs never become labels.
	for _, f := range after {
		for _, mm := range f.Metric {
			for _, l := range mm.Label {
				if strings.Contains(l.GetValue(), "0123456789") || strings.Contains(l.GetValue(), "nowhere") {
					t.Fatalf("raw URL in label %s=%q of %s", l.GetName(), l.GetValue(), f.GetName())
				}
			}
		}
	}
}

func TestAdminErrorsAreCountedByCode(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeCluster()
	ws := newOpsServer(t, nil)
	e := ws.Echo()
	e.Pre(m.Middleware())
	cfg := DefaultAdminConfig()
	cfg.Token = testToken
	if err := RegisterAdmin(e, cfg, f); err != nil {
		t.Fatal(err)
	}
	e.GET("/metrics", echo.WrapHandler(MetricsHandler(reg)))
	srv := httptest.NewServer(ws.Handler())
	defer srv.Close()
	adminDo(t, "GET", srv.URL+PathStatus, "", "", nil)
	adminDo(t, "GET", srv.URL+PathStatus, "bad-token-bad-token", "", nil)
	adminDo(t, "POST", srv.URL+PathRemove, testToken, "application/json", strings.NewReader(`{"id":"ghost"}`))
	fams := scrapeMetrics(t, srv.URL+"/metrics")
	if v := counterValue(fams, "surge_http_rejected_total", map[string]string{"reason": "unauthorized"}); v != 2 {
		t.Fatalf("unauthorized rejections = %v, want 2", v)
	}
	if v := counterValue(fams, "surge_http_rejected_total", map[string]string{"reason": "not_found"}); v != 1 {
		t.Fatalf("not_found rejections = %v, want 1", v)
	}
	if v := counterValue(fams, "surge_http_requests_total", map[string]string{"route": "/admin/v1/status", "code": "401"}); v != 2 {
		t.Fatalf("401s on the status route = %v", v)
	}
}
