// Package module is the Caddy glue of Gatehouse: module registration,
// Caddyfile and JSON configuration, the request pipeline in ServeHTTP,
// internal endpoints and pages, and the audit log. The behaviour itself
// lives in authn/ (and, later, grants/ and policies/).
package module

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/open-policy-agent/opa/v1/ast"
	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the Gatehouse identity-aware gate, `http.handlers.gatehouse`.
// Every request passes through it before reaching the next handler
// (usually reverse_proxy): it strips identity headers a client sent, routes
// Gatehouse's own endpoints under /.gatehouse/, demands a valid session
// (OIDC login, idle timeout, absolute lifetime), applies the allow rules,
// and sets the configured identity headers from the verified session.
type Handler struct {
	// App names the protected application, in logs and (later) policy
	// input. The session cookie is bound to it. Required.
	App string `json:"app,omitempty"`

	// Issuer is the OpenID Provider's issuer URL; discovery reads
	// <issuer>/.well-known/openid-configuration on first use. HTTPS, or
	// HTTP on a loopback address for local testing. Required.
	Issuer string `json:"issuer,omitempty"`

	// ClientID is this gateway's client registration at the IdP. Required.
	ClientID string `json:"client_id,omitempty"`

	// ClientSecret is the client's secret; empty for a public client (PKCE
	// protects the code either way). Placeholders such as {env.X} or
	// {file./run/secrets/x} are resolved at start.
	ClientSecret string `json:"client_secret,omitempty"`

	// Scopes requested at login. Default: openid email profile. Must
	// include openid.
	Scopes []string `json:"scopes,omitempty"`

	// GroupsClaim names the ID-token claim holding the user's groups; a
	// dotted path reaches into nested objects (realm_access.roles).
	// Default: groups.
	GroupsClaim string `json:"groups_claim,omitempty"`

	// CookieSecrets seal the session cookies. The first seals; all open,
	// so secrets rotate without logging anyone out. Each must be at least
	// 32 bytes; placeholders are resolved at start. Required.
	CookieSecrets []string `json:"cookie_secrets,omitempty"`

	// CookieName is the base name of Gatehouse's cookies. Default:
	// gatehouse. The session cookie is __Host-<name>, or __Secure-<name>
	// when CookieDomain is set.
	CookieName string `json:"cookie_name,omitempty"`

	// CookieDomain shares the session cookie with subdomains of this
	// domain. Empty (the default) keeps it on this host only (__Host-).
	CookieDomain string `json:"cookie_domain,omitempty"`

	// IdleTimeout ends a session after this long without user activity.
	// Default: 15m.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// IdleActivity says what counts as activity: "navigation" (default:
	// navigations the user made, and POST/PUT/PATCH/DELETE) or "any" (every
	// request, for single-page apps that need it).
	IdleActivity string `json:"idle_activity,omitempty"`

	// IdleIgnore lists paths (Caddy path-matcher syntax) whose requests
	// never count as activity, such as polling endpoints.
	IdleIgnore []string `json:"idle_ignore,omitempty"`

	// SessionLifetime ends a session this long after login, whatever the
	// activity. Default: 12h.
	SessionLifetime caddy.Duration `json:"session_lifetime,omitempty"`

	// IdentityHeaders are set on the request to the upstream after a
	// successful check. Incoming headers of these names are always
	// removed, whatever their case or spelling.
	IdentityHeaders []IdentityHeader `json:"identity_headers,omitempty"`

	// StripHeaders are further request headers to remove from every
	// request, like the identity headers of other gateways that are
	// removed by default (see the README). A trailing '*' matches a
	// prefix: X-Acme-User-*. Compared ignoring case and '_' vs '-'.
	StripHeaders []string `json:"strip_headers,omitempty"`

	// KeepHeaders exempts names (or prefixes, with a trailing '*') from
	// the default list of foreign identity headers that are removed, for
	// an app that really receives one of them from a trusted source in
	// front of Gatehouse. Gatehouse's own managed headers are always
	// removed.
	KeepHeaders []string `json:"keep_headers,omitempty"`

	// Public lists paths (Caddy path-matcher syntax) that need no login.
	// Managed headers are still stripped and an audit line is written.
	Public []string `json:"public,omitempty"`

	// AllowGroups admits users in any of these groups.
	AllowGroups []string `json:"allow_groups,omitempty"`

	// AllowEmailDomains admits users whose verified email is in one of
	// these domains (exact match, case-insensitive).
	AllowEmailDomains []string `json:"allow_email_domains,omitempty"`

	// ExternalURL is this site's public origin (https://app.example.com),
	// used for the callback and logout return URLs. Default: the scheme
	// and host of the request, which is fine when the site address names
	// the host.
	ExternalURL string `json:"external_url,omitempty"`

	// UpgradeOrigins are other origins (https://partner.example.com)
	// whose pages may open WebSockets and other protocol upgrades to this
	// site in a signed-in user's name. An upgrade whose Origin is neither
	// the site's own (external_url, else the request's) nor listed here is
	// refused with 403 cross_origin_upgrade. Default: none.
	UpgradeOrigins []string `json:"upgrade_origins,omitempty"`

	// TrustUnverifiedEmail uses the email claim even when email_verified
	// is not true. Only for IdPs that verify every address they issue.
	TrustUnverifiedEmail bool `json:"trust_unverified_email,omitempty"`

	// StepUp rules demand a stronger, fresh authentication on sensitive
	// paths. All rules whose paths match a request apply.
	StepUp []StepUpRule `json:"step_up,omitempty"`

	// Providers are second identity providers that step_up rules can send
	// users to (a national eID, a qualification attester), by name.
	Providers map[string]*Provider `json:"providers,omitempty"`

	// AssertionHeader adds a signed identity assertion (an ES256 JWT) to
	// upstream requests, besides the plain identity headers.
	AssertionHeader *Assertion `json:"assertion_header,omitempty"`

	// Grants is the grant store: file:///path (embedded, one node),
	// redis://… (shared by every node; also rediss://, Sentinel with
	// ?master_name=, redis+cluster://). Without it, an in-memory store:
	// one node, lost on restart.
	Grants string `json:"grants,omitempty"`

	// GrantsTimeout bounds every grant-store call made for a request.
	// Default: 50ms.
	GrantsTimeout caddy.Duration `json:"grants_timeout,omitempty"`

	// ApprovalStepUp is the step-up an approver needs before the
	// approvals page shows or accepts anything.
	ApprovalStepUp *StepUpRule `json:"approval_step_up,omitempty"`

	// Policy is a directory of Rego policies (and data.json/data.yaml),
	// evaluated on every request after login. It is watched: a valid
	// change is served at once, an invalid one is refused and logged.
	// Without it, every authenticated user passing the allow rules is
	// allowed.
	Policy string `json:"policy,omitempty"`

	// PolicyQuery is the decision query. Default: data.gatehouse.decision.
	PolicyQuery string `json:"policy_query,omitempty"`

	// PolicyHeaders are the only header names a decision may set. They are
	// stripped from every incoming request; a decision that sets another
	// name is a policy error (deny).
	PolicyHeaders []string `json:"policy_headers,omitempty"`

	// PolicyTimeout bounds one evaluation; past it the request is denied
	// with policy_error. Default: 100ms.
	PolicyTimeout caddy.Duration `json:"policy_timeout,omitempty"`

	// PolicyCache is how many decisions each policy revision keeps for
	// inputs that agree on every field the policy can read (see the
	// README): 0 means 10000, -1 turns the cache off.
	PolicyCache int `json:"policy_cache,omitempty"`

	// DecisionLog is "minimal" (default: the decision without its input)
	// or "full" (the whole policy input too, query values named in
	// redact_query masked, so that any decision can be replayed offline
	// with `gatehouse policy eval`).
	DecisionLog string `json:"decision_log,omitempty"`

	// InputHeaders are the request headers copied into the policy input
	// (input.request.headers, names in lowercase). Default: User-Agent.
	// Cookie, Authorization and managed headers are never copied.
	InputHeaders []string `json:"input_headers,omitempty"`

	// RedactQuery names query parameters whose values are masked in the
	// decision log. Default: code, state, token, access_token, id_token,
	// refresh_token, password, secret, key, api_key, session, sig,
	// signature.
	RedactQuery []string `json:"redact_query,omitempty"`

	logger   *zap.Logger
	auditLog *zap.Logger
	now      func() time.Time

	providerKey string
	provider    *providerEntry
	rp          *authn.RelyingParty

	sessions *authn.Sealer
	// sessionCache holds opened session cookies for the hot path.
	sessionCache *authn.OpenCache[authn.Session]
	pending      *authn.PendingLogins // logins in progress, in a few cookie slots
	idTokens     *authn.Sealer
	lifetimes    authn.Lifetimes

	sessionCookie     string
	loginCookiePrefix string
	idTokenCookie     string

	managed    managedHeaders
	identity   []identityHeader
	public     caddyhttp.MatchPath
	idleIgnore caddyhttp.MatchPath
	allGroups  map[string]struct{}
	domains    map[string]struct{}
	external   *url.URL
	upgradeOK  map[string]bool // upgrade_origins, normalized
	pages      *pages

	stepUps      []stepUpRule
	approvalReq  *authn.Requirement // approval_step_up, for the approvals page only
	providerKeys []string           // pool keys of second providers' discovery

	assertion    *assertionSigner
	assertionKey string

	storeKey   string
	cache      *grants.Cache
	grantsDown *atomic.Bool // the last grant lookup failed: log changes, not every request
	offers     *authn.Sealer
	csrf       *authn.CSRF

	engineKey         string
	engine            *policies.Engine
	policyHeaders     map[string]string // normalized name → canonical name
	inputHeaders      []string          // canonical names
	inputHeadersLower []string          // the same in lowercase, as the input names them
	redact            map[string]bool
}

