package module

import (
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

// approvalsPath is the approvals page, which approval_step_up protects.
const approvalsPath = "/.gatehouse/approvals"

// serveInternal routes Gatehouse's own endpoints under /.gatehouse/, on
// the canonical path, case-insensitively. They are never proxied: an
// unknown one is 404.
func (h *Handler) serveInternal(w http.ResponseWriter, r *http.Request, canon string, d *decision) error {
	d.result = "internal"
	switch strings.ToLower(canon) {
	case "/.gatehouse/healthz":
		return h.serveHealthz(w, r, d)
	case "/.gatehouse/jwks.json":
		return h.serveJWKS(w, r, d)
	case "/.gatehouse/callback":
		return h.serveCallback(w, r, d)
	case "/.gatehouse/login":
		return h.serveLogin(w, r, d)
	case "/.gatehouse/logout":
		return h.serveLogout(w, r, d)
	case "/.gatehouse/stepup":
		return h.serveStepUp(w, r, d)
	case "/.gatehouse/request":
		return h.serveRequest(w, r, d)
	case "/.gatehouse/access":
		return h.serveAccess(w, r, d)
	case approvalsPath:
		return h.serveApprovals(w, r, d)
	}
	d.reason = "not_found"
	return h.reject(w, r, d, answer{Status: http.StatusNotFound, Error: "not_found", Reason: "not_found",
		Message: "There is nothing here."})
}

func (h *Handler) methodNotAllowed(w http.ResponseWriter, r *http.Request, d *decision, allow string) error {
	w.Header().Set("Allow", allow)
	return h.reject(w, r, d, answer{Status: http.StatusMethodNotAllowed, Error: "method_not_allowed", Reason: "method_not_allowed",
		Message: "This method is not allowed here."})
}

// serveHealthz answers liveness checks without a session.
func (h *Handler) serveHealthz(w http.ResponseWriter, r *http.Request, d *decision) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return h.methodNotAllowed(w, r, d, "GET, HEAD")
	}
	d.reason = "healthz"
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	}
	return nil
}

// serveLogin starts a login and returns to rd (a same-origin path) after
// it. With a valid session it just goes to rd. APIs that got a 401 send
// the user here.
func (h *Handler) serveLogin(w http.ResponseWriter, r *http.Request, d *decision) error {
	if r.Method != http.MethodGet {
		return h.methodNotAllowed(w, r, d, "GET")
	}
	rd := authn.SafeReturnPath(r.URL.Query().Get("rd"))
	sess, _, _, reason := h.liveSession(r, d.start)
	if sess != nil {
		d.user, d.email, d.reason = sess.Subject, sess.Email, "already_signed_in"
		http.Redirect(w, r, rd, http.StatusFound)
		return nil
	}
	d.result, d.reason = "login", string(reason)
	return h.beginLogin(w, r, d, rd, reason.ForcesReauthentication())
}

