// Package gate is Gatehouse's request pipeline and its own endpoints,
// free of any web server. Handle decides one request and returns an
// Outcome: a path upstreams may read differently is refused, the
// endpoints under /.gatehouse/ (login, callback, logout, step-up, access
// requests, "my access", approvals, health, key set) each answer, public
// paths pass, and Check decides everything else (session, revocations,
// grants, allow rules, policy, step-up, identity headers). The server
// (the Caddy module) only strips headers, builds a Request, and turns the
// Outcome into the HTTP answer and the audit line.
//
// It composes authn (sign-in and sessions), grants (JIT grants and
// revocations) and policies (Rego decisions).
package gate

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// Config is one protected site's configuration, checked and with its
// defaults set (the module's Validate does both), and the shared parts
// it runs with (IdP discovery, grant store, policy engine).
type Config struct {
	App string // the protected app's name, in logs, policy input and cookie binding

	// The one IdP users sign in with, when IdPs is empty: the shorthand
	// for an IdPs entry named primary.
	Issuer               string // the IdP's issuer URL
	ClientID             string
	ClientSecret         string // empty for a public client
	Scopes               []string
	GroupsClaim          string // a dotted path into the ID token
	TrustUnverifiedEmail bool
	// IdP is that IdP's discovery and used-state record, shared with
	// every site of the same issuer.
	IdP IdP

	// IdPs are the IdPs users sign in with, when there are several (or
	// one named otherwise than primary); the settings above are then
	// left empty.
	IdPs []IdPConfig
	// Providers are second IdPs that step-up rules can send users to.
	Providers map[string]*Provider

	CookieSecrets [][]byte // the first seals; all open
	CookieName    string   // base name of every cookie
	CookieDomain  string   // "" keeps cookies on this host (__Host-)
	Lifetimes     authn.Lifetimes
	// IdleAnyRequest counts every request as activity, not only the
	// user's navigations and form posts.
	IdleAnyRequest bool
	// IdleIgnore and Public match paths whose requests never count as
	// activity, and that need no session; nil matches nothing.
	IdleIgnore, Public authn.PathMatcher

	IdentityHeaders []IdentityHeader
	StripHeaders    []string // further headers (or prefixes, X-A-*) removed from every request
	KeepHeaders     []string // foreign identity headers not removed
	PolicyHeaders   []string // the only names a decision may set
	// AssertionHeader carries the Asserter's signed assertion.
	AssertionHeader string
	Asserter        *authn.Asserter
	// PublishedKeys are served at /.gatehouse/jwks.json; nil publishes an
	// empty set.
	PublishedKeys *authn.PublishedKeys

	AllowGroups       []string
	AllowEmailDomains []string
	// ExternalURL is this site's public origin; "" means the request's.
	ExternalURL    string
	UpgradeOrigins []string

	// Bearer are the issuers whose access tokens (RFC 9068) machine
	// clients may present instead of a session; none: a bearer token is
	// not Gatehouse's and passes as before.
	Bearer []*authn.BearerIssuer
	// PassAuthorization keeps a verified bearer token's Authorization
	// header for the upstream; by default it is removed.
	PassAuthorization bool

	StepUp         authn.StepUpRules
	ApprovalStepUp *authn.Requirement // for the approvals and reviews pages

	// Reviews are the app's access reviews (reviews.go).
	Reviews []ReviewConfig
	// OnEvent receives the audit events nothing but the gate's own
	// schedule caused (a review opened, on_timeout applied).
	OnEvent func(Event)
	// OnReviewItems is told, at each check of the reviews' schedule, how
	// many items of each review's open campaigns nobody decided yet.
	OnReviewItems func(review string, open int)

	// SCIM turns on the SCIM 2.0 service for a provisioning system
	// (PathSCIM); nil: off.
	SCIM *SCIMConfig

	Grants *grants.Cache    // required: a memory store at least
	Policy *policies.Engine // nil: no policy
	// PolicyShadow decides every request Policy decides with a candidate
	// policy, never enforced (docs/policy-changes.md); nil: none.
	// OnShadow receives each verdict: a dropped one on the request path
	// (it must be quick), a decided one on a shadow worker.
	PolicyShadow *policies.Shadow
	OnShadow     func(ShadowVerdict)

	// PreservePost is the largest body of a form posted after the session
	// ended that is kept while its user signs in again (bytes); 0 keeps
	// none (docs/forms.md).
	PreservePost int64

	DecisionLogFull bool     // the decision line carries the whole input
	InputHeaders    []string // copied into input.request.headers
	RedactQuery     []string // query parameters masked in the decision log

	// Logger receives operational messages (an IdP down, a policy
	// error), never the audit lines: those are in each Outcome.
	Logger *zap.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// IdP is an identity provider's shared state: its discovery cache and
// HTTP client, and the login states it has seen used.
type IdP struct {
	Discovery *authn.Discovery
	Used      *authn.UsedStates
}

// Provider is a second identity provider for step-outs.
type Provider struct {
	Issuer, ClientID, ClientSecret string
	Scopes                         []string // default openid
	// LinkClaim must have the same value in this provider's ID token and
	// in the session (email compares verified addresses only).
	LinkClaim string
	// Claims are kept from this provider's ID token for the policy.
	Claims               []string
	TrustUnverifiedEmail bool
	IdP                  IdP

	rp *authn.RelyingParty
}

// IdentityHeader sets one upstream request header from one claim.
type IdentityHeader struct {
	Header string
	Claim  string // sub, iss, email, name, groups, acr, amr, auth_time, or another ID-token claim
}

// Gate runs one site's pipeline and endpoints. It is safe for concurrent
// use.
type Gate struct {
	cfg Config
	now func() time.Time
	log *zap.Logger

	idps    []*signInIdP // in the order of the configuration; the sign-in page shows them so
	cookies *cookies
	offers  *authn.Sealer
	csrf    *authn.CSRF
	forms   *formKeeper

	managed    managedHeaders
	identity   []IdentityHeader // names in canonical form
	assertion  string           // the assertion header's name, canonical
	allGroups  map[string]bool
	domains    map[string]bool
	external   *url.URL
	upgradeOK  map[string]bool // upgrade_origins, normalized
	policyHdrs map[string]string
	inputHdrs  []string // canonical
	inputLower []string
	redact     map[string]bool
	grantsDown atomic.Bool // the last grant lookup failed: log changes, not every request
	ready      readiness
	shadowState
	usage      *usageRecorder // usage.go
	reviews    reviewState    // reviews.go
	background background     // background.go
}

// builtinClaims are the claims every session holds; others named by an
// identity header or a link claim are kept in Session.Extra.
var builtinClaims = map[string]bool{
	"sub": true, "iss": true, "email": true, "name": true, "groups": true,
	"acr": true, "amr": true, "auth_time": true,
}

// New builds a Gate. It never touches the network: IdPs are discovered on
// first use.
func New(cfg Config) (*Gate, error) {
	if cfg.Grants == nil {
		return nil, errors.New("gate: a grant store is required (grants.NewCache of a memory store at least)")
	}
	g := &Gate{cfg: cfg, now: cfg.Now, log: cfg.Logger}
	if cfg.PolicyShadow != nil {
		g.shadowRep = &shadowReporter{g}
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.log == nil {
		g.log = zap.NewNop()
	}
	var extra []string
	for _, ih := range cfg.IdentityHeaders {
		if !builtinClaims[ih.Claim] {
			extra = append(extra, ih.Claim)
		}
	}
	var err error
	if g.idps, err = signInIdPs(&cfg, g.now, append(extra, linkClaims(cfg.Providers)...)); err != nil {
		return nil, err
	}
	binding := siteBinding(cfg.App, g.idps)
	if g.cookies, err = newCookies(cfg, binding, g.idps); err != nil {
		return nil, err
	}
	if g.offers, err = authn.NewSealer(cfg.CookieSecrets, "offer", binding, offerTTL); err != nil {
		return nil, fmt.Errorf("gate: cookie secret: %w", err)
	}
	if g.csrf, err = authn.NewCSRF(cfg.CookieSecrets, binding); err != nil {
		return nil, fmt.Errorf("gate: cookie secret: %w", err)
	}
	if g.forms, err = newFormKeeper(cfg, binding); err != nil {
		return nil, fmt.Errorf("gate: cookie secret: %w", err)
	}

	var managed []string
	for _, ih := range cfg.IdentityHeaders {
		g.identity = append(g.identity, IdentityHeader{Header: http.CanonicalHeaderKey(ih.Header), Claim: ih.Claim})
		managed = append(managed, ih.Header)
	}
	if cfg.AssertionHeader != "" {
		managed = append(managed, cfg.AssertionHeader)
		g.assertion = http.CanonicalHeaderKey(cfg.AssertionHeader)
	}
	g.policyHdrs = make(map[string]string, len(cfg.PolicyHeaders))
	for _, ph := range cfg.PolicyHeaders {
		g.policyHdrs[NormalizeHeaderName(ph)] = http.CanonicalHeaderKey(ph)
		managed = append(managed, ph)
	}
	g.managed = newManagedHeaders(managed, append(slices.Clone(DefaultForeignHeaders), cfg.StripHeaders...), cfg.KeepHeaders)
	for _, ih := range cfg.InputHeaders {
		g.inputHdrs = append(g.inputHdrs, http.CanonicalHeaderKey(ih))
		g.inputLower = append(g.inputLower, strings.ToLower(ih))
	}
	g.usage = newUsageRecorder(cfg.App, cfg.Grants.Store, UsageMaxEntries, g.log)
	g.redact = make(map[string]bool, len(cfg.RedactQuery))
	for _, q := range cfg.RedactQuery {
		g.redact[q] = true
	}
	g.allGroups = make(map[string]bool, len(cfg.AllowGroups))
	for _, grp := range cfg.AllowGroups {
		g.allGroups[grp] = true
	}
	g.domains = make(map[string]bool, len(cfg.AllowEmailDomains))
	for _, d := range cfg.AllowEmailDomains {
		g.domains[strings.ToLower(strings.TrimPrefix(d, "@"))] = true
	}
	if cfg.ExternalURL != "" {
		if g.external, err = url.Parse(strings.TrimSuffix(cfg.ExternalURL, "/")); err != nil {
			return nil, fmt.Errorf("gate: external URL: %w", err)
		}
	}
	g.upgradeOK = make(map[string]bool, len(cfg.UpgradeOrigins))
	for _, o := range cfg.UpgradeOrigins {
		n, err := authn.NormalizeOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("gate: upgrade origin %q: %w", o, err)
		}
		g.upgradeOK[n] = true
	}

	for name, p := range cfg.Providers {
		if p == nil || p.IdP.Discovery == nil {
			return nil, fmt.Errorf("gate: provider %s: no discovery", name)
		}
		scopes := p.Scopes
		if len(scopes) == 0 {
			scopes = []string{"openid"}
		}
		claims := slices.Clone(p.Claims)
		if p.LinkClaim != "email" {
			claims = append(claims, p.LinkClaim)
		}
		p.rp = &authn.RelyingParty{
			Discovery: p.IdP.Discovery, HTTPClient: p.IdP.Discovery.Client(),
			ClientID: p.ClientID, ClientSecret: p.ClientSecret, Scopes: scopes,
			ExtraClaims: claims, TrustUnverifiedEmail: p.TrustUnverifiedEmail, Now: g.now,
		}
	}
	return g, nil
}

// siteBinding is what the site's short-lived seals (sign-in states,
// offers, form tokens) are bound to: the app and its IdPs. With one IdP
// it is that IdP's binding, as it was before IdPs had names.
func siteBinding(app string, idps []*signInIdP) authn.Binding {
	sorted := slices.Clone(idps)
	slices.SortFunc(sorted, func(a, b *signInIdP) int { return strings.Compare(a.Issuer, b.Issuer) })
	var issuers, clients []string
	for _, p := range sorted {
		issuers, clients = append(issuers, p.Issuer), append(clients, p.ClientID)
	}
	return authn.Binding{App: app, Issuer: strings.Join(issuers, " "), ClientID: strings.Join(clients, " ")}
}

// linkClaims are the session claims second providers link on; the
// primary sign-in keeps them.
func linkClaims(providers map[string]*Provider) []string {
	var out []string
	for _, p := range providers {
		if p != nil && p.LinkClaim != "email" && !builtinClaims[p.LinkClaim] && !slices.Contains(out, p.LinkClaim) {
			out = append(out, p.LinkClaim)
		}
	}
	sort.Strings(out)
	return out
}

// Everyone reports whether every signed-in user is allowed: no policy and
// no allow rule (the module warns loudly at start).
func (g *Gate) Everyone() bool {
	return g.cfg.Policy == nil && len(g.allGroups) == 0 && len(g.domains) == 0
}

// Request is one request as the gate needs it. The server fills it from
// what only it knows: the request-target before any rewrite, the client's
// address and whether the peer is a trusted proxy.
type Request struct {
	// HTTP is the request as it will go upstream; the gate sets nothing
	// on it (Upstream headers are in the Outcome).
	HTTP *http.Request
	// Target is the request-target as the client sent it, before any
	// rewrite in front of the gate; "" means HTTP.RequestURI.
	Target string
	// ClientIP is the client's address as the server established it.
	ClientIP string
	// TrustedProxy says the peer is a trusted proxy, whose
	// X-Forwarded-Proto and X-Forwarded-Host name this site's origin.
	TrustedProxy bool
	// Start is when the request arrived.
	Start time.Time

	path      string        // canonical, set by Handle
	matchable *http.Request // HTTP with the canonical path, made on first use
}

// Path is the request's canonical path (after Handle).
func (r *Request) Path() string { return r.path }

// forMatch is the request as path matchers see it: with its canonical
// path. Most requests never need the copy.
func (r *Request) forMatch() *http.Request {
	if r.matchable == nil {
		r.matchable = withPath(r.HTTP, r.path)
	}
	return r.matchable
}

// withPath returns a shallow copy of r whose path is canonical.
func withPath(r *http.Request, canonical string) *http.Request {
	u := *r.URL
	u.Path, u.RawPath = canonical, ""
	mr := *r
	mr.URL = &u
	return &mr
}

// Strip removes every managed header from r (pipeline step 1): Gatehouse's
// own, and other gateways' identity headers. It runs before anything
// else reads the request.
func (g *Gate) Strip(r *http.Request) { g.managed.strip(r) }

// StripCookies removes Gatehouse's own cookies from a request about to
// go upstream.
func (g *Gate) StripCookies(r *http.Request) { g.cookies.strip(r) }

// Handle decides a request (pipeline steps 2-9): an unusable path is
// refused, /.gatehouse/ is routed to Gatehouse's endpoints (never
// proxied), public paths pass without a session, and everything else is
// Checked.
func (g *Gate) Handle(req *Request) Outcome {
	out, ok := g.begin(req)
	if !ok {
		return out
	}
	if authn.IsInternalPath(req.path) {
		return g.endpoint(req, out)
	}
	if g.cfg.Public != nil && g.cfg.Public.MatchPath(req.forMatch()) {
		out.Kind, out.Result = Allow, ResultPublic
		return out
	}
	return g.check(req, out)
}

// begin starts a request's Outcome: its canonical path, or (not ok) the
// refusal of a path upstreams may read differently.
func (g *Gate) begin(req *Request) (Outcome, bool) {
	out := Outcome{Audit: Audit{Start: req.Start, Method: req.HTTP.Method}}
	canon, err := canonicalPath(req.HTTP, req.Target)
	if err != nil {
		out.Audit.Path = truncate(req.HTTP.URL.EscapedPath(), 256)
		return out.refuse(BadRequest, http.StatusBadRequest, ResultDeny, ReasonAmbiguousPath, &Answer{Error: "bad_request",
			Message: "This address contains characters this site does not accept (such as ';', '\\' or an encoded '/')."}), false
	}
	req.path, out.Audit.Path = canon, canon
	return out, true
}

// canonicalPath checks the request-target as the client sent it (before
// any rewrite, and before dot segments are resolved) and returns the
// canonical form of the path about to be served.
func canonicalPath(r *http.Request, target string) (string, error) {
	escaped := r.URL.EscapedPath()
	if target == "" {
		target = r.RequestURI
	}
	// The common case: nothing was rewritten, and CanonicalPath makes the
	// same checks on the same bytes.
	if rawPath, _, _ := strings.Cut(target, "?"); target != "" && rawPath != escaped {
		if err := authn.CheckRequestTarget(target); err != nil {
			return "", err
		}
	}
	return authn.CanonicalPath(escaped)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// refuse makes o one of Gatehouse's own refusals (or other message
// answers): the kind, the audit result and reason, and the answer, whose
// reason is the audit reason unless it names its own.
func (o Outcome) refuse(k Kind, status int, result Result, reason Reason, a *Answer) Outcome {
	o.Kind, o.Status, o.Result, o.Reason = k, status, result, reason
	if a.Reason == "" {
		a.Reason = string(reason)
	}
	a.Reference = o.Audit.ID()
	o.identify(a)
	o.Answer = a
	return o
}

// redirect makes o a redirect.
func (o Outcome) redirect(k Kind, status int, location string) Outcome {
	o.Kind, o.Status, o.Location = k, status, location
	return o
}

// setHeader sets a response header.
func (o *Outcome) setHeader(name, value string) {
	if o.Header == nil {
		o.Header = http.Header{}
	}
	o.Header.Set(name, value)
}

// fail makes o a Failure.
func (o Outcome) fail(err error) Outcome {
	o.Kind, o.Err = Failure, err
	if o.Result == "" {
		o.Result = ResultError
	}
	return o
}
