package gate

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

// maxFormBytes bounds the body of Gatehouse's own forms.
const maxFormBytes = 16 << 10

// pageSession is the live session of a request to one of Gatehouse's
// pages. Without one the request is answered: a sign-in that returns to
// path for a navigation, 401 otherwise.
func (g *Gate) pageSession(req *Request, out *Outcome, path string) (signedIn, bool) {
	in := g.signedIn(req)
	if !in.live() {
		out.Reason = Reason(in.Reason)
		if authn.IsNavigation(req.HTTP) {
			out.Result = ResultLogin
			*out = g.startLogin(req, *out, path, in.Reason.ForcesReauthentication())
			return in, false
		}
		*out = out.refuse(Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(in.Reason), &Answer{Error: "unauthenticated",
			Message: "Sign in to use this page.", LoginURL: PathLogin + "?rd=" + url.QueryEscape(path)})
		return in, false
	}
	out.signedInAs(in.Session)
	return in, true
}

// checkForm guards every state-changing form: POST, a CSRF token tied to
// this session, and no cross-site origin. It reads the form; refused,
// out is the answer.
func (g *Gate) checkForm(req *Request, out *Outcome, s *signedIn) bool {
	r := req.HTTP
	r.Body = http.MaxBytesReader(nil, r.Body, maxFormBytes)
	bad := func(why Reason) bool {
		*out = out.refuse(Deny, http.StatusForbidden, ResultDeny, why, &Answer{Error: "forbidden",
			Title: "Request refused", Message: "This form could not be verified. Go back, reload the page and try again."})
		return false
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return bad(ReasonCrossSiteForm)
	}
	switch o := r.Header.Get("Origin"); {
	case o == "null":
		// Sent by a page with a no-referrer policy: trust only Fetch
		// Metadata then.
		if r.Header.Get("Sec-Fetch-Site") != "same-origin" {
			return bad(ReasonCrossSiteForm)
		}
	case o != "":
		if own, ok := g.origin(req); !ok || !strings.EqualFold(o, own) {
			return bad(ReasonCrossSiteForm)
		}
	}
	if err := r.ParseForm(); err != nil {
		return bad(ReasonBadForm)
	}
	if !g.csrf.Valid(s.Session.ID, r.PostForm.Get("csrf")) {
		return bad(ReasonCSRF)
	}
	return true
}

// CleanText keeps a free-text field to one line of printable text, at
// most max bytes of valid UTF-8: controls, invalid bytes and invisible
// format characters (bidi overrides such as U+202E, which could make a
// reason read differently to an approver) become spaces.
func CleanText(s string, max int) string {
	s = strings.TrimSpace(strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s))
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// DurationChoice is one entry of the request form's duration menu.
type DurationChoice struct {
	Value string // the form's duration field ("1h0m0s")
	Label string // for people ("1 hour")
}

// durationChoices offers common durations up to the cap, and the cap.
func durationChoices(max time.Duration) []DurationChoice {
	var out []DurationChoice
	for _, d := range []time.Duration{15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour, 24 * time.Hour} {
		if d < max {
			out = append(out, DurationChoice{d.String(), humanDuration(d)})
		}
	}
	return append(out, DurationChoice{max.String(), humanDuration(max)})
}

// humanDuration writes a duration for people: "1 hour", "2 hours 30
// minutes", "45 seconds".
func humanDuration(d time.Duration) string {
	if d < time.Minute {
		return plural(int64(d/time.Second), "second")
	}
	d = d.Round(time.Minute)
	h, m := int64(d/time.Hour), int64(d%time.Hour/time.Minute)
	switch {
	case h == 0:
		return plural(m, "minute")
	case m == 0:
		return plural(h, "hour")
	}
	return plural(h, "hour") + " " + plural(m, "minute")
}

func plural(n int64, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}
