package gate

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

// requireLogin answers a request without a valid session (pipeline step
// 4): navigations go to the IdP, everything else gets 401 JSON naming
// the sign-in URL.
func (g *Gate) requireLogin(req *Request, out Outcome, reason authn.Reason) Outcome {
	r := req.HTTP
	if reason == authn.ReasonDuplicate {
		// A sign-in would not help: the browser would send both cookies
		// again. Say what happened, never redirect (no loop).
		return out.refuse(Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(reason), &Answer{Error: "unauthenticated",
			Title: "Sign-in cookie sent twice",
			Message: "Your browser sent this site's sign-in cookie twice, so this site cannot tell which one is yours. " +
				"Another site under the same domain may have set one. Clear this site's cookies, then sign in again."})
	}
	// A form posted after the session ended is kept while the user signs
	// in again, then offered to send again (preserve.go).
	note, kept := g.keepForm(req, &out, reason)
	if kept {
		out.Result, out.Reason = ResultLogin, Reason(reason)
		return g.startLogin(req, out, PathResubmit, reason.ForcesReauthentication())
	}
	if !authn.IsNavigation(r) {
		login := PathLogin + "?rd=" + url.QueryEscape(authn.SafeReturnPath(r.URL.RequestURI()))
		return out.refuse(Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(reason), &Answer{Error: "unauthenticated",
			Title: "Please sign in", Message: "Sign in to use this application.", Note: note,
			LoginURL: login, ActionURL: login, ActionText: "Sign in"})
	}
	out.Result, out.Reason = ResultLogin, Reason(reason)
	return g.startLogin(req, out, r.URL.RequestURI(), reason.ForcesReauthentication())
}

// startLogin sends a browser that must sign in on its way: to the IdP
// when there is one, else to the sign-in page, where the user chooses.
func (g *Gate) startLogin(req *Request, out Outcome, returnTo string, forceLogin bool) Outcome {
	if len(g.idps) == 1 {
		return g.beginLogin(req, out, g.idps[0], returnTo, forceLogin, "")
	}
	out.setHeader("Cache-Control", "no-store")
	return out.redirect(Login, http.StatusFound, PathLogin+"?rd="+url.QueryEscape(authn.SafeReturnPath(returnTo)))
}

// login is /.gatehouse/login?rd=<path>: it starts a sign-in that returns
// to rd (a same-origin path), or with a live session just goes there.
// APIs that got a 401 send the user here. With several IdPs, idp=<name>
// or login_hint=<email> choose one (see chooseIdP); without them, or
// when they do not fit, the sign-in page lets the user choose.
func (g *Gate) login(req *Request, out Outcome) Outcome {
	q := req.HTTP.URL.Query()
	rd := authn.SafeReturnPath(q.Get("rd"))
	in := g.signedIn(req)
	if in.live() {
		out.signedInAs(in.Session)
		out.Reason = ReasonAlreadySignedIn
		return out.redirect(Redirect, http.StatusFound, rd)
	}
	idp, hint, why := g.chooseIdP(q["idp"], q["login_hint"])
	if idp == nil {
		return g.signInPage(out, rd, why, q["login_hint"])
	}
	out.Result, out.Reason = ResultLogin, Reason(in.Reason)
	return g.beginLogin(req, out, idp, rd, in.Reason.ForcesReauthentication(), hint)
}

// beginLogin sends the browser to idp with a fresh sign-in state (and
// hint as its login_hint), asking at once for the step-up that returnTo
// is known to need.
func (g *Gate) beginLogin(req *Request, out Outcome, idp *signInIdP, returnTo string, forceLogin bool, hint string) Outcome {
	origin, ok := g.origin(req)
	if !ok {
		return httpsRequired(out)
	}
	if g.external != nil && !strings.EqualFold(g.requestOrigin(req), origin) {
		// Sign in on the configured origin, where the callback will land.
		return out.redirect(Login, http.StatusFound, origin+authn.SafeReturnPath(returnTo))
	}
	opt := authn.AuthOptions{ForceLogin: forceLogin, MaxAge: g.cfg.Lifetimes.Lifetime, LoginHint: hint}
	if need, ok := g.upFront(req, returnTo); ok {
		// Asked as a step-up would ask it: a fresh sign-in that proves
		// an accepted acr. Whether it did is checked by the page itself.
		opt.ForceLogin, opt.ACRValues = true, need.ACR
		if need.MaxAge > 0 && need.MaxAge < opt.MaxAge {
			opt.MaxAge = need.MaxAge
		}
	}
	return g.sendToIdP(req, out, idp.Name, idp.rp, origin, returnTo, opt, nil)
}

// sendToIdP starts a sign-in at rp (the sign-in IdP named idp, or a
// step-up's provider): its state, which records idp, goes into one of
// the browser's sign-in slots, and the browser to the IdP. A step-up
// remembers what the sign-in must prove, and for which session.
func (g *Gate) sendToIdP(req *Request, out Outcome, idp string, rp *authn.RelyingParty, origin, returnTo string, opt authn.AuthOptions, stepUp *authn.StepUpState) Outcome {
	ctx := req.HTTP.Context()
	st, err := rp.Begin(ctx, origin+PathCallback, returnTo, opt)
	if err != nil {
		return g.idpDown(out, rp, err)
	}
	st.IdP, st.StepUp = idp, stepUp
	name, value, state, err := g.cookies.pending.Start(st)
	if err != nil {
		return out.fail(err)
	}
	authURL, err := rp.AuthCodeURL(ctx, st, state, opt)
	if err != nil {
		return g.idpDown(out, rp, err)
	}
	out.Cookies = append(out.Cookies, g.cookies.loginCookie(name, value))
	out.setHeader("Cache-Control", "no-store")
	kind := Login
	if stepUp != nil {
		kind = StepUp
	}
	return out.redirect(kind, http.StatusFound, authURL)
}

