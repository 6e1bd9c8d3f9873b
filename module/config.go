package module

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// The settings' own types and defaults, and how the configuration
// becomes the gate's: placeholders resolved, defaults set, Caddy's path
// matchers and the shared parts from the usage pools.

// StepUpRule demands a stronger, fresh authentication on some paths.
type StepUpRule struct {
	// Paths in Caddy path-matcher syntax, matched against the canonical
	// path, case-insensitively.
	Paths []string `json:"paths,omitempty"`
	// ACR lists the accepted authentication contexts (any one); sent to
	// the IdP as acr_values and checked on return.
	ACR []string `json:"acr,omitempty"`
	// AMR lists authentication methods that must all have been used.
	AMR []string `json:"amr,omitempty"`
	// MaxAge is how old that authentication may be; past it the user is
	// asked again while the session lives on. 0: any age.
	MaxAge caddy.Duration `json:"max_age,omitempty"`
	// Provider names a second identity provider (see Providers) to step
	// out to; empty is the primary IdP.
	Provider string `json:"provider,omitempty"`
}

// Bearer accepts one issuer's access tokens.
type Bearer struct {
	// Issuer is the token issuer's URL, discovered like the IdP's;
	// default: the primary IdP (issuer).
	Issuer string `json:"issuer,omitempty"`
	// Audiences are the aud values meant for this site; required.
	Audiences []string `json:"audiences"`
	// Algorithms accepted (RS256, ES256, …); default: what the issuer
	// announces. HS* and none are never accepted.
	Algorithms []string `json:"algorithms,omitempty"`
	// ScopesClaim holds the scopes: a space-separated string or a list;
	// default scope.
	ScopesClaim string `json:"scopes_claim,omitempty"`
	// RequireScopes must all be granted to the token, else 403
	// insufficient_scope.
	RequireScopes []string `json:"require_scopes,omitempty"`
	// GroupsClaim is a user token's groups claim; default: the primary
	// IdP's groups_claim for its tokens, else groups.
	GroupsClaim string `json:"groups_claim,omitempty"`
	// PlainJWT also accepts tokens typed JWT (or untyped), from issuers
	// that do not follow RFC 9068; ID tokens are still refused.
	PlainJWT bool `json:"plain_jwt,omitempty"`
	// DPoP "required" refuses tokens not bound to a key (RFC 9449).
	// Whatever it says, a token bound to a key (cnf.jkt) is only
	// accepted with a proof of that key.
	DPoP string `json:"dpop,omitempty"`
}

// check applies the rules a bearer block's own values must follow.
func (b *Bearer) check() error {
	if len(b.Audiences) == 0 {
		return errors.New("audience is required: the aud value(s) tokens for this site carry")
	}
	if b.DPoP != "" && b.DPoP != "required" && b.DPoP != "optional" {
		return fmt.Errorf("dpop must be required or optional, got %q", b.DPoP)
	}
	for _, a := range b.Algorithms {
		if !slices.Contains(bearerAlgorithms, a) {
			return fmt.Errorf("algorithm %q is not accepted (one of %s; never none or HS*)", a, strings.Join(bearerAlgorithms, ", "))
		}
	}
	if b.Issuer != "" && !strings.Contains(b.Issuer, "{") {
		if err := checkOriginURL(b.Issuer, true); err != nil {
			return fmt.Errorf("issuer: %v", err)
		}
	}
	return nil
}

// bearerAlgorithms are the signing algorithms a bearer block may list.
var bearerAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Provider is a second identity provider for step-outs.
type Provider struct {
	Issuer       string `json:"issuer"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret,omitempty"`
	// Scopes requested; default openid.
	Scopes []string `json:"scopes,omitempty"`
	// LinkClaim must have the same value in this provider's ID token and
	// in the session (email compares verified addresses only) for the
	// result to be linked to the session.
	LinkClaim string `json:"link_claim"`
	// Claims are kept from this provider's ID token and shown to the
	// policy under input.user.verifications.<name>, with acr and
	// auth_time. Nothing else is kept.
	Claims []string `json:"claims,omitempty"`
	// TrustUnverifiedEmail uses an email this provider does not mark as
	// verified (for the email link claim).
	TrustUnverifiedEmail bool `json:"trust_unverified_email,omitempty"`
}

