package web

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/surgefund/surge/donation/memledger"
)

// BenchmarkLoopback is one keep-alive request and its answer over a real
// loopback connection, client and server in this process: the hot path
// against net/http and echo (the hot path off). The client costs the same
// in both; the difference is the server's.
func BenchmarkLoopback(b *testing.B) {
	for _, c := range []struct{ name, path, ae string }{
		{"home-gzip", "/", "gzip"},
		{"total", "/api/v1/total", ""},
	} {
		for _, hot := range []bool{true, false} {
			name := c.name + "/nethttp"
			if hot {
				name = c.name + "/hot"
			}
			b.Run(name, func(b *testing.B) {
				led := memledger.New()
				_, addr := benchServer(b, led, !hot)
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				raw := []byte("GET " + c.path + " HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\n")
				if c.ae != "" {
					raw = append(raw, "Accept-Encoding: "+c.ae+"\r\n"...)
				}
				raw = append(raw, "\r\n"...)
				br := bufio.NewReaderSize(conn, 64<<10)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := conn.Write(raw); err != nil {
						b.Fatal(err)
					}
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != 200 {
						b.Fatal(resp.StatusCode, err)
					}
				}
			})
		}
	}
}

// benchServer serves a test server on loopback until the benchmark ends.
func benchServer(b *testing.B, led *memledger.Ledger, off bool) (*Server, string) {
	b.Helper()
	s, _ := newTestServer(b, func(c *Config) { c.DisableHotPath = off })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	b.Cleanup(func() {
		_ = s.Close()
		<-done
	})
	return s, ln.Addr().String()
}
