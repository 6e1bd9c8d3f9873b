package module

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// ServeHTTP runs the pipeline: strip managed headers, route internal
// endpoints, check the session, apply the allow rules, slide the idle
// clock, set identity headers and call the next handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	d := &decision{start: h.now(), method: r.Method}
	defer h.audit(d)

	// 1. Strip: before anything else can read them.
	h.managed.strip(r)

	canon, err := canonicalPath(r)
	if err != nil {
		d.path = truncate(r.URL.EscapedPath(), 256)
		return h.reject(w, r, d, answer{Status: http.StatusBadRequest, Error: "bad_request", Reason: "ambiguous_path",
			Message: "This address contains characters Gatehouse does not accept in a path (such as ';', '\\' or an encoded '/')."})
	}
	d.path = canon

	// 2. Internal endpoints: never proxied.
	if authn.IsInternalPath(canon) {
		return h.serveInternal(w, r, canon, d)
	}

	pv := pathView{r: r, canon: canon}
	if len(h.public) > 0 && h.public.Match(pv.req()) {
		d.result = "public"
		h.audit(d)
		h.stripOwnCookies(r)
		return next.ServeHTTP(w, r)
	}

	// 3. Session.
	now := d.start
	sess, reason := h.readSessionShared(r, now)
	if sess == nil {
		// 4. No session.
		return h.requireLogin(w, r, d, reason)
	}
	d.user, d.email = sess.Subject, sess.Email

	// 5. Grants, and the revocation state of the session and the user.
	gst, grantsErr := h.lookupGrants(r.Context(), sess, now)
	if grantsErr && !h.cache.Ready() {
		// A node that has not loaded the revocations in force cannot tell
		// a revoked session from a live one: it serves nobody yet.
		return h.reject(w, r, d, answer{Status: http.StatusServiceUnavailable, Error: "unavailable", Reason: "revocations_unavailable",
			Title: "Temporarily unavailable", Message: "This gateway is starting and cannot check sessions yet. Please try again in a minute."})
	}
	if gst.Revoked(sess.Created) {
		d.user, d.email = "", ""
		return h.requireLogin(w, r, d, authn.ReasonRevoked)
	}
	d.grants = grantResources(gst.Grants)

	// Cross-site WebSocket hijacking: a page of another origin that opens
	// a socket here would ride the user's session.
	if h.crossOriginUpgrade(r) {
		return h.reject(w, r, d, answer{Status: http.StatusForbidden, Error: "forbidden", Reason: "cross_origin_upgrade",
			Message: "Connections that switch protocol (such as WebSockets) are only accepted from this site's own pages."})
	}

	if !h.entitled(sess) {
		return h.reject(w, r, d, answer{Status: http.StatusForbidden, Error: "forbidden", Reason: "not_allowed",
			Message: "Your account is not in a group or email domain allowed to use this application."})
	}

	// 6. Policy.
	var dec policies.Decision
	if h.engine != nil {
		var err error
		dec, err = h.decide(r, sess, canon, d, gst.Grants, grantsErr)
		if !h.applyDecision(w, r, d, sess, dec, err, grantsErr) {
			return nil
		}
	}

	// 7. Step-up.
	if !h.stepUpPolicy(w, r, &pv, d, sess, dec) {
		return nil
	}

	// 9. Allow: slide the idle clock on user activity, set identity.
	if h.lifetimes.ShouldSlide(sess, now) && h.isActivity(r, &pv) {
		sess.LastSeen = now.Unix()
		if err := h.writeSession(w, sess); err != nil {
			h.logger.Error("re-issuing session cookie", zap.Error(err))
		}
	}
	for _, ih := range h.identity {
		if v := h.claimValue(sess, ih.claim); v != "" {
			r.Header[ih.key] = []string{v}
		}
	}
	h.setPolicyHeaders(r, dec)
	if h.assertion != nil {
		if err := h.setAssertion(r, sess, now); err != nil {
			return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("signing the assertion: %w", err))
		}
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.auth.user.id", sess.Subject)
	}
	d.result = "allow"
	h.audit(d)
	h.stripOwnCookies(r)
	return next.ServeHTTP(w, r)
}