// Assertion configures a signed identity assertion for the upstream: a
// short-lived ES256 JWT whose audience is the app, carrying only the
// listed claims. Apps verify it with the keys at /.gatehouse/jwks.json.
type Assertion struct {
	// Header carries the JWT, such as X-Gatehouse-Assertion. Incoming
	// headers of this name are always removed.
	Header string `json:"header"`
	// Keys are PEM files of EC P-256 private keys. The first signs; the
	// others are only published (keep an old key listed until tokens it
	// signed have expired). Placeholders are resolved.
	Keys []string `json:"keys"`
	// Claims are the user claims the JWT carries (sub, idp, email, name,
	// groups, acr, amr, auth_time, or any claim an identity header could
	// use); iss, aud, iat, nbf and exp are always set.
	Claims []string `json:"claims"`
	// TTL is the JWT's lifetime. Default: 60s.
	TTL caddy.Duration `json:"ttl,omitempty"`
	// Issuer is the JWT's iss, an origin such as https://app.example.com.
	// Default: external_url. One of the two is required: the request's
	// Host is the client's to choose, so it cannot name the issuer.
	Issuer string `json:"issuer,omitempty"`
}

// IdentityHeader sets one request header from one claim of the session.
type IdentityHeader struct {
	// Header is the header name, such as X-Remote-User.
	Header string `json:"header"`
	// Claim is sub, iss, email, name, groups (comma-separated), acr, amr
	// (comma-separated), auth_time, or any other ID-token claim (kept in
	// the session for this purpose).
	Claim string `json:"claim"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.gatehouse",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Defaults.
const (
	defaultIdleTimeout     = 15 * time.Minute
	defaultSessionLifetime = 12 * time.Hour
	defaultCookieName      = "gatehouse"
	defaultGroupsClaim     = "groups"
	defaultGrantsTimeout   = 50 * time.Millisecond
	defaultPolicyTimeout   = 100 * time.Millisecond
	defaultAssertionTTL    = time.Minute
)

var (
	defaultScopes      = []string{"openid", "email", "profile"}
	defaultRedactQuery = []string{"code", "state", "token", "access_token", "id_token", "refresh_token",
		"password", "secret", "key", "api_key", "session", "sig", "signature"}
)

// resolvePlaceholders resolves {env.*} and {file.*} in the settings that
// take them, once, at start. A setting written as a placeholder that
// resolves to nothing (an unset variable, an empty file) is an error
// naming both: it would otherwise turn into a quiet default, such as a
// client without its secret whose every login the IdP refuses, or no
// policy at all.
func (h *Handler) resolvePlaceholders() error {
	repl := caddy.NewReplacer()
	var empty []string
	resolve := func(setting string, s *string) {
		written := *s
		*s = repl.ReplaceKnown(*s, "")
		if strings.TrimSpace(*s) == "" && strings.Contains(written, "{") {
			name := written
			if v, ok := strings.CutPrefix(strings.Trim(written, "{}"), "env."); ok {
				name = written + " (set " + v + ")"
			}
			empty = append(empty, setting+" "+name)
		}
	}
	for setting, s := range map[string]*string{"issuer": &h.Issuer, "client_id": &h.ClientID, "client_secret": &h.ClientSecret,
		"external_url": &h.ExternalURL, "cookie_domain": &h.CookieDomain, "grants": &h.Grants, "policy": &h.Policy, "policy_shadow": &h.PolicyShadow,
		"pages_dir": &h.PagesDir, "support_contact": &h.SupportContact} {
		resolve(setting, s)
	}
	h.Issuer = strings.TrimSpace(h.Issuer)
	h.CookieDomain = strings.TrimPrefix(h.CookieDomain, ".")
	for i := range h.CookieSecrets {
		resolve("cookie_secret", &h.CookieSecrets[i])
	}
	if a := h.AssertionHeader; a != nil {
		resolve("assertion_header issuer", &a.Issuer)
		for i := range a.Keys {
			resolve("assertion_header key", &a.Keys[i])
		}
	}
	for _, b := range h.Bearer {
		if b != nil {
			resolve("bearer issuer", &b.Issuer)
			b.Issuer = strings.TrimSpace(b.Issuer)
		}
	}
	for _, p := range h.IdPs {
		if p != nil {
			resolve("idp "+p.Name+" issuer", &p.Issuer)
			resolve("idp "+p.Name+" client_id", &p.ClientID)
			resolve("idp "+p.Name+" client_secret", &p.ClientSecret)
			p.Issuer = strings.TrimSpace(p.Issuer)
		}
	}
	for name, p := range h.Providers {
		if p != nil {
			resolve("provider "+name+" issuer", &p.Issuer)
			resolve("provider "+name+" client_id", &p.ClientID)
			resolve("provider "+name+" client_secret", &p.ClientSecret)
			p.Issuer = strings.TrimSpace(p.Issuer)
		}
	}
	h.resolveSCIM(resolve)
	if len(empty) > 0 {
		sort.Strings(empty)
		return fmt.Errorf("gatehouse: a placeholder resolved to nothing: %s", strings.Join(empty, "; "))
	}
	return nil
}

// setDefaults fills in what the configuration leaves out.
func (h *Handler) setDefaults() {
	setDuration := func(d *caddy.Duration, def time.Duration) {
		if *d == 0 {
			*d = caddy.Duration(def)
		}
	}
	setDuration(&h.IdleTimeout, defaultIdleTimeout)
	setDuration(&h.SessionLifetime, defaultSessionLifetime)
	setDuration(&h.GrantsTimeout, defaultGrantsTimeout)
	setDuration(&h.History, grants.DefaultHistory)
	if h.CookieName == "" {
		h.CookieName = defaultCookieName
	}
	if len(h.IdPs) == 0 {
		if h.GroupsClaim == "" {
			h.GroupsClaim = defaultGroupsClaim
		}
		if len(h.Scopes) == 0 {
			h.Scopes = append([]string(nil), defaultScopes...)
		}
	}
	for _, p := range h.IdPs {
		if p == nil {
			continue
		}
		if p.GroupsClaim == "" {
			p.GroupsClaim = defaultGroupsClaim
		}
		if len(p.Scopes) == 0 {
			p.Scopes = append([]string(nil), defaultScopes...)
		}
	}
	if h.IdleActivity == "" {
		h.IdleActivity = "navigation"
	}
	if h.Policy != "" {
		if h.PolicyQuery == "" {
			h.PolicyQuery = policies.DefaultQuery
		}
		setDuration(&h.PolicyTimeout, defaultPolicyTimeout)
	}
	if h.DecisionLog == "" {
		h.DecisionLog = "minimal"
	}
	if len(h.InputHeaders) == 0 {
		h.InputHeaders = []string{"User-Agent"}
	}
	if len(h.RedactQuery) == 0 {
		h.RedactQuery = append([]string(nil), defaultRedactQuery...)
	}
	if a := h.AssertionHeader; a != nil {
		setDuration(&a.TTL, defaultAssertionTTL)
	}
	if h.PreservePost == 0 {
		h.PreservePost = gate.DefaultPreservePost
	}
	for _, r := range h.Reviews {
		if r != nil {
			r.setDefaults()
		}
	}
}

// gateConfig turns the validated configuration into the gate's, with
// the shared parts from the usage pools and Caddy's path matchers.
func (h *Handler) gateConfig(ctx caddy.Context) (gate.Config, error) {
	cfg := gate.Config{
		App: h.App, Issuer: h.Issuer, ClientID: h.ClientID, ClientSecret: h.ClientSecret, Scopes: h.Scopes,
		GroupsClaim: h.GroupsClaim, TrustUnverifiedEmail: h.TrustUnverifiedEmail,
		CookieName: h.CookieName, CookieDomain: h.CookieDomain,
		Lifetimes:      authn.Lifetimes{Idle: time.Duration(h.IdleTimeout), Lifetime: time.Duration(h.SessionLifetime)},
		IdleAnyRequest: h.IdleActivity == "any",
		StripHeaders:   h.StripHeaders, KeepHeaders: h.KeepHeaders, PolicyHeaders: h.PolicyHeaders,
		AllowGroups: h.AllowGroups, AllowEmailDomains: h.AllowEmailDomains,
		ExternalURL: h.ExternalURL, UpgradeOrigins: h.UpgradeOrigins,
		DecisionLogFull: h.DecisionLog == "full", InputHeaders: h.InputHeaders, RedactQuery: h.RedactQuery,
		PreservePost: max(h.PreservePost, 0), Logger: h.logger, Now: h.now,
	}
	for _, s := range h.CookieSecrets {
		cfg.CookieSecrets = append(cfg.CookieSecrets, []byte(s))
	}
	for _, ih := range h.IdentityHeaders {
		cfg.IdentityHeaders = append(cfg.IdentityHeaders, gate.IdentityHeader{Header: ih.Header, Claim: ih.Claim})
	}
	var err error
	if cfg.Public, err = pathMatcher(ctx, h.Public); err != nil {
		return cfg, err
	}
	if cfg.IdleIgnore, err = pathMatcher(ctx, h.IdleIgnore); err != nil {
		return cfg, err
	}
	for _, r := range h.StepUp {
		m, err := pathMatcher(ctx, r.Paths)
		if err != nil {
			return cfg, err
		}
		cfg.StepUp = append(cfg.StepUp, authn.StepUpRule{Paths: m, Requirement: r.requirement()})
	}
	if a := h.ApprovalStepUp; a != nil {
		need := a.requirement()
		cfg.ApprovalStepUp = &need
	}
	if len(h.IdPs) > 0 {
		if cfg.IdPs, err = h.gateIdPs(); err != nil {
			return cfg, err
		}
	} else if cfg.IdP, err = h.idp(h.Issuer); err != nil {
		return cfg, err
	}
	names := make([]string, 0, len(h.Providers))
	for name := range h.Providers {
		names = append(names, name)
	}
	sort.Strings(names)
	cfg.Providers = make(map[string]*gate.Provider, len(names))
	for _, name := range names {
		p := h.Providers[name]
		idp, err := h.idp(p.Issuer)
		if err != nil {
			return cfg, err
		}
		cfg.Providers[name] = &gate.Provider{Issuer: p.Issuer, ClientID: p.ClientID, ClientSecret: p.ClientSecret, Scopes: p.Scopes,
			LinkClaim: p.LinkClaim, Claims: p.Claims, TrustUnverifiedEmail: p.TrustUnverifiedEmail, IdP: idp}
	}
	seen := map[string]bool{}
	for _, b := range h.Bearer {
		iss := h.bearerIssuer(b)
		if seen[iss] {
			return cfg, fmt.Errorf("gatehouse: bearer: two blocks for the issuer %s", iss)
		}
		seen[iss] = true
		idp, err := h.idp(iss)
		if err != nil {
			return cfg, err
		}
		groups := b.GroupsClaim
		if groups == "" && iss == h.Issuer {
			groups = h.GroupsClaim
		}
		for _, p := range h.IdPs {
			if groups == "" && p != nil && p.Issuer == iss {
				groups = p.GroupsClaim
			}
		}
		cfg.Bearer = append(cfg.Bearer, &authn.BearerIssuer{Discovery: idp.Discovery, Audiences: b.Audiences, Algorithms: b.Algorithms,
			ScopesClaim: b.ScopesClaim, RequireScopes: b.RequireScopes, PlainJWT: b.PlainJWT, GroupsClaim: firstNonEmpty(groups, "groups"),
			DPoPRequired: b.DPoP == "required",
			Now:          h.now})
	}
	cfg.PassAuthorization = h.PassAuthorization
	cfg.SCIM = h.gateSCIM()
	h.reviewConfig(&cfg)
	if cfg.Grants, err = h.grantCache(); err != nil {
		return cfg, err
	}
	if cfg.Policy, err = h.policyEngine(); err != nil {
		return cfg, err
	}
	if cfg.PolicyShadow, err = h.policyShadow(); err != nil {
		return cfg, err
	}
	if cfg.PolicyShadow != nil {
		cfg.OnShadow = h.shadowVerdicts()
	}
	if a := h.AssertionHeader; a != nil {
		if err := h.assertion(&cfg, a); err != nil {
			return cfg, fmt.Errorf("gatehouse: assertion_header: %w", err)
		}
	}
	return cfg, nil
}

// assertion loads the assertion's keys and publishes them.
func (h *Handler) assertion(cfg *gate.Config, a *Assertion) error {
	ac := authn.AssertionConfig{Audience: h.App, Claims: a.Claims, TTL: time.Duration(a.TTL)}
	var err error
	if ac.Issuer, err = authn.NormalizeOrigin(firstNonEmpty(a.Issuer, h.ExternalURL)); err != nil {
		return fmt.Errorf("issuer: %v", err)
	}
	for _, path := range a.Keys {
		key, err := authn.LoadECKey(path)
		if err != nil {
			return fmt.Errorf("key: %v", err)
		}
		ac.Keys = append(ac.Keys, key)
	}
	if cfg.PublishedKeys, err = h.publishedKeys(); err != nil {
		return err
	}
	if h.asserter, err = authn.NewAsserter(ac, cfg.PublishedKeys); err != nil {
		return err
	}
	cfg.AssertionHeader, cfg.Asserter = a.Header, h.asserter
	return nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// bearerIssuer is the issuer a bearer block accepts tokens of: its own,
// else the one IdP users sign in at ("" with several: Validate refuses
// that).
func (h *Handler) bearerIssuer(b *Bearer) string {
	if b.Issuer != "" {
		return b.Issuer
	}
	if iss := h.issuers(); len(iss) == 1 {
		return iss[0]
	}
	return ""
}

// issuers are the issuers users sign in at: the idp blocks', or the
// one issuer.
func (h *Handler) issuers() []string {
	if len(h.IdPs) == 0 {
		return []string{h.Issuer}
	}
	out := make([]string, 0, len(h.IdPs))
	for _, p := range h.IdPs {
		out = append(out, p.Issuer)
	}
	return out
}

// formOrigins are the IdPs' origins, where the pages' forms may be
// redirected (the CSP's form-action): the sign-in page's forms go on
// to the IdP chosen.
func (h *Handler) formOrigins() []string {
	issuers := h.issuers()
	for _, p := range h.Providers {
		if p != nil {
			issuers = append(issuers, p.Issuer)
		}
	}
	var out []string
	for _, iss := range issuers {
		if u, err := url.Parse(iss); err == nil && u.Host != "" && !slices.Contains(out, u.Scheme+"://"+u.Host) {
			out = append(out, u.Scheme+"://"+u.Host)
		}
	}
	sort.Strings(out)
	return out
}

// requirement is the rule's requirement, without its paths.
func (r StepUpRule) requirement() authn.Requirement {
	return authn.Requirement{Provider: r.Provider, ACR: r.ACR, AMR: r.AMR, MaxAge: time.Duration(r.MaxAge)}
}

// paths is Caddy's path matcher as the gate asks for one: the request it
// is given carries the canonical path.
type paths caddyhttp.MatchPath

func (m paths) MatchPath(r *http.Request) bool { return caddyhttp.MatchPath(m).Match(r) }

// pathMatcher provisions Caddy's path matcher for patterns; nil for none.
func pathMatcher(ctx caddy.Context, patterns []string) (authn.PathMatcher, error) {
	if len(patterns) == 0 {
		return nil, nil
	}
	m := caddyhttp.MatchPath(append([]string(nil), patterns...))
	if err := m.Provision(ctx); err != nil {
		return nil, err
	}
	return paths(m), nil
}
