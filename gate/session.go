package gate

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// Session cookies.
const (
	// sessionCacheTTL is how long an opened session cookie is trusted
	// again without opening it; sessionCacheSize bounds the cache.
	sessionCacheTTL  = time.Minute
	sessionCacheSize = 8192
	// expiredGrace is how long an ended session's cookie is kept, so that
	// the browser still shows why it ended and the next sign-in asks for
	// the password again.
	expiredGrace = time.Hour
)

// cookies are Gatehouse's cookies in a browser: the session, the ID token
// kept for logout (scoped to /.gatehouse/), and the pending sign-ins.
// Every one is Secure, HttpOnly and SameSite=Lax.
type cookies struct {
	base        string // cookie_name: every name below contains it
	domain      string
	session     string // __Host-<base>, or __Secure-<base> with a domain
	idToken     string
	loginPrefix string

	idps      []idpCookies // one for each sign-in IdP, the first for cookies of none
	opened    *authn.OpenCache[authn.Session]
	pending   *authn.PendingLogins
	lifetimes authn.Lifetimes
	now       func() time.Time
}

// idpCookies seal one sign-in IdP's sessions and ID tokens, under keys
// bound to the app, the IdP's issuer and its client: a session of one IdP
// never opens as another's (or another app's), and the IdP whose keys
// open a session is the one it was made by. A session made before IdPs
// had names opens as before: with one IdP, the keys are the same.
type idpCookies struct {
	name, issuer       string
	sessions, idTokens *authn.Sealer
}

func newCookies(cfg Config, site authn.Binding, idps []*signInIdP) (*cookies, error) {
	c := &cookies{base: cfg.CookieName, domain: cfg.CookieDomain, lifetimes: cfg.Lifetimes, now: cfg.Now}
	if c.now == nil {
		c.now = time.Now
	}
	if c.domain == "" {
		c.session = "__Host-" + c.base
	} else {
		c.session = "__Secure-" + c.base
	}
	c.idToken = "__Secure-" + c.base + "_idt"
	c.loginPrefix = "__Secure-" + c.base + "_login_"
	var all []*authn.Sealer
	sealer := func(purpose string, b authn.Binding, ttl time.Duration) (*authn.Sealer, error) {
		s, err := authn.NewSealer(cfg.CookieSecrets, purpose, b, ttl)
		if err != nil {
			return nil, fmt.Errorf("gate: cookie secret: %w", err)
		}
		all = append(all, s)
		return s, nil
	}
	for _, p := range idps {
		b := authn.Binding{App: cfg.App, Issuer: p.Issuer, ClientID: p.ClientID}
		ic := idpCookies{name: p.Name, issuer: p.Issuer}
		var err error
		// Sealed sessions outlive their cookie a little so that an
		// expired session still opens and can say why it ended (and
		// force a fresh sign-in); Lifetimes.Check decides validity.
		if ic.sessions, err = sealer("session", b, cfg.Lifetimes.Lifetime+expiredGrace); err != nil {
			return nil, err
		}
		if ic.idTokens, err = sealer("id_token", b, cfg.Lifetimes.Lifetime+expiredGrace); err != nil {
			return nil, err
		}
		c.idps = append(c.idps, ic)
	}
	logins, err := sealer("login", site, authn.LoginTTL)
	if err != nil {
		return nil, err
	}
	hints, err := sealer("login-hint", site, authn.LoginTTL)
	if err != nil {
		return nil, err
	}
	if cfg.Now != nil {
		for _, s := range all {
			s.SetClock(cfg.Now)
		}
	}
	c.opened = authn.NewOpenCacheFunc(c.openSession, sessionCacheTTL, sessionCacheSize)
	c.pending = authn.NewPendingLogins(logins, hints, c.loginPrefix)
	return c, nil
}

// openSession opens a session cookie with the keys of each IdP in turn:
// the IdP whose keys open it made it, and names it (Session.IdP). A
// session that names another issuer than that IdP's is refused.
func (c *cookies) openSession(value string, s *authn.Session) error {
	for _, ic := range c.idps {
		var v authn.Session
		if ic.sessions.Open(c.session, value, &v) != nil {
			continue
		}
		if v.Issuer != "" && v.Issuer != ic.issuer {
			return authn.ErrInvalidCookie
		}
		v.Issuer, v.IdP = ic.issuer, ic.name
		*s = v
		return nil
	}
	return authn.ErrInvalidCookie
}