// StepUpRule demands a stronger, fresh authentication on some paths.
type StepUpRule struct {
	// Paths in Caddy path-matcher syntax, matched against the canonical
	// path, case-insensitively.
	Paths []string `json:"paths"`
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

	rp *authn.RelyingParty
}

type stepUpRule struct {
	match caddyhttp.MatchPath
	req   authn.Requirement
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
	sessionCacheTTL        = time.Minute
	sessionCacheSize       = 8192
	defaultIdleTimeout     = 15 * time.Minute
	defaultSessionLifetime = 12 * time.Hour
	defaultCookieName      = "gatehouse"
	defaultGroupsClaim     = "groups"
)

var defaultScopes = []string{"openid", "email", "profile"}

// Provision resolves placeholders, sets defaults and builds the runtime
// state. It never touches the network: the IdP is discovered on first use.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.auditLog = h.logger.Named("audit")
	if h.now == nil {
		h.now = time.Now
	}
	repl := caddy.NewReplacer()
	h.Issuer = strings.TrimSpace(repl.ReplaceKnown(h.Issuer, ""))
	h.ClientID = repl.ReplaceKnown(h.ClientID, "")
	h.ClientSecret = repl.ReplaceKnown(h.ClientSecret, "")
	h.ExternalURL = repl.ReplaceKnown(h.ExternalURL, "")
	if h.AssertionHeader != nil {
		h.AssertionHeader.Issuer = repl.ReplaceKnown(h.AssertionHeader.Issuer, "")
	}
	h.CookieDomain = strings.TrimPrefix(repl.ReplaceKnown(h.CookieDomain, ""), ".")
	for i, s := range h.CookieSecrets {
		h.CookieSecrets[i] = repl.ReplaceKnown(s, "")
	}
	if h.IdleTimeout == 0 {
		h.IdleTimeout = caddy.Duration(defaultIdleTimeout)
	}
	if h.SessionLifetime == 0 {
		h.SessionLifetime = caddy.Duration(defaultSessionLifetime)
	}
	if h.CookieName == "" {
		h.CookieName = defaultCookieName
	}
	if h.GroupsClaim == "" {
		h.GroupsClaim = defaultGroupsClaim
	}
	if len(h.Scopes) == 0 {
		h.Scopes = append([]string(nil), defaultScopes...)
	}
	if h.IdleActivity == "" {
		h.IdleActivity = "navigation"
	}
	h.resolveProviders(repl)
	h.Grants = repl.ReplaceKnown(h.Grants, "")
	if h.GrantsTimeout == 0 {
		h.GrantsTimeout = caddy.Duration(50 * time.Millisecond)
	}
	h.Policy = repl.ReplaceKnown(h.Policy, "")
	if h.Policy != "" {
		if h.PolicyQuery == "" {
			h.PolicyQuery = policies.DefaultQuery
		}
		if h.PolicyTimeout == 0 {
			h.PolicyTimeout = caddy.Duration(100 * time.Millisecond)
		}
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
	if err := h.validate(); err != nil {
		return err
	}

	h.lifetimes = authn.Lifetimes{Idle: time.Duration(h.IdleTimeout), Lifetime: time.Duration(h.SessionLifetime)}
	binding := authn.Binding{App: h.App, Issuer: h.Issuer, ClientID: h.ClientID}
	secrets := make([][]byte, len(h.CookieSecrets))
	for i, s := range h.CookieSecrets {
		secrets[i] = []byte(s)
	}
	var err error
	// Sealed values outlive their cookie a little so that an expired
	// session still opens and can say why it ended (and force a fresh
	// login); Check decides validity.
	if h.sessions, err = authn.NewSealer(secrets, "session", binding, time.Duration(h.SessionLifetime)+expiredGrace); err != nil {
		return fmt.Errorf("gatehouse: cookie_secret: %w", err)
	}
	logins, err := authn.NewSealer(secrets, "login", binding, authn.LoginTTL)
	if err != nil {
		return fmt.Errorf("gatehouse: cookie_secret: %w", err)
	}
	hints, err := authn.NewSealer(secrets, "login-hint", binding, authn.LoginTTL)
	if err != nil {
		return fmt.Errorf("gatehouse: cookie_secret: %w", err)
	}
	if h.idTokens, err = authn.NewSealer(secrets, "id_token", binding, time.Duration(h.SessionLifetime)+expiredGrace); err != nil {
		return fmt.Errorf("gatehouse: cookie_secret: %w", err)
	}
	if h.offers, err = authn.NewSealer(secrets, "offer", binding, offerTTL); err != nil {
		return fmt.Errorf("gatehouse: cookie_secret: %w", err)
	}
	if h.csrf, err = authn.NewCSRF(secrets, binding); err != nil {
		return fmt.Errorf("gatehouse: cookie_secret: %w", err)
	}
	if h.CookieDomain == "" {
		h.sessionCookie = "__Host-" + h.CookieName
	} else {
		h.sessionCookie = "__Secure-" + h.CookieName
	}
	// An opened session cookie is trusted again for a minute.
	h.sessionCache = authn.NewOpenCache[authn.Session](h.sessions, h.sessionCookie, sessionCacheTTL, sessionCacheSize)
	h.loginCookiePrefix = "__Secure-" + h.CookieName + "_login_"
	h.pending = authn.NewPendingLogins(logins, hints, h.loginCookiePrefix)
	h.idTokenCookie = "__Secure-" + h.CookieName + "_idt"

	h.public = caddyhttp.MatchPath(h.Public)
	if err := h.public.Provision(ctx); err != nil {
		return err
	}
	h.idleIgnore = caddyhttp.MatchPath(h.IdleIgnore)
	if err := h.idleIgnore.Provision(ctx); err != nil {
		return err
	}
	h.allGroups = make(map[string]struct{}, len(h.AllowGroups))
	for _, g := range h.AllowGroups {
		h.allGroups[g] = struct{}{}
	}
	h.domains = make(map[string]struct{}, len(h.AllowEmailDomains))
	for _, d := range h.AllowEmailDomains {
		h.domains[strings.ToLower(strings.TrimPrefix(d, "@"))] = struct{}{}
	}
	var extra []string
	h.identity = h.identity[:0]
	names := make([]string, 0, len(h.IdentityHeaders))
	for _, ih := range h.IdentityHeaders {
		h.identity = append(h.identity, identityHeader{key: http.CanonicalHeaderKey(ih.Header), claim: ih.Claim})
		names = append(names, ih.Header)
		if !builtinClaims[ih.Claim] {
			extra = append(extra, ih.Claim)
		}
	}
	if h.AssertionHeader != nil {
		names = append(names, h.AssertionHeader.Header)
	}
	h.policyHeaders = make(map[string]string, len(h.PolicyHeaders))
	for _, ph := range h.PolicyHeaders {
		h.policyHeaders[normalizeHeaderName(ph)] = http.CanonicalHeaderKey(ph)
		names = append(names, ph)
	}
	h.managed = newManagedHeaders(names, append(append([]string(nil), defaultForeignHeaders...), h.StripHeaders...), h.KeepHeaders)
	h.inputHeaders, h.inputHeadersLower = h.inputHeaders[:0], h.inputHeadersLower[:0]
	for _, ih := range h.InputHeaders {
		h.inputHeaders = append(h.inputHeaders, http.CanonicalHeaderKey(ih))
		h.inputHeadersLower = append(h.inputHeadersLower, strings.ToLower(ih))
	}
	h.redact = make(map[string]bool, len(h.RedactQuery))
	for _, q := range h.RedactQuery {
		h.redact[q] = true
	}
	if h.ExternalURL != "" {
		h.external, _ = url.Parse(strings.TrimSuffix(h.ExternalURL, "/"))
	}
	h.upgradeOK = make(map[string]bool, len(h.UpgradeOrigins))
	for _, o := range h.UpgradeOrigins {
		n, _ := authn.NormalizeOrigin(o)
		h.upgradeOK[n] = true
	}
	if h.pages, err = newPages(); err != nil {
		return err
	}

	h.providerKey = h.Issuer
	val, _, err := providers.LoadOrNew(h.providerKey, func() (caddy.Destructor, error) {
		return &providerEntry{
			discovery: authn.NewDiscovery(h.Issuer, newIdPClient()),
			used:      authn.NewUsedStates(),
		}, nil
	})
	if err != nil {
		return err
	}
	h.provider = val.(*providerEntry)
	h.rp = &authn.RelyingParty{
		Discovery:            h.provider.discovery,
		HTTPClient:           h.provider.discovery.Client(),
		ClientID:             h.ClientID,
		ClientSecret:         h.ClientSecret,
		Scopes:               h.Scopes,
		GroupsClaim:          h.GroupsClaim,
		ExtraClaims:          append(extra, h.linkClaims()...),
		TrustUnverifiedEmail: h.TrustUnverifiedEmail,
		Now:                  h.now,
	}

	if err := h.provisionStepUp(ctx); err != nil {
		return err
	}
	if err := h.provisionGrants(); err != nil {
		return err
	}
	if err := h.provisionAssertion(); err != nil {
		return err
	}
	if h.Policy != "" {
		if err := h.provisionPolicy(); err != nil {
			return err
		}
	}

	if h.Policy == "" && len(h.AllowGroups) == 0 && len(h.AllowEmailDomains) == 0 {
		h.logger.Warn("EVERY AUTHENTICATED USER IS ALLOWED: no policy, allow_groups or allow_email_domains is configured",
			zap.String("app", h.App), zap.String("issuer", h.Issuer))
	}
	return nil
}