// serveCallback completes a login: the state must match a login cookie of
// this browser that has not been used, the code is exchanged with the PKCE
// verifier, and the ID token is verified in full before a session is made.
func (h *Handler) serveCallback(w http.ResponseWriter, r *http.Request, d *decision) error {
	if r.Method != http.MethodGet {
		return h.methodNotAllowed(w, r, d, "GET")
	}
	d.result = "login_failed"
	q := r.URL.Query()
	state := q.Get("state")
	loginFailed := func(status int, reason, msg string) error {
		d.reason = reason
		return h.reject(w, r, d, answer{Status: status, Error: "login_failed", Reason: reason,
			Title: "Sign-in failed", Message: msg, ActionURL: "/", ActionText: "Try again"})
	}
	if h.duplicateOwnCookie(r) {
		return loginFailed(http.StatusBadRequest, string(authn.ReasonDuplicate),
			"Your browser sent one of this site's sign-in cookies twice. Clear this site's cookies, then sign in again.")
	}
	st, cookieName, found := h.pending.Find(r, state)
	if len(q["state"]) != 1 {
		found = authn.LoginMalformed
	}
	switch found {
	case authn.LoginMalformed:
		return loginFailed(http.StatusBadRequest, "state_missing", "This sign-in link is incomplete. Please start again.")
	case authn.LoginUnknown:
		return loginFailed(http.StatusBadRequest, "state_unknown",
			"This sign-in was not started in this browser, or it expired. Please start again.")
	case authn.LoginSpent:
		return loginFailed(http.StatusBadRequest, "state_replayed", "This sign-in was already used. Please start again.")
	}
	if found == authn.LoginSuperseded {
		if q.Has("error") || h.provider.used.Seen(st.State, d.start) {
			return loginFailed(http.StatusBadRequest, "state_superseded", "A newer sign-in in this browser replaced this one. Please start again.")
		}
		// A newer login of this browser took this one's slot: restart it
		// where it was going. With a session by now (the newer login
		// finished), that is just a redirect; else one more trip to the
		// IdP, which its single sign-on usually answers at once.
		d.result, d.reason = "login", "login_superseded"
		restart := "/.gatehouse/login?rd="
		if st.StepUp != nil {
			restart = "/.gatehouse/stepup?rd="
		}
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		http.Redirect(w, r, restart+url.QueryEscape(st.Return), http.StatusFound)
		return nil
	}
	// The login is spent whatever happens next.
	if name, value, err := h.pending.Spend(st); err == nil {
		http.SetCookie(w, h.cookie(name, value, "/.gatehouse/", int(authn.LoginTTL/time.Second), ""))
	} else {
		http.SetCookie(w, h.cookie(cookieName, "", "/.gatehouse/", -1, ""))
	}
	state = st.State
	if h.provider.used.Seen(state, d.start) {
		return loginFailed(http.StatusBadRequest, "state_replayed", "This sign-in was already used. Please start again.")
	}
	// RFC 9207: an IdP that names itself must be the one we asked, so an
	// answer from another IdP (mix-up attack) is refused.
	wantIss := h.Issuer
	if st.StepUp != nil && st.StepUp.Provider != "" {
		if p := h.Providers[st.StepUp.Provider]; p != nil {
			wantIss = p.Issuer
		}
	}
	if iss, ok := q["iss"]; ok && (len(iss) != 1 || iss[0] != wantIss) {
		return loginFailed(http.StatusBadRequest, "issuer_mismatch", "This sign-in answer came from another identity provider.")
	}
	if e := q.Get("error"); e != "" {
		code := "idp_error"
		if idpErrorRE.MatchString(e) {
			code = "idp_" + e
		}
		return loginFailed(http.StatusUnauthorized, code, "The identity provider did not sign you in ("+strings.TrimPrefix(code, "idp_")+").")
	}
	code := q.Get("code")
	if code == "" || len(code) > 2048 {
		return loginFailed(http.StatusBadRequest, "code_missing", "The identity provider returned no authorization code.")
	}
	if st.StepUp != nil {
		return h.finishStepUp(w, r, d, code, st, loginFailed)
	}
	id, err := h.rp.Finish(r.Context(), code, st)
	if err != nil {
		var le *authn.LoginError
		if errors.As(err, &le) {
			return loginFailed(http.StatusUnauthorized, le.Reason, le.Msg)
		}
		return h.idpDown(w, r, d, err)
	}
	h.provider.used.Mark(state, timeUnix(st.Started), d.start)
	d.user, d.email, d.refused = id.Subject, id.Email, id.Refused
	sess := authn.NewSession(id, d.start)
	if err := h.writeSession(w, sess); err != nil {
		h.logger.Error("session does not fit in a cookie", zap.String("user", id.Subject), zap.Int("groups", len(id.Groups)), zap.Error(err))
		return loginFailed(http.StatusInternalServerError, "session_too_large",
			"Your account carries too much data for a session cookie (for example, very many groups). Please contact your administrator.")
	}
	if v, err := h.idTokens.Seal(h.idTokenCookie, id.RawIDToken); err == nil {
		http.SetCookie(w, h.cookie(h.idTokenCookie, v, "/.gatehouse/", int(h.lifetimes.Lifetime.Seconds()), ""))
	} else {
		h.logger.Warn("ID token too large to keep for logout; logout will not send id_token_hint", zap.String("user", id.Subject))
	}
	d.result, d.reason = "login_ok", ""
	w.Header().Set("Cache-Control", "no-store")
	// The callback URL carries the code and state: keep them out of the
	// Referer of the page the browser goes to next.
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, authn.SafeReturnPath(st.Return), http.StatusFound)
	return nil
}

var idpErrorRE = regexp.MustCompile(`^[a-z_]{1,64}$`)

// serveLogout ends the session here (a tombstone cookie that forces the
// next login to ask for the password) and at the IdP when it has an
// end_session_endpoint. The IdP sends the browser back here, which then
// shows the logged-out page.
func (h *Handler) serveLogout(w http.ResponseWriter, r *http.Request, d *decision) error {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		return h.methodNotAllowed(w, r, d, "GET, POST")
	}
	d.result = "logout"
	sess, _ := h.readSession(r, d.start)
	var idToken string
	if c, err := r.Cookie(h.idTokenCookie); err == nil {
		_ = h.idTokens.Open(h.idTokenCookie, c.Value, &idToken)
		http.SetCookie(w, h.cookie(h.idTokenCookie, "", "/.gatehouse/", -1, ""))
	}
	if sess != nil {
		d.user, d.email = sess.Subject, sess.Email
	}
	// A logout the store could not record durably still ends the session
	// here and on this node; the audit line says it was not recorded.
	notDurable := sess != nil && h.revokeSession(r.Context(), sess) != nil
	defer func() {
		if notDurable {
			d.reason = "logout_not_recorded"
		}
	}()
	if sess != nil || idToken != "" {
		tomb := &authn.Session{Ended: "logout", Created: d.start.Unix(), LastSeen: d.start.Unix()}
		if err := h.writeSession(w, tomb); err != nil {
			return err
		}
		if origin, ok := h.origin(r); ok {
			end, err := h.rp.EndSessionURL(r.Context(), idToken, origin+"/.gatehouse/logout")
			if err != nil {
				h.logger.Warn("could not end the IdP session", zap.Error(err))
			} else if end != "" {
				d.reason = "idp_logout"
				w.Header().Set("Cache-Control", "no-store")
				http.Redirect(w, r, end, http.StatusSeeOther)
				return nil
			}
		}
	}
	d.reason = "logged_out"
	h.pages.write(w, authn.WantsHTML(r), answer{Status: http.StatusOK, Error: "", Reason: "logged_out", Title: "Signed out",
		Message: "You are signed out. Close this window, or sign in again.", ActionURL: "/", ActionText: "Sign in again"}, h.App, "")
	return nil
}
