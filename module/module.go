// Package module is the Caddy glue of Gatehouse: the
// `http.handlers.gatehouse` handler (its JSON and Caddyfile
// configuration, one Validate, Provision and Cleanup), ServeHTTP, which
// hands each request to the Caddy-free pipeline in gate/ and turns the
// Outcome into the answer and the audit line, the admin API of the
// embedded grant store, and the `caddy gatehouse` subcommands. It holds
// no pipeline logic of its own.
package module

import (
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the Gatehouse identity-aware gate, `http.handlers.gatehouse`.
// Every request passes through it before reaching the next handler
// (usually reverse_proxy): it removes identity headers a client sent,
// answers Gatehouse's own endpoints under /.gatehouse/ (sign-in, logout,
// step-up, access requests, approvals), demands a live session (OIDC
// sign-in, idle timeout, absolute lifetime, revocations), applies the
// allow rules, the Rego policy with the user's JIT grants and the step-up
// rules, and sets the configured identity headers (and signed assertion)
// from the verified session. The pipeline itself is gate.Gate.
// and sets the configured identity headers from the verified session.
type Handler struct {
	// App names the protected application, in logs and the policy input.
	// The session cookie is bound to it. Required.
	App string `json:"app,omitempty"`

	// Issuer is the OpenID Provider's issuer URL; discovery reads
	// <issuer>/.well-known/openid-configuration on first use. HTTPS, or
	// HTTP on a loopback address for local testing. Required, unless
	// IdPs names the IdPs: Issuer, ClientID, ClientSecret, Scopes,
	// GroupsClaim and TrustUnverifiedEmail are the shorthand for one IdP
	// (named primary), and a configuration uses one form or the other.
	Issuer string `json:"issuer,omitempty"`

	// ClientID is this gateway's client registration at the IdP. Required
	// with Issuer.
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

	// IdPs are the identity providers users sign in with, when there are
	// several (or one named otherwise than primary), in the order the
	// sign-in page shows them. See IdP.
	IdPs []*IdP `json:"idps,omitempty"`

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

	// Bearer accepts access tokens (RFC 9068 JWTs) from machine clients
	// and apps calling on a person's behalf, one entry per issuer: a
	// request with Authorization: Bearer is checked with its token instead
	// of a session, and never redirected.
	Bearer []*Bearer `json:"bearer,omitempty"`

	// SCIM turns on the SCIM 2.0 service for an HR or IAM provisioning
	// system, which de-provisions leavers on every node.
	SCIM *SCIM `json:"scim,omitempty"`
	// PassAuthorization keeps a verified token's Authorization header for
	// the upstream; by default it is removed.
	PassAuthorization bool `json:"pass_authorization,omitempty"`

	// History is how long the grant store keeps the evidence of who had
	// what (grants, approvals, de-provisionings, revocations) for
	// `gatehouse gatehouse evidence export`. Default 400 days.
	History caddy.Duration `json:"history,omitempty"`

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

	// PolicyShadow is a directory of a candidate policy, decided beside
	// Policy on every request it decides and never enforced: each
	// request the candidate would decide otherwise is audited ("policy
	// shadow disagreed") and counted, off the request path
	// (docs/policy-changes.md). Loaded and watched like Policy, with its
	// query, timeout and cache settings.
	PolicyShadow string `json:"policy_shadow,omitempty"`

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

	// PagesDir is a directory whose layout.html, request.html,
	// access.html, approvals.html, resubmit.html, signin.html, reviews.html and
	// style.css, where present, replace Gatehouse's own page templates
	// (docs/pages.md). They are read and checked at start; placeholders
	// are resolved.
	PagesDir string `json:"pages_dir,omitempty"`

	// SupportContact says whom to ask for help ("IT helpdesk, ext. 4040,
	// help@corp.example"): shown on every error page, and in JSON error
	// answers as support.
	SupportContact string `json:"support_contact,omitempty"`

	// Reviews are the app's access reviews (docs/reviews.md).
	Reviews []*Review `json:"reviews,omitempty"`

	// PreservePost is the largest body (bytes) of a form posted after the
	// session idled out or reached its lifetime that is kept while the
	// user signs in again, then offered to send again (docs/forms.md):
	// 0 means 64 KiB, -1 keeps none. At most 1 MiB.
	PreservePost int64 `json:"preserve_post,omitempty"`

	logger   *zap.Logger
	auditLog *zap.Logger
	now      func() time.Time
	gate     *gate.Gate
	pages    *pages
	metrics  *appMetrics
	store    grants.Store // the grant store, for the history of evidential events
	pooled   []pooled     // usage-pool entries to release at Cleanup
	asserter *authn.Asserter
}

// Provision resolves placeholders, sets defaults, validates, and builds
// the gate with the shared parts it needs. It never touches the network:
// IdPs are discovered on first use.
// A failure names the app (the site's gatehouse block) and the directive.
func (h *Handler) Provision(ctx caddy.Context) error {
	err := h.provision(ctx, ctx.Logger())
	if err != nil && h.App != "" {
		return fmt.Errorf("app %s: %w", h.App, err)
	}
	return err
}

func (h *Handler) provision(ctx caddy.Context, logger *zap.Logger) error {
	h.logger = logger
	h.auditLog = h.logger.Named("audit")
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("gatehouse: metrics: %w", err)
	}
	if h.now == nil {
		h.now = time.Now
	}
	if err := h.resolvePlaceholders(); err != nil {
		return err
	}
	h.setDefaults()
	if err := h.Validate(); err != nil {
		return err
	}
	cfg, err := h.gateConfig(ctx)
	if err != nil {
		return err
	}
	if h.gate, err = gate.New(cfg); err != nil {
		return fmt.Errorf("gatehouse: %w", err)
	}
	if h.pages, err = newPages(pageOptions{Dir: h.PagesDir, App: h.App, Support: h.SupportContact, FormOrigins: h.formOrigins()}); err != nil {
		return err
	}
	h.metrics = newAppMetrics(h.App)
	h.store = cfg.Grants.Store()
	keepHistory(h.store, time.Duration(h.History))
	h.gate.Start() // usage records; stopped by Cleanup
	if h.gate.Everyone() {
		h.logger.Warn("EVERY AUTHENTICATED USER IS ALLOWED: no policy, allow_groups or allow_email_domains is configured",
			zap.String("app", h.App), zap.Strings("issuers", h.issuers()))
	}
	return nil
}

// Cleanup releases the handler's shares of the IdPs, grant store, policy
// engine and assertion keys. It works after a half-done Provision.
func (h *Handler) Cleanup() error {
	if h.gate != nil {
		h.gate.Close() // writes the last usage records while the store is still open
	}
	if h.asserter != nil {
		h.asserter.Release(time.Now())
		h.asserter = nil
	}
	var errs []error
	for _, p := range h.pooled {
		_, err := p.pool.Delete(p.key)
		errs = append(errs, err)
	}
	h.pooled = nil
	return errors.Join(errs...)
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