func httpsRequired(out Outcome) Outcome {
	return out.refuse(BadRequest, http.StatusBadRequest, ResultReject, ReasonHTTPSRequired, &Answer{Error: "bad_request",
		Message: "Open this application with an address that starts with https://."})
}

// idpDown answers when rp's IdP cannot be reached (502); any other error
// is a Failure.
func (g *Gate) idpDown(out Outcome, rp *authn.RelyingParty, err error) Outcome {
	out.Result, out.Reason = ResultError, ReasonIdPUnavailable
	if !errors.Is(err, authn.ErrProviderUnavailable) {
		return out.fail(err)
	}
	g.log.Error("identity provider unavailable", zap.String("issuer", rp.Discovery.Issuer()), zap.Error(err))
	return out.refuse(Unavailable, http.StatusBadGateway, ResultError, ReasonIdPUnavailable, &Answer{Error: "idp_unavailable",
		Title:   "Sign-in is unavailable",
		Message: "The sign-in service cannot be reached right now. Please try again in a minute."})
}

// origin is where this site lives for the browser: external_url, or the
// request's scheme and host (X-Forwarded-* only from trusted proxies).
// Plain HTTP is refused except on loopback: the cookies are Secure.
func (g *Gate) origin(req *Request) (string, bool) {
	if g.external != nil {
		return g.external.Scheme + "://" + g.external.Host, true
	}
	o := g.requestOrigin(req)
	if strings.HasPrefix(o, "http://") {
		u, err := url.Parse(o)
		if err != nil || !IsLoopbackHost(u.Hostname()) {
			return "", false
		}
	}
	return o, true
}

// requestOrigin is the scheme and host the request was sent to.
func (g *Gate) requestOrigin(req *Request) string {
	r := req.HTTP
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if req.TrustedProxy {
		if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
			scheme = p
		}
		if fh := r.Header.Get("X-Forwarded-Host"); fh != "" && validHost(fh) {
			host = fh
		}
	}
	return scheme + "://" + host
}

func validHost(h string) bool {
	if len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

// logout ends the session here (a tombstone cookie that forces the next
// sign-in to ask for the password), records it in the grant store so a
// copy of the cookie is dead on every node, and ends the IdP session
// when the IdP has an end_session_endpoint. The IdP sends the browser
// back here, which then shows the signed-out page.
func (g *Gate) logout(req *Request, out Outcome) Outcome {
	r, now := req.HTTP, req.Start
	out.Result = ResultLogout
	sess, _ := g.cookies.read(r, now)
	// The IdP to end the session at: the session's, else (the session
	// has ended) the one whose ID token the browser kept. An ID token of
	// another IdP than the session's is no hint: that IdP asks the user.
	tokenIdP, idToken, present, ok := g.cookies.readIDToken(r)
	if present {
		out.Cookies = append(out.Cookies, g.cookies.make(g.cookies.idToken, "", "/.gatehouse/", -1, ""))
	}
	idp := tokenIdP
	if sess != nil {
		idp = sess.IdP
	}
	if !ok || tokenIdP != idp {
		idToken = ""
	}
	out.Audit.setUser(sess)
	// A logout the store could not record durably still ends the session
	// here and on this node; the audit line says it was not recorded.
	recorded := sess == nil || g.revokeSession(r.Context(), sess) == nil
	result := func(o Outcome, reason Reason) Outcome {
		o.Reason = reason
		if !recorded {
			o.Reason = ReasonLogoutNotRecorded
		}
		return o
	}
	if p := g.idpNamed(idp); p != nil && (sess != nil || idToken != "") {
		tomb := &authn.Session{Ended: "logout", Created: now.Unix(), LastSeen: now.Unix(), IdP: p.Name, Issuer: p.Issuer}
		c, err := g.cookies.sessionCookie(tomb, now)
		if err != nil {
			return out.fail(err)
		}
		out.Cookies = append(out.Cookies, c)
		if origin, ok := g.origin(req); ok {
			end, err := p.rp.EndSessionURL(r.Context(), idToken, origin+PathLogout)
			if err != nil {
				g.log.Warn("could not end the IdP session", zap.Error(err))
			} else if end != "" {
				out.setHeader("Cache-Control", "no-store")
				return result(out.redirect(Redirect, http.StatusSeeOther, end), ReasonIdPLogout)
			}
		}
	}
	out.Kind, out.Status = Page, http.StatusOK
	out.Answer = &Answer{Reason: string(ReasonLoggedOut), Title: "Signed out",
		Message: "You are signed out. Close this window, or sign in again.", ActionURL: "/", ActionText: "Sign in again"}
	return result(out, ReasonLoggedOut)
}

// IsLoopbackHost reports whether host is localhost or a loopback address,
// where plain HTTP is allowed for testing.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