// of is the cookies of the IdP named name; the first IdP's for "" (a
// logout tombstone of no known IdP).
func (c *cookies) of(name string) (idpCookies, bool) {
	if name == "" {
		return c.idps[0], true
	}
	for _, ic := range c.idps {
		if ic.name == name {
			return ic, true
		}
	}
	return idpCookies{}, false
}

// readIDToken opens the ID-token cookie kept for logout, with the keys of
// each IdP in turn: the IdP it is from, and the token. ok is false when
// there is none, or none opens it; present says whether the cookie was
// sent at all (to clear it).
func (c *cookies) readIDToken(r *http.Request) (idp, raw string, present, ok bool) {
	ck, err := r.Cookie(c.idToken)
	if err != nil {
		return "", "", false, false
	}
	for _, ic := range c.idps {
		if ic.idTokens.Open(c.idToken, ck.Value, &raw) == nil {
			return ic.name, raw, true, true
		}
	}
	return "", "", true, false
}

// read opens the session cookie (through the cache of opened cookies:
// the session's maps and slices are shared with other requests and must
// not be changed) and checks its lifetimes. A request that carries any of
// Gatehouse's cookie names more than once has no session
// (duplicate_cookie): picking the first or the last would let a cookie
// set by a sibling subdomain, or injected, shadow the real one.
func (c *cookies) read(r *http.Request, now time.Time) (*authn.Session, authn.Reason) {
	if c.duplicate(r) {
		return nil, authn.ReasonDuplicate
	}
	ck, err := r.Cookie(c.session)
	if err != nil {
		return nil, authn.ReasonNoCookie
	}
	s, err := c.opened.Open(ck.Value, now)
	if err != nil {
		return nil, authn.ReasonInvalid
	}
	if why := c.lifetimes.Check(&s, now); why != authn.ReasonNone {
		return nil, why
	}
	return &s, authn.ReasonNone
}

