package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// This file is the one adapter that bridges hashicorp/raft's hclog and
// memberlist's *log.Logger into the injected slog.Logger.
//
// Level mapping for raft: its Info level is lifecycle chatter ("pipelining
// replication", "updating configuration", "entering follower state"); the
// transitions that matter to an operator (leadership gained/lost, servers
// added/removed) are logged by this package itself at Info. So raft Info and
// Debug go to slog Debug, Trace is dropped, Warn and Error keep their level.

// hclogAdapter implements hclog.Logger on top of slog.
type hclogAdapter struct {
	l     *slog.Logger
	name  string
	args  []any
	limit *logLimiter
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHCLog(l *slog.Logger, name string, limit *logLimiter) *hclogAdapter {
	return &hclogAdapter{l: l.With("component", name), name: name, limit: limit}
}

// logLimiter drops repeats of the same warning about the same peer within
// an interval. While a peer is down raft logs "failed to heartbeat" and
// "failed to appendEntries" several times a second for as long as the peer
// stays in the configuration (DeadNodeTimeout, minutes); one line per
// interval with a count of what was suppressed says the same.
type logLimiter struct {
	every time.Duration
	mu    sync.Mutex
	seen  map[string]*limitEntry
}

type limitEntry struct {
	last       time.Time
	suppressed int
}

func newLogLimiter(every time.Duration) *logLimiter {
	return &logLimiter{every: every, seen: make(map[string]*limitEntry)}
}

// allow reports whether to log, and how many repeats were dropped since
// the last line.
func (l *logLimiter) allow(key string) (bool, int) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	e := l.seen[key]
	if e == nil {
		if len(l.seen) > 1024 {
			clear(l.seen)
		}
		l.seen[key] = &limitEntry{last: now}
		return true, 0
	}
	if now.Sub(e.last) < l.every {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return true, n
}

// limitKey identifies a warning by message and peer.
func limitKey(msg string, args []any) string {
	key := msg
	for i := 0; i+1 < len(args); i += 2 {
		switch args[i] {
		case "peer", "server-id", "id", "target", "from":
			key += "|" + fmt.Sprint(args[i+1])
		}
	}
	return key
}

func (h *hclogAdapter) slogLevel(level hclog.Level) (slog.Level, bool) {
	switch level {
	case hclog.Trace, hclog.NoLevel, hclog.Off:
		return 0, false
	case hclog.Debug, hclog.Info:
		return slog.LevelDebug, true
	case hclog.Warn:
		return slog.LevelWarn, true
	case hclog.Error:
		return slog.LevelError, true
	}
	return slog.LevelDebug, true
}

func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	lv, ok := h.slogLevel(level)
	if !ok || !h.l.Enabled(context.Background(), lv) {
		return
	}
	all := make([]any, 0, len(h.args)+len(args)+2)
	all = append(all, h.args...)
	all = append(all, args...)
	if lv >= slog.LevelWarn {
		ok, dropped := h.limit.allow(limitKey(msg, all))
		if !ok {
			return
		}
		if dropped > 0 {
			all = append(all, "repeats_suppressed", dropped)
		}
	}
	// hclog args are key/value pairs; slog accepts the same shape. An odd
	// trailing value becomes !BADKEY, which is acceptable for library logs.
	h.l.Log(context.Background(), lv, msg, all...)
}

func (h *hclogAdapter) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogAdapter) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogAdapter) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogAdapter) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogAdapter) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogAdapter) IsTrace() bool { return false }
func (h *hclogAdapter) IsDebug() bool { return h.l.Enabled(context.Background(), slog.LevelDebug) }
func (h *hclogAdapter) IsInfo() bool  { return h.l.Enabled(context.Background(), slog.LevelDebug) }
func (h *hclogAdapter) IsWarn() bool  { return h.l.Enabled(context.Background(), slog.LevelWarn) }
func (h *hclogAdapter) IsError() bool { return h.l.Enabled(context.Background(), slog.LevelError) }

func (h *hclogAdapter) ImpliedArgs() []any { return h.args }

func (h *hclogAdapter) With(args ...any) hclog.Logger {
	n := *h
	n.args = append(append([]any(nil), h.args...), args...)
	return &n
}

func (h *hclogAdapter) Name() string { return h.name }

func (h *hclogAdapter) Named(name string) hclog.Logger {
	n := *h
	if n.name != "" {
		n.name = n.name + "." + name
	} else {
		n.name = name
	}
	n.l = h.l.With("sub", name)
	return &n
}

func (h *hclogAdapter) ResetNamed(name string) hclog.Logger {
	n := *h
	n.name = name
	return &n
}

// SetLevel is ignored: the slog handler decides.
func (h *hclogAdapter) SetLevel(hclog.Level) {}

func (h *hclogAdapter) GetLevel() hclog.Level {
	switch {
	case h.IsDebug():
		return hclog.Debug
	case h.IsWarn():
		return hclog.Warn
	default:
		return hclog.Error
	}
}

func (h *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(nil), "", 0)
}

func (h *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return &stdLogWriter{l: h.l, limit: h.limit}
}

// stdLogWriter turns lines written by a standard *log.Logger in hashicorp's
// "[LEVEL] component: message" format into slog records.
type stdLogWriter struct {
	l     *slog.Logger
	limit *logLimiter
}

func newStdLogger(l *slog.Logger, component string, limit *logLimiter) *log.Logger {
	return log.New(&stdLogWriter{l: l.With("component", component), limit: limit}, "", 0)
}

func (w *stdLogWriter) Write(p []byte) (int, error) {
	for line := range bytes.Lines(p) {
		s := strings.TrimSpace(string(line))
		if s == "" {
			continue
		}
		lv := slog.LevelInfo
		for _, t := range []struct {
			tag string
			lv  slog.Level
		}{
			{"[TRACE]", slog.LevelDebug - 4},
			{"[DEBUG]", slog.LevelDebug},
			{"[INFO]", slog.LevelInfo},
			{"[WARN]", slog.LevelWarn},
			{"[ERR]", slog.LevelError},
			{"[ERROR]", slog.LevelError},
		} {
			if rest, ok := strings.CutPrefix(s, t.tag); ok {
				lv, s = t.lv, strings.TrimSpace(rest)
				break
			}
		}
		s = strings.TrimPrefix(s, "memberlist: ")
		if !w.l.Enabled(context.Background(), lv) {
			continue
		}
		if lv >= slog.LevelWarn {
			ok, dropped := w.limit.allow(s)
			if !ok {
				continue
			}
			if dropped > 0 {
				w.l.Log(context.Background(), lv, s, "repeats_suppressed", dropped)
				continue
			}
		}
		w.l.Log(context.Background(), lv, s)
	}
	return len(p), nil
}