var (
	appNameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	cookieNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,48}$`)
	domainRE     = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$`)
)

// validate checks the configuration after placeholders are resolved and
// says, for each problem, which directive is wrong and how.
func (h *Handler) validate() error {
	var errs []error
	bad := func(directive, format string, args ...any) {
		errs = append(errs, fmt.Errorf("gatehouse: %s: "+format, append([]any{directive}, args...)...))
	}
	if h.App == "" {
		bad("app", "required: a short name for the protected application, such as payroll")
	} else if !appNameRE.MatchString(h.App) {
		bad("app", "%q must be 1-64 letters, digits, '.', '_' or '-'", h.App)
	}
	if h.Issuer == "" {
		bad("issuer", "required: the OpenID Provider's issuer URL (empty after placeholders?)")
	} else if err := checkOriginURL(h.Issuer, true); err != nil {
		bad("issuer", "%v", err)
	}
	if h.ClientID == "" {
		bad("client_id", "required (empty after placeholders?)")
	}
	if !containsString(h.Scopes, "openid") {
		bad("scopes", "must include openid")
	}
	if len(h.CookieSecrets) == 0 {
		bad("cookie_secret", "required: at least one secret of %d bytes or more (for example {env.GATEHOUSE_COOKIE_SECRET}; generate one with: openssl rand -base64 48)", authn.MinSecretLen)
	}
	for i, s := range h.CookieSecrets {
		if len(s) < authn.MinSecretLen {
			bad("cookie_secret", "secret #%d is %d bytes after placeholders; it must be at least %d (generate one with: openssl rand -base64 48)", i+1, len(s), authn.MinSecretLen)
		}
	}
	if !cookieNameRE.MatchString(h.CookieName) {
		bad("cookie_name", "%q must be 1-48 letters, digits, '_' or '-'", h.CookieName)
	}
	if h.CookieDomain != "" && !domainRE.MatchString(h.CookieDomain) {
		bad("cookie_domain", "%q is not a domain name", h.CookieDomain)
	}
	if time.Duration(h.IdleTimeout) < time.Second {
		bad("idle_timeout", "must be at least 1s, got %s", time.Duration(h.IdleTimeout))
	}
	if time.Duration(h.SessionLifetime) < time.Second {
		bad("session_lifetime", "must be at least 1s, got %s", time.Duration(h.SessionLifetime))
	}
	if h.IdleActivity != "navigation" && h.IdleActivity != "any" {
		bad("idle_activity", "%q must be navigation or any", h.IdleActivity)
	}
	seen := map[string]bool{}
	for _, ih := range h.IdentityHeaders {
		if err := checkManagedHeaderName(ih.Header); err != nil {
			bad("identity_header", "%v", err)
		}
		if ih.Claim == "" {
			bad("identity_header", "%s: claim is required", ih.Header)
		}
		n := normalizeHeaderName(ih.Header)
		if seen[n] {
			bad("identity_header", "%s is set twice (header names are compared ignoring case and '_' vs '-')", ih.Header)
		}
		seen[n] = true
	}
	for _, p := range h.Public {
		if err := checkPathPattern(p); err != nil {
			bad("public", "%v", err)
		}
	}
	for _, p := range h.IdleIgnore {
		if err := checkPathPattern(p); err != nil {
			bad("idle_ignore", "%v", err)
		}
	}
	for _, d := range h.AllowEmailDomains {
		if !domainRE.MatchString(strings.TrimPrefix(d, "@")) {
			bad("allow_email_domains", "%q is not a domain name", d)
		}
	}
	if h.ExternalURL != "" {
		if err := checkOriginURL(h.ExternalURL, false); err != nil {
			bad("external_url", "%v", err)
		}
	}
	for _, o := range h.UpgradeOrigins {
		if err := checkUpgradeOrigin(o); err != nil {
			bad("upgrade_origins", "%v", err)
		}
	}
	for _, ph := range h.PolicyHeaders {
		if err := checkManagedHeaderName(ph); err != nil {
			bad("policy_headers", "%v", err)
		}
		n := normalizeHeaderName(ph)
		if seen[n] {
			bad("policy_headers", "%s is already an identity or policy header", ph)
		}
		seen[n] = true
	}
	if h.Policy == "" && (len(h.PolicyHeaders) > 0 || h.PolicyQuery != "") {
		bad("policy", "policy_query and policy_headers need a policy directory")
	}
	if h.Policy != "" {
		if _, err := ast.ParseRef(h.PolicyQuery); err != nil {
			bad("policy_query", "%q is not a reference such as data.gatehouse.decision: %v", h.PolicyQuery, err)
		}
		if time.Duration(h.PolicyTimeout) < time.Millisecond {
			bad("policy_timeout", "must be at least 1ms")
		}
		if h.PolicyCache < -1 {
			bad("policy_cache", "must be a number of decisions, or -1 (off), got %d", h.PolicyCache)
		}
	}
	for _, n := range h.StripHeaders {
		if err := checkHeaderPattern(n); err != nil {
			bad("strip_headers", "%v", err)
		}
	}
	for _, n := range h.KeepHeaders {
		if err := checkHeaderPattern(n); err != nil {
			bad("keep_headers", "%v", err)
		}
		norm := normalizeHeaderName(n)
		if seen[norm] || (h.AssertionHeader != nil && norm == normalizeHeaderName(h.AssertionHeader.Header)) {
			bad("keep_headers", "%s is set by Gatehouse itself and is always removed from requests", n)
		}
	}
	h.validateStepUp(bad)
	h.validateAssertion(bad, seen)
	if time.Duration(h.GrantsTimeout) < time.Millisecond || time.Duration(h.GrantsTimeout) > 10*time.Second {
		bad("grants_timeout", "must be between 1ms and 10s, got %s", time.Duration(h.GrantsTimeout))
	}
	if _, err := grants.ParseURL(h.Grants); err != nil {
		bad("grants", "%q: want file:///path, redis://…, rediss://…, redis+cluster://… or memory: (%v)", redactURL(h.Grants), err)
	}
	if a := h.ApprovalStepUp; a != nil {
		if len(a.ACR) == 0 && len(a.AMR) == 0 && a.MaxAge == 0 && a.Provider == "" {
			bad("approval_step_up", "asks for nothing: give acr, amr, max_age or provider")
		}
		if a.Provider != "" && h.Providers[a.Provider] == nil {
			bad("approval_step_up", "provider %q is not configured", a.Provider)
		}
	}
	if h.DecisionLog != "minimal" && h.DecisionLog != "full" {
		bad("decision_log", "%q must be minimal or full", h.DecisionLog)
	}
	for _, ih := range h.InputHeaders {
		n := normalizeHeaderName(ih)
		switch {
		case checkManagedHeaderName(ih) != nil && n != "user-agent" && n != "accept" && n != "content-type":
			bad("input_headers", "%q cannot be copied into the policy input", ih)
		case seen[n]:
			bad("input_headers", "%q is a managed header; the policy sees the verified identity in input.user", ih)
		}
	}
	return errors.Join(errs...)
}

