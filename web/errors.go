package web

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// ErrUnavailable means the cluster cannot take a write right now (no
// leader, or the hold through an election expired). The node wraps such
// cluster errors in it; the client gets 503 with Retry-After.
var ErrUnavailable = errors.New("service temporarily unavailable")

// Error codes: the stable, snake_case half of every error body. statusFor
// maps each to its HTTP status.
const (
	CodeBadRequest            = "bad_request"
	CodeInvalidJSON           = "invalid_json"
	CodeInvalidField          = "invalid_field"
	CodeInvalidForm           = "invalid_form"
	CodeInvalidID             = "invalid_id"
	CodeInvalidIdempotencyKey = "invalid_idempotency_key"
	CodeInvalidTimeout        = "invalid_timeout"
	CodeInvalidReturn         = "invalid_return"
	CodeBadSignature          = "bad_signature"
	CodeStaleSignature        = "stale_signature"
	CodeMalformedNotification = "malformed_notification"
	CodeUnauthorized          = "unauthorized"
	CodeForbidden             = "forbidden"
	CodeCrossOrigin           = "cross_origin_request"
	CodeNotFound              = "not_found"
	CodeMethodNotAllowed      = "method_not_allowed"
	CodeConflict              = "conflict"
	CodeNotLeader             = "not_leader"
	CodeBodyTooLarge          = "body_too_large"
	CodeUnsupportedMediaType  = "unsupported_media_type"
	CodeInvalidAmount         = "invalid_amount"
	CodeUnknownCurrency       = "unknown_currency"
	CodeCurrencyNotAccepted   = "currency_not_accepted"
	CodeInvalidEmail          = "invalid_email"
	CodeInvalidName           = "invalid_name"
	CodeInvalidMessage        = "invalid_message"
	CodeIdempotencyKeyReused  = "idempotency_key_reused"
	CodeAmountMismatch        = "amount_mismatch"
	CodeRateLimited           = "rate_limited"
	CodeInternal              = "internal_error"
	CodeUnavailable           = "unavailable"
	CodeNotReady              = "not_ready"
	CodeGatewayUnavailable    = "gateway_unavailable"
)

// statusFor is the one place where error codes become HTTP status codes.
// Client mistakes are all 4xx; only the node's own trouble is 5xx.
func statusFor(code string) int {
	switch code {
	case CodeBadRequest, CodeInvalidJSON, CodeInvalidField, CodeInvalidForm, CodeInvalidID,
		CodeInvalidIdempotencyKey, CodeInvalidTimeout, CodeInvalidReturn,
		CodeBadSignature, CodeStaleSignature, CodeMalformedNotification:
		return http.StatusBadRequest
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeForbidden, CodeCrossOrigin:
		return http.StatusForbidden
	case CodeNotFound:
		return http.StatusNotFound
	case CodeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case CodeConflict, CodeNotLeader:
		return http.StatusConflict
	case CodeBodyTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeUnsupportedMediaType:
		return http.StatusUnsupportedMediaType
	case CodeInvalidAmount, CodeUnknownCurrency, CodeCurrencyNotAccepted, CodeInvalidEmail,
		CodeInvalidName, CodeInvalidMessage, CodeIdempotencyKeyReused, CodeAmountMismatch:
		return http.StatusUnprocessableEntity
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeUnavailable, CodeNotReady, CodeGatewayUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// codeForStatus turns a bare HTTP status (echo's own errors) into a code.
func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return CodeBadRequest
	case http.StatusUnauthorized:
		return CodeUnauthorized
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusMethodNotAllowed:
		return CodeMethodNotAllowed
	case http.StatusConflict:
		return CodeConflict
	case http.StatusRequestEntityTooLarge:
		return CodeBodyTooLarge
	case http.StatusUnsupportedMediaType:
		return CodeUnsupportedMediaType
	case http.StatusUnprocessableEntity:
		return CodeInvalidField
	case http.StatusTooManyRequests:
		return CodeRateLimited
	case http.StatusServiceUnavailable:
		return CodeUnavailable
	}
	return CodeInternal
}