// canonicalPath checks the request target as the client sent it (before
// any rewrite in front of Gatehouse, and before dot segments are resolved)
// and returns the canonical form of the path Caddy is about to serve.
func canonicalPath(r *http.Request) (string, error) {
	escaped := r.URL.EscapedPath()
	raw := r.RequestURI
	if or, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok {
		raw = or.RequestURI
	}
	// The common case: nothing was rewritten, and CanonicalPath makes the
	// same checks on the same bytes.
	if rawPath, _, _ := strings.Cut(raw, "?"); raw != "" && rawPath != escaped {
		if err := authn.CheckRequestTarget(raw); err != nil {
			return "", err
		}
	}
	return authn.CanonicalPath(escaped)
}

// crossOriginUpgrade reports whether r is a protocol upgrade (WebSocket,
// h2c, extended CONNECT) sent by a browser from another origin: its Origin
// is neither this site's (external_url, else the request's scheme and
// host) nor an upgrade_origins entry. "null", an unreadable or a repeated
// Origin counts as another. A request without Origin is not from a
// browser (browsers always send it on upgrades) and goes on like any other.
func (h *Handler) crossOriginUpgrade(r *http.Request) bool {
	if !authn.IsUpgrade(r) {
		return false
	}
	vals, ok := r.Header["Origin"]
	if !ok {
		return false
	}
	if len(vals) != 1 {
		return true
	}
	o, err := authn.NormalizeOrigin(vals[0])
	if err != nil {
		return true
	}
	if h.upgradeOK[o] {
		return false
	}
	own, ok := h.origin(r)
	if !ok {
		return true
	}
	own, err = authn.NormalizeOrigin(own)
	return err != nil || o != own
}

// matchable returns a shallow copy of r whose path is the canonical one,
// for Caddy's path matchers.
func matchable(r *http.Request, canon string) *http.Request {
	u := *r.URL
	u.Path, u.RawPath = canon, ""
	mr := *r
	mr.URL = &u
	return &mr
}

// pathView is the request as path matchers see it: with its canonical
// path. The copy is made on first use; most requests need none.
type pathView struct {
	r     *http.Request
	canon string
	mr    *http.Request
}

func (v *pathView) req() *http.Request {
	if v.mr == nil {
		v.mr = matchable(v.r, v.canon)
	}
	return v.mr
}

func (h *Handler) isActivity(r *http.Request, pv *pathView) bool {
	if len(h.idleIgnore) > 0 && h.idleIgnore.Match(pv.req()) {
		return false
	}
	if h.IdleActivity == "any" {
		return true
	}
	return authn.IsUserActivity(r)
}

// liveSession is readSession for Gatehouse's own endpoints, with the
// revocation check ServeHTTP makes (pipeline step 5): a session revoked
// on any node is no session here either. It returns the grant state it
// read, for callers that go on to decide.
func (h *Handler) liveSession(r *http.Request, now time.Time) (*authn.Session, grants.State, bool, authn.Reason) {
	sess, reason := h.readSession(r, now)
	if sess == nil {
		return nil, grants.State{}, false, reason
	}
	st, grantsErr := h.lookupGrants(r.Context(), sess, now)
	if grantsErr && !h.cache.Ready() {
		return nil, st, grantsErr, authn.ReasonUnverified
	}
	if st.Revoked(sess.Created) {
		return nil, st, grantsErr, authn.ReasonRevoked
	}
	return sess, st, grantsErr, ""
}

// readSession opens the session cookie.
func (h *Handler) readSession(r *http.Request, now time.Time) (*authn.Session, authn.Reason) {
	return h.openSession(r, now, func(v string) (s authn.Session, err error) {
		err = h.sessions.Open(h.sessionCookie, v, &s)
		return s, err
	})
}

// readSessionShared is readSession through the handler's cache of opened
// cookies: the session's maps and slices are shared with other requests
// and must not be changed (LastSeen may: the struct is a copy).
func (h *Handler) readSessionShared(r *http.Request, now time.Time) (*authn.Session, authn.Reason) {
	return h.openSession(r, now, func(v string) (authn.Session, error) { return h.sessionCache.Open(v, now) })
}

// openSession reads the session cookie with open and checks its
// lifetimes. A request that carries any of Gatehouse's cookie names more
// than once has no session (duplicate_cookie): picking the first or the
// last would let a cookie set by a sibling subdomain, or injected, shadow
// the real one.
func (h *Handler) openSession(r *http.Request, now time.Time, open func(string) (authn.Session, error)) (*authn.Session, authn.Reason) {
	if h.duplicateOwnCookie(r) {
		return nil, authn.ReasonDuplicate
	}
	c, err := r.Cookie(h.sessionCookie)
	if err != nil {
		return nil, authn.ReasonNoCookie
	}
	s, err := open(c.Value)
	if err != nil {
		return nil, authn.ReasonInvalid
	}
	if why := h.lifetimes.Check(&s, now); why != authn.ReasonNone {
		return nil, why
	}
	return &s, authn.ReasonNone
}