// checkUpgradeOrigin accepts an upgrade_origins entry.
func checkUpgradeOrigin(o string) error {
	if _, err := authn.NormalizeOrigin(o); err != nil {
		return fmt.Errorf("%q is not an origin: give scheme://host[:port], such as https://partner.example.com (no path, no wildcard, never null)", o)
	}
	return nil
}

// checkOriginURL accepts an absolute https URL (or http on loopback, for
// local testing) without userinfo, query or fragment; pathOK allows a
// path (an issuer may have one, an origin may not).
func checkOriginURL(raw string, pathOK bool) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", raw, err)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must be an absolute URL without userinfo, query or fragment", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopbackHost(u.Hostname()) {
			return fmt.Errorf("%q must use https (http is only allowed on loopback addresses, for testing)", raw)
		}
	default:
		return fmt.Errorf("%q must use https", raw)
	}
	if !pathOK && u.Path != "" && u.Path != "/" {
		return fmt.Errorf("%q must be an origin, without a path", raw)
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkPathPattern(p string) error {
	if p == "" || (p[0] != '/' && p[0] != '*') {
		return fmt.Errorf("path %q must start with / or *", p)
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Cleanup releases the shared IdP client and policy engine.
func (h *Handler) Cleanup() error {
	var errs []error
	if h.provider != nil {
		_, err := providers.Delete(h.providerKey)
		errs = append(errs, err)
	}
	for _, k := range h.providerKeys {
		_, err := providers.Delete(k)
		errs = append(errs, err)
	}
	h.providerKeys = nil
	if h.engine != nil {
		_, err := policyEngines.Delete(h.engineKey)
		errs = append(errs, err)
	}
	if h.cache != nil {
		_, err := grantStores.Delete(h.storeKey)
		errs = append(errs, err)
	}
	if h.assertion != nil {
		h.assertion.keys.release(h.assertion.kids, time.Now())
		_, err := assertionKeys.Delete(h.assertionKey)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