// Error is an error with a stable code and a sentence for people. Handlers
// (also the admin API's) return it; the error handler renders it as
// {"error":{"code":...,"message":...}} with the status statusFor gives.
type Error struct {
	Code       string
	Message    string
	RetryAfter int   // seconds, sent as Retry-After with 429 and 503 (default 1)
	Err        error // internal cause: logged for 5xx, never sent
}

// NewError returns an *Error with code and message.
func NewError(code, message string) *Error { return &Error{Code: code, Message: message} }

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Status is the HTTP status of e.
func (e *Error) Status() int { return statusFor(e.Code) }

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// asError turns anything a handler returned into an *Error.
func asError(err error, r *http.Request) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg := http.StatusText(he.Code)
		if s, ok := he.Message.(string); ok && s != "" {
			msg = s
		}
		code := codeForStatus(he.Code)
		switch he.Code {
		case http.StatusNotFound:
			msg = "There is nothing at " + truncate(r.URL.Path, 100) + "."
		case http.StatusMethodNotAllowed:
			msg = "Method " + r.Method + " is not allowed here."
		}
		return &Error{Code: code, Message: msg, Err: he.Internal}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &Error{Code: CodeBodyTooLarge, Message: "The request body is larger than " + strconv.FormatInt(mbe.Limit, 10) + " bytes."}
	}
	if errors.Is(err, ErrUnavailable) {
		return &Error{Code: CodeUnavailable, Message: "The service is busy electing a new leader. Please retry in a moment.", RetryAfter: 1, Err: err}
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return &Error{Code: CodeUnavailable, Message: "The request was cancelled.", Err: err}
	}
	return &Error{Code: CodeInternal, Message: "Something went wrong on our side. Please try again.", Err: err}
}

// handleError is echo's HTTPErrorHandler: the single place that writes
// error responses.
func (s *Server) handleError(err error, c echo.Context) {
	r := c.Request()
	if c.Response().Committed {
		s.log.Debug("error after response was committed", "path", r.URL.Path, "err", err)
		return
	}
	e := asError(err, r)
	status := statusFor(e.Code)
	w := c.Response()
	h := w.Header()
	switch {
	case status >= 500 && e.Code != CodeUnavailable && e.Code != CodeNotReady:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "code", e.Code,
			"request_id", h.Get(headerRequestID), "err", e.Err)
	case status >= 500:
		s.log.Warn("request refused", "method", r.Method, "path", r.URL.Path, "code", e.Code,
			"request_id", h.Get(headerRequestID), "err", e.Err)
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		ra := e.RetryAfter
		if ra <= 0 {
			ra = 1
		}
		h.Set("Retry-After", strconv.Itoa(ra))
	}
	// The donate form answers in HTML: the form again, with the message.
	var fe *formError
	if errors.As(err, &fe) {
		s.renderFormError(w, r, status, fe.form, e.Message)
		return
	}
	if status == http.StatusNotFound && wantsHTML(r) {
		s.pages[pageNotFound].serve(w, r, http.StatusNotFound)
		return
	}
	h.Set(echo.HeaderCacheControl, "no-store")
	if r.Method == http.MethodHead {
		h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
		w.WriteHeader(status)
		return
	}
	body, _ := json.Marshal(errorBody{Error: errorDetail{Code: e.Code, Message: e.Message}})
	h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	h.Set(echo.HeaderContentLength, strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// wantsHTML reports whether a 404 should be the HTML page: a browser
// navigation (GET or HEAD) outside the machine-facing paths.
func wantsHTML(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.Path
	for _, prefix := range []string{"/api/", "/payments/", "/admin/", "/healthz", "/readyz", "/metrics"} {
		if strings.HasPrefix(p, prefix) {
			return false
		}
	}
	return true
}