// duplicateOwnCookie reports whether the request's Cookie headers carry
// one of Gatehouse's cookie names (session, login state, ID token) more
// than once, counting names the way the most lenient server would (with
// any surrounding space).
func (h *Handler) duplicateOwnCookie(r *http.Request) bool {
	vals := r.Header["Cookie"]
	// Each of Gatehouse's cookie names contains cookie_name: fewer than
	// two occurrences in all cannot be a duplicate (the common case).
	n := 0
	for _, v := range vals {
		if n += strings.Count(v, h.CookieName); n > 1 {
			break
		}
	}
	if n < 2 {
		return false
	}
	var seen []string
	for _, v := range vals {
		for part := range strings.SplitSeq(v, ";") {
			name, _, _ := strings.Cut(part, "=")
			name = strings.TrimSpace(name)
			if !h.ownCookie(name) {
				continue
			}
			if slices.Contains(seen, name) {
				return true
			}
			seen = append(seen, name)
		}
	}
	return false
}

// writeSession seals s into the session cookie.
func (h *Handler) writeSession(w http.ResponseWriter, s *authn.Session) error {
	v, err := h.sessions.Seal(h.sessionCookie, s)
	if err != nil {
		return err
	}
	// The cookie outlives the session by an hour, so that when the session
	// ends the browser still shows why, and the next login asks for the
	// password (prompt=login) instead of riding the IdP's single sign-on.
	maxAge := int((time.Until(h.lifetimes.Expires(s)) + expiredGrace) / time.Second)
	if s.Ended != "" {
		maxAge = int((h.lifetimes.Lifetime + expiredGrace) / time.Second)
	}
	http.SetCookie(w, h.cookie(h.sessionCookie, v, "/", maxAge, h.CookieDomain))
	return nil
}

// cookie builds one of Gatehouse's cookies: always Secure, HttpOnly and
// SameSite=Lax.
func (h *Handler) cookie(name, value, path string, maxAge int, domain string) *http.Cookie {
	return &http.Cookie{
		Name: name, Value: value, Path: path, Domain: domain, MaxAge: maxAge,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	}
}

func (h *Handler) entitled(s *authn.Session) bool {
	if len(h.allGroups) == 0 && len(h.domains) == 0 {
		return true
	}
	for _, g := range s.Groups {
		if _, ok := h.allGroups[g]; ok {
			return true
		}
	}
	if at := strings.LastIndexByte(s.Email, '@'); at >= 0 {
		if _, ok := h.domains[strings.ToLower(s.Email[at+1:])]; ok {
			return true
		}
	}
	return false
}

// builtinClaims are the claims every session holds; others named by an
// identity header are kept in Session.Extra.
var builtinClaims = map[string]bool{
	"sub": true, "iss": true, "email": true, "name": true, "groups": true,
	"acr": true, "amr": true, "auth_time": true,
}

func (h *Handler) claimValue(s *authn.Session, claim string) string {
	var v string
	switch claim {
	case "sub":
		v = s.Subject
	case "iss":
		v = h.Issuer
	case "email":
		v = s.Email
	case "name":
		v = s.Name
	case "groups":
		v = joinList(s.Groups)
	case "acr":
		v = s.ACR
	case "amr":
		v = joinList(s.AMR)
	case "auth_time":
		if s.AuthTime > 0 {
			v = strconv.FormatInt(s.AuthTime, 10)
		}
	default:
		v = s.Extra[claim]
	}
	return headerValue(v)
}

// requireLogin answers a request without a valid session: navigations go
// to the IdP, everything else gets 401 JSON.
func (h *Handler) requireLogin(w http.ResponseWriter, r *http.Request, d *decision, reason authn.Reason) error {
	d.reason = string(reason)
	if reason == authn.ReasonDuplicate {
		// A login would not help: the browser would send both cookies
		// again. Say what happened, never redirect (no loop).
		d.result = "unauthenticated"
		return h.reject(w, r, d, answer{Status: http.StatusUnauthorized, Error: "unauthenticated", Reason: string(reason),
			Title: "Sign-in cookie sent twice",
			Message: "Your browser sent this site's sign-in cookie twice, so Gatehouse cannot tell which one is yours. " +
				"Another site under the same domain may have set one. Clear this site's cookies, then sign in again."})
	}
	if !authn.IsNavigation(r) {
		d.result = "unauthenticated"
		login := "/.gatehouse/login?rd=" + url.QueryEscape(authn.SafeReturnPath(r.URL.RequestURI()))
		return h.reject(w, r, d, answer{Status: http.StatusUnauthorized, Error: "unauthenticated", Reason: string(reason),
			Title: "Please sign in", Message: "Sign in to use this application.",
			LoginURL: login, ActionURL: login, ActionText: "Sign in"})
	}
	d.result = "login"
	return h.beginLogin(w, r, d, r.URL.RequestURI(), reason.ForcesReauthentication())
}

