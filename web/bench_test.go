package web

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// reuseWriter is a ResponseWriter that keeps its header map between
// requests, to show what the handler itself allocates.
type reuseWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *reuseWriter) Header() http.Header         { return w.h }
func (w *reuseWriter) WriteHeader(code int)        { w.code = code }
func (w *reuseWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }
func (w *reuseWriter) reset()                      { clear(w.h); w.code, w.n = 0, 0 }

func benchServe(b *testing.B, h http.Handler, path, acceptEncoding string, recorder bool) {
	b.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	rw := &reuseWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		if recorder {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatalf("status %d", w.Code)
			}
			continue
		}
		rw.reset()
		h.ServeHTTP(rw, req)
		if rw.code != http.StatusOK {
			b.Fatalf("status %d", rw.code)
		}
	}
}

func BenchmarkHomePage(b *testing.B) {
	s, _ := newTestServer(b)
	h := s.Handler()
	for _, enc := range []struct{ name, ae string }{
		{"gzip", "gzip, deflate"},
		{"br", "gzip, deflate, br, zstd"},
		{"identity", ""},
	} {
		b.Run(enc.name+"/recorder", func(b *testing.B) { benchServe(b, h, "/", enc.ae, true) })
		b.Run(enc.name+"/reused-writer", func(b *testing.B) { benchServe(b, h, "/", enc.ae, false) })
	}
}

func BenchmarkTotal(b *testing.B) {
	s, _ := newTestServer(b)
	h := s.Handler()
	b.Run("recorder", func(b *testing.B) { benchServe(b, h, "/api/v1/total", "", true) })
	b.Run("reused-writer", func(b *testing.B) { benchServe(b, h, "/api/v1/total", "", false) })
}

func BenchmarkStaticAsset(b *testing.B) {
	s, _ := newTestServer(b)
	u, err := s.rd.asset("style.css")
	if err != nil {
		b.Fatal(err)
	}
	benchServe(b, s.Handler(), u, "br", false)
}

// BenchmarkRenderHome is the cost of one home page re-render (template,
// gzip -9, brotli 11), paid at most once per RenderInterval.
func BenchmarkRenderHome(b *testing.B) {
	s, led := newTestServer(b)
	tot := led.Totals("EUR")
	b.ReportAllocs()
	for b.Loop() {
		if err := s.renderHome(tot); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWithMetrics is the page and total path as the node runs it: the
// HTTP metrics middleware installed with Pre.
func BenchmarkWithMetrics(b *testing.B) {
	s, _ := newTestServer(b)
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	s.Echo().Pre(m.Middleware())
	h := s.Handler()
	b.Run("home/gzip", func(b *testing.B) { benchServe(b, h, "/", "gzip", false) })
	b.Run("total", func(b *testing.B) { benchServe(b, h, "/api/v1/total", "", false) })
}
