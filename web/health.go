package web

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

const (
	defaultSyncWait = 2 * time.Second
	maxSyncWait     = 30 * time.Second
)

// handleHealthz: the process is alive and serving.
func (s *Server) handleHealthz(c echo.Context) error {
	c.Response().Header()["Cache-Control"] = noStore
	return c.JSON(http.StatusOK, map[string]string{"status": "ok", "version": s.cfg.Version})
}

// handleReadyz: this node has a leader and is caught up. With ?sync it
// first waits (up to ?timeout=, default 2s) until it has applied what the
// leader had committed.
func (s *Server) handleReadyz(c echo.Context) error {
	r := c.Request()
	q := r.URL.Query()
	if _, ok := q["sync"]; ok {
		wait := defaultSyncWait
		if t := q.Get("timeout"); t != "" {
			d, err := time.ParseDuration(t)
			if err != nil || d <= 0 || d > maxSyncWait {
				return &Error{Code: CodeInvalidTimeout, Message: "timeout must be a duration such as 2s, at most 30s."}
			}
			wait = d
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		err := s.health.WaitSync(ctx)
		cancel()
		if err != nil {
			return &Error{Code: CodeNotReady, Message: "Not caught up with the leader: " + err.Error(), RetryAfter: 1}
		}
	}
	if err := s.health.Ready(); err != nil {
		return &Error{Code: CodeNotReady, Message: "Not ready: " + err.Error(), RetryAfter: 1}
	}
	c.Response().Header()["Cache-Control"] = noStore
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}