// beginLogin sends the browser to the IdP with a fresh login state.
func (h *Handler) beginLogin(w http.ResponseWriter, r *http.Request, d *decision, returnTo string, forceLogin bool) error {
	origin, ok := h.origin(r)
	if !ok {
		d.result, d.reason = "reject", "https_required"
		return h.reject(w, r, d, answer{Status: http.StatusBadRequest, Error: "bad_request", Reason: "https_required",
			Message: "This application must be reached over HTTPS."})
	}
	if h.external != nil && !strings.EqualFold(requestOrigin(r), origin) {
		// Log in on the configured origin, where the callback will land.
		http.Redirect(w, r, origin+authn.SafeReturnPath(returnTo), http.StatusFound)
		return nil
	}
	opt := authn.AuthOptions{ForceLogin: forceLogin, MaxAge: h.lifetimes.Lifetime}
	st, err := h.rp.Begin(r.Context(), origin+"/.gatehouse/callback", returnTo, opt)
	if err != nil {
		return h.idpDown(w, r, d, err)
	}
	return h.sendToIdP(w, r, d, h.rp, st, opt)
}

// sendToIdP keeps a login's state in one of the browser's login slots
// and sends the browser to the IdP with it.
func (h *Handler) sendToIdP(w http.ResponseWriter, r *http.Request, d *decision, rp *authn.RelyingParty, st *authn.LoginState, opt authn.AuthOptions) error {
	name, value, state, err := h.pending.Start(st)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	authURL, err := rp.AuthCodeURL(r.Context(), st, state, opt)
	if err != nil {
		return h.idpDown(w, r, d, err)
	}
	http.SetCookie(w, h.cookie(name, value, "/.gatehouse/", int(authn.LoginTTL/time.Second), ""))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, authURL, http.StatusFound)
	return nil
}

// origin is where this site lives for the browser: external_url, or the
// request's scheme and host (X-Forwarded-* only from trusted proxies).
// Plain HTTP is refused except on loopback: the cookies are Secure.
func (h *Handler) origin(r *http.Request) (string, bool) {
	if h.external != nil {
		return h.external.Scheme + "://" + h.external.Host, true
	}
	o := requestOrigin(r)
	if strings.HasPrefix(o, "http://") {
		u, err := url.Parse(o)
		if err != nil || !isLoopbackHost(u.Hostname()) {
			return "", false
		}
	}
	return o, true
}

func requestOrigin(r *http.Request) string {
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool); trusted {
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

// reject writes one of Gatehouse's own error answers.
func (h *Handler) reject(w http.ResponseWriter, r *http.Request, d *decision, a answer) error {
	if d.result == "" {
		d.result = "deny"
	}
	if d.reason == "" {
		d.reason = a.Reason
	}
	a.Reference = d.ID()
	user := d.email
	if user == "" {
		user = d.user
	}
	// The audit line is written before the answer, so it exists by the
	// time the client reads it.
	h.audit(d)
	h.pages.write(w, authn.WantsHTML(r), a, h.App, user)
	return nil
}

func (h *Handler) idpDown(w http.ResponseWriter, r *http.Request, d *decision, err error) error {
	d.result, d.reason = "error", "idp_unavailable"
	if !errors.Is(err, authn.ErrProviderUnavailable) {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	h.logger.Error("identity provider unavailable", zap.String("issuer", h.Issuer), zap.Error(err))
	return h.reject(w, r, d, answer{Status: http.StatusBadGateway, Error: "idp_unavailable", Reason: "idp_unavailable",
		Title:   "Sign-in is unavailable",
		Message: "The identity provider cannot be reached right now. Please try again in a minute."})
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// expiredGrace is how long an ended session's cookie is kept to say so.
const expiredGrace = time.Hour

func timeUnix(s int64) time.Time { return time.Unix(s, 0) }
