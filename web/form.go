package web

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/surgefund/surge/donation"
)

// formError is a failed form submission: the error plus what the donor
// typed, so that the error handler can show the form again, filled in.
type formError struct {
	err  *Error
	form formView
}

func (f *formError) Error() string { return f.err.Error() }
func (f *formError) Unwrap() error { return f.err }

// handleForm serves POST /donate, the HTML form that works without
// script. Success is a 303 to the gateway's checkout page. Mistakes answer
// with the donate page again (status from statusFor, e.g. 422), the
// donor's input kept and the message shown above the form.
func (s *Server) handleForm(c echo.Context) error {
	r := c.Request()
	if err := s.cop.Check(r); err != nil {
		return &Error{Code: CodeCrossOrigin, Message: "Cross-origin form posts are refused."}
	}
	if err := requireMediaType(r, "application/x-www-form-urlencoded"); err != nil {
		return err
	}
	body, err := readBody(r, maxFormBody)
	if err != nil {
		return err
	}
	vals, perr := url.ParseQuery(string(body))
	form := formView{
		Custom:    strings.TrimSpace(vals.Get("custom_amount")),
		Name:      vals.Get("name"),
		Email:     vals.Get("email"),
		Message:   vals.Get("message"),
		Anonymous: vals.Get("anonymous") != "",
	}
	fail := func(e *Error, field string) error {
		form.Field = field
		return &formError{err: e, form: form}
	}
	if perr != nil {
		return fail(&Error{Code: CodeInvalidForm, Message: "The form could not be read. Please try again."}, "")
	}
	if e := s.rateLimit(r); e != nil {
		return fail(e, "")
	}
	cur := s.campaign.Currency
	in := donationInput{Currency: cur, Name: form.Name, Email: form.Email, Message: form.Message, Anonymous: form.Anonymous}
	switch preset := vals.Get("amount"); {
	case form.Custom != "":
		v, err := donation.ParseMajor(form.Custom, cur)
		if err != nil {
			return fail(&Error{Code: CodeInvalidAmount, Message: "Please enter an amount such as 25 or 25.50."}, "amount")
		}
		in.Amount = v
	case preset != "":
		v, err := strconv.ParseInt(preset, 10, 64)
		if err != nil {
			return fail(&Error{Code: CodeInvalidAmount, Message: "Please choose one of the amounts or enter your own."}, "amount")
		}
		in.Amount, form.Amount = v, v
	default:
		return fail(&Error{Code: CodeInvalidAmount, Message: "Please choose one of the amounts or enter your own."}, "amount")
	}
	if err := s.campaign.checkInput(&in, ""); err != nil {
		var e *Error
		if errors.As(err, &e) {
			return fail(e, fieldOf(e.Code))
		}
		return err
	}
	key := vals.Get("idempotency_key")
	if key != "" && !validKey(key) {
		key = "" // set by our script; if mangled, the donation still goes through
	}
	d, checkoutURL, err := s.create(r.Context(), in, key)
	if err != nil {
		return fail(asError(err, r), "")
	}
	c.Response().Header()["Cache-Control"] = noStore
	switch {
	case checkoutURL != "":
		return c.Redirect(http.StatusSeeOther, checkoutURL)
	case d.Status == donation.StatusFailed:
		return c.Redirect(http.StatusSeeOther, "/error?donation="+d.ID)
	}
	return c.Redirect(http.StatusSeeOther, "/success?donation="+d.ID)
}

// fieldOf names the form field an error code is about.
func fieldOf(code string) string {
	switch code {
	case CodeInvalidAmount, CodeCurrencyNotAccepted, CodeUnknownCurrency:
		return "amount"
	case CodeInvalidEmail:
		return "email"
	case CodeInvalidName:
		return "name"
	case CodeInvalidMessage:
		return "message"
	}
	return ""
}

// renderFormError writes the donate page with the donor's input and msg.
func (s *Server) renderFormError(w http.ResponseWriter, r *http.Request, status int, form formView, msg string) {
	form.Error = msg
	if err := s.rd.renderForm(w, status, form); err != nil {
		s.log.Error("render donate form", "path", r.URL.Path, "err", err)
	}
}