// duplicate reports whether the request's Cookie headers carry one of
// Gatehouse's cookie names more than once, counting names the way the
// most lenient server would (with any surrounding space).
func (c *cookies) duplicate(r *http.Request) bool {
	vals := r.Header["Cookie"]
	// Each of Gatehouse's cookie names contains the base name: fewer than
	// two occurrences in all cannot be a duplicate (the common case).
	n := 0
	for _, v := range vals {
		if n += strings.Count(v, c.base); n > 1 {
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
			if !c.own(name) {
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

// own reports whether a cookie name is one of Gatehouse's.
func (c *cookies) own(name string) bool {
	return name == c.session || name == c.idToken || strings.HasPrefix(name, c.loginPrefix)
}

// sessionCookie seals s into the session cookie. The cookie outlives the
// session by expiredGrace, so that when the session ends the browser
// still shows why, and the next sign-in asks for the password
// (prompt=login) instead of riding the IdP's single sign-on.
func (c *cookies) sessionCookie(s *authn.Session, now time.Time) (*http.Cookie, error) {
	ic, ok := c.of(s.IdP)
	if !ok {
		return nil, fmt.Errorf("gate: a session of IdP %q, which is not configured", s.IdP)
	}
	v, err := ic.sessions.Seal(c.session, s)
	if err != nil {
		return nil, err
	}
	maxAge := int((c.lifetimes.Expires(s).Sub(now) + expiredGrace) / time.Second)
	if s.Ended != "" {
		maxAge = int((c.lifetimes.Lifetime + expiredGrace) / time.Second)
	}
	return c.make(c.session, v, "/", maxAge, c.domain), nil
}

// idTokenCookie keeps the raw ID token of the IdP named idp for the
// logout's id_token_hint.
func (c *cookies) idTokenCookie(idp, raw string) (*http.Cookie, error) {
	ic, ok := c.of(idp)
	if !ok {
		return nil, fmt.Errorf("gate: an ID token of IdP %q, which is not configured", idp)
	}
	v, err := ic.idTokens.Seal(c.idToken, raw)
	if err != nil {
		return nil, err
	}
	return c.make(c.idToken, v, "/.gatehouse/", int(c.lifetimes.Lifetime.Seconds()), ""), nil
}

// loginCookie is a pending sign-in's slot (value "" clears it).
func (c *cookies) loginCookie(name, value string) *http.Cookie {
	maxAge := int(authn.LoginTTL / time.Second)
	if value == "" {
		maxAge = -1
	}
	return c.make(name, value, "/.gatehouse/", maxAge, "")
}

// make builds one of Gatehouse's cookies: always Secure, HttpOnly and
// SameSite=Lax.
func (c *cookies) make(name, value, path string, maxAge int, domain string) *http.Cookie {
	return &http.Cookie{
		Name: name, Value: value, Path: path, Domain: domain, MaxAge: maxAge,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	}
}

// strip removes Gatehouse's own cookies (the session, sign-in and
// ID-token cookies) from a request before it goes upstream: the app needs
// none of them, and a session cookie in an app's logs would be a session
// for anyone who reads them. Other cookies are kept as sent.
func (c *cookies) strip(r *http.Request) {
	values := r.Header["Cookie"]
	for i, v := range values {
		if !strings.Contains(v, c.base) {
			continue // the common case: nothing of ours, nothing to rebuild
		}
		kept := make([]string, 0, 4)
		for part := range strings.SplitSeq(v, ";") {
			// Other cookies pass as sent, less the separator's spaces
			// (trimming more, such as "\v", could turn a part the app's
			// parser ignores into a cookie it reads).
			part = strings.Trim(part, " \t")
			// Some servers trim the name more: " __Host-gatehouse =x" and
			// "\v__Host-gatehouse=x" are ours too.
			name, _, _ := strings.Cut(part, "=")
			if part != "" && !c.own(strings.TrimSpace(name)) {
				kept = append(kept, part)
			}
		}
		values[i] = strings.Join(kept, "; ")
	}
	// Drop values left empty, and the header when none is left.
	n := 0
	for _, v := range values {
		if v != "" {
			values[n] = v
			n++
		}
	}
	switch {
	case n == 0 && len(values) > 0:
		delete(r.Header, "Cookie")
	case n < len(values):
		r.Header["Cookie"] = values[:n]
	}
}

// signedIn is a request's session, checked against the revocations in
// force (pipeline steps 3 and 5).
type signedIn struct {
	// Session is the opened session; nil when there is none.
	Session *authn.Session
	// Reason says why the request has no live session: no session
	// (Session nil), revoked, or revocations_unavailable (this node
	// cannot tell yet). "" when Session is live.
	Reason authn.Reason
	// Grants is the user's grant state, GrantsErr whether the store
	// failed to give it (the revocations then come from the mirror).
	Grants    grants.State
	GrantsErr bool
}

// live reports whether the request has a live session.
func (s signedIn) live() bool { return s.Session != nil && s.Reason == authn.ReasonNone }

// signedIn reads the request's session and its user's grant state. A
// node that has not loaded the revocations in force cannot tell a revoked
// session from a live one: it says so (revocations_unavailable).
func (g *Gate) signedIn(req *Request) signedIn {
	sess, reason := g.cookies.read(req.HTTP, req.Start)
	if sess == nil {
		return signedIn{Reason: reason}
	}
	st, grantsErr := g.lookupGrants(req.HTTP.Context(), sess, req.Start)
	out := signedIn{Session: sess, Grants: st, GrantsErr: grantsErr}
	switch {
	case grantsErr && !g.cfg.Grants.Ready():
		out.Reason = authn.ReasonUnverified
	case st.Revoked(sess.Created):
		out.Reason = authn.ReasonRevoked
	case g.cfg.Grants.IdPSessionRevoked(sess.IdPSession):
		out.Reason = authn.ReasonEndedAtIdP
	}
	return out
}

// displayUser names a user in the store's records (who approved a
// request, who ended a grant): their email, else their subject. Pages
// name people with displayName.
func displayUser(s *authn.Session) string {
	if s.Email != "" {
		return s.Email
	}
	return s.Subject
}
