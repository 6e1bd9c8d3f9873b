package module

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

var (
	appNameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	cookieNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,48}$`)
	domainRE     = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$`)
)

// Validate checks the configuration, JSON or Caddyfile alike, after
// placeholders are resolved and defaults set (Provision does both, then
// calls it), and says, for each problem, which directive is wrong and
// how. The Caddyfile parser runs the same checks on single values as it
// reads them (the rules below named check*), so that its error can name
// the line.
func (h *Handler) Validate() error {
	var errs []error
	bad := func(directive, format string, args ...any) {
		errs = append(errs, fmt.Errorf("gatehouse: %s: "+format, append([]any{directive}, args...)...))
	}
	check := func(directive string, err error) {
		if err != nil {
			bad(directive, "%v", err)
		}
	}
	if h.App == "" {
		bad("app", "required: a short name for the protected application, such as payroll")
	} else {
		check("app", checkApp(h.App))
	}
	switch {
	case len(h.IdPs) > 0:
		if h.shorthandUsed() {
			bad("idp", "%s", errMixedIdPs)
		}
		h.validateIdPs(bad, check)
	case h.Issuer == "":
		bad("issuer", "required: the OpenID Provider's issuer URL (empty after placeholders?), or idp blocks")
	default:
		check("issuer", checkOriginURL(h.Issuer, true))
	}
	if len(h.IdPs) == 0 {
		if h.ClientID == "" {
			bad("client_id", "required (empty after placeholders?)")
		}
		if !slices.Contains(h.Scopes, "openid") {
			bad("scopes", "must include openid")
		}
	}
	if len(h.CookieSecrets) == 0 {
		bad("cookie_secret", "required: at least one secret of %d bytes or more (for example {env.GATEHOUSE_COOKIE_SECRET}; generate one with: openssl rand -base64 48)", authn.MinSecretLen)
	}
	for i, s := range h.CookieSecrets {
		check("cookie_secret", checkSecret(i+1, s, true))
	}
	check("cookie_name", checkCookieName(h.CookieName))
	check("preserve_post", checkPreservePost(h.PreservePost))
	if h.CookieDomain != "" && !domainRE.MatchString(h.CookieDomain) {
		bad("cookie_domain", "%q is not a domain name", h.CookieDomain)
	}
	if d := time.Duration(h.IdleTimeout); d < time.Second {
		bad("idle_timeout", "must be at least 1s, got %s", d)
	}
	if d := time.Duration(h.SessionLifetime); d < time.Second {
		bad("session_lifetime", "must be at least 1s, got %s", d)
	}
	check("idle_activity", checkIdleActivity(h.IdleActivity))
	check("decision_log", checkDecisionLog(h.DecisionLog))
	for _, p := range h.Public {
		check("public", checkPathPattern(p))
	}
	for _, p := range h.IdleIgnore {
		check("idle_ignore", checkPathPattern(p))
	}
	for _, d := range h.AllowEmailDomains {
		if !domainRE.MatchString(strings.TrimPrefix(d, "@")) {
			bad("allow_email_domains", "%q is not a domain name", d)
		}
	}
	if h.ExternalURL != "" {
		check("external_url", checkOriginURL(h.ExternalURL, false))
	}
	for _, o := range h.UpgradeOrigins {
		check("upgrade_origins", checkUpgradeOrigin(o))
	}
	h.validateHeaders(bad, check)
	h.validatePolicy(bad, check)
	h.validateStepUp(bad, check)
	h.validateAssertion(bad, check)
	if t := time.Duration(h.GrantsTimeout); t < time.Millisecond || t > 10*time.Second {
		bad("grants_timeout", "must be between 1ms and 10s, got %s", t)
	}
	if t := time.Duration(h.History); t < 24*time.Hour {
		bad("history", "must be at least a day (evidence is kept for audits), got %s", t)
	}
	h.validatePages(bad, check)
	h.validateSCIM(bad, check)
	h.validateReviews(bad)
	if _, err := grants.ParseURL(h.Grants); err != nil {
		bad("grants", "%q: want file:///path, redis://…, rediss://…, redis+cluster://… or memory: (%v)", redactURL(h.Grants), err)
	}
	return errors.Join(errs...)
}

// validateHeaders checks the header settings together: no name managed
// twice (names compare ignoring case and '_' vs '-'), none kept that
// Gatehouse sets.
func (h *Handler) validateHeaders(bad func(string, string, ...any), check func(string, error)) {
	seen := map[string]bool{}
	own := func(directive, name, twice string) {
		n := gate.NormalizeHeaderName(name)
		if seen[n] {
			bad(directive, twice, name)
		}
		seen[n] = true
	}
	for _, ih := range h.IdentityHeaders {
		check("identity_header", gate.CheckHeaderName(ih.Header))
		if ih.Claim == "" {
			bad("identity_header", "%s: claim is required", ih.Header)
		}
		own("identity_header", ih.Header, "%s is set twice (header names are compared ignoring case and '_' vs '-')")
	}
	for _, ph := range h.PolicyHeaders {
		check("policy_headers", gate.CheckHeaderName(ph))
		own("policy_headers", ph, "%s is already an identity or policy header")
	}
	if a := h.AssertionHeader; a != nil {
		check("assertion_header", gate.CheckHeaderName(a.Header))
		own("assertion_header", a.Header, "%s is already an identity or policy header")
	}
	for _, n := range h.StripHeaders {
		check("strip_headers", gate.CheckHeaderPattern(n))
	}
	for _, n := range h.KeepHeaders {
		check("keep_headers", gate.CheckHeaderPattern(n))
		if seen[gate.NormalizeHeaderName(n)] {
			bad("keep_headers", "%s is set by Gatehouse itself and is always removed from requests", n)
		}
	}
	for _, ih := range h.InputHeaders {
		n := gate.NormalizeHeaderName(ih)
		switch {
		case gate.CheckHeaderName(ih) != nil && n != "user-agent" && n != "accept" && n != "content-type":
			bad("input_headers", "%q cannot be copied into the policy input", ih)
		case seen[n]:
			bad("input_headers", "%q is a managed header; the policy sees the verified identity in input.user", ih)
		}
	}
}

func (h *Handler) validatePolicy(bad func(string, string, ...any), check func(string, error)) {
	if h.Policy == "" {
		if len(h.PolicyHeaders) > 0 || h.PolicyQuery != "" {
			bad("policy", "policy_query and policy_headers need a policy directory")
		}
		if h.PolicyShadow != "" {
			bad("policy_shadow", "a candidate policy is decided beside the serving one: set policy too")
		}
		return
	}
	if _, err := ast.ParseRef(h.PolicyQuery); err != nil {
		bad("policy_query", "%q is not a reference such as data.gatehouse.decision: %v", h.PolicyQuery, err)
	}
	if time.Duration(h.PolicyTimeout) < time.Millisecond {
		bad("policy_timeout", "must be at least 1ms")
	}
	check("policy_cache", checkPolicyCache(h.PolicyCache))
	if h.PolicyShadow != "" && filepath.Clean(h.PolicyShadow) == filepath.Clean(h.Policy) {
		bad("policy_shadow", "%s is the policy directory itself: point it at a copy with the change to try", h.PolicyShadow)
	}
}

// validateStepUp checks step_up rules, approval_step_up, providers and
// bearer blocks.
func (h *Handler) validateStepUp(bad func(string, string, ...any), check func(string, error)) {
	issuers := map[string]bool{}
	for _, b := range h.Bearer {
		if b == nil {
			bad("bearer", "no configuration")
			continue
		}
		check("bearer", b.check())
		iss := h.bearerIssuer(b)
		switch {
		case iss == "":
			bad("bearer", "issuer is required with several idp blocks: name the issuer whose tokens this block accepts")
		case issuers[iss]:
			bad("bearer", "two blocks for the issuer %s: give one its audiences and scopes", iss)
		default:
			issuers[iss] = true
		}
	}
	for name, p := range h.Providers {
		if err := checkProviderName(name); err != nil {
			bad("provider", "%v", err)
		}
		if p == nil {
			bad("provider", "%s: no configuration", name)
			continue
		}
		if p.Issuer == "" {
			bad("provider", "%s: issuer is required", name)
		} else if err := checkOriginURL(p.Issuer, true); err != nil {
			bad("provider", "%s: issuer: %v", name, err)
		}
		if p.ClientID == "" {
			bad("provider", "%s: client_id is required", name)
		}
		if p.LinkClaim == "" {
			bad("provider", "%s: link_claim is required: the claim that must match the session's (such as email)", name)
		}
		if len(p.Scopes) > 0 && !slices.Contains(p.Scopes, "openid") {
			bad("provider", "%s: scopes must include openid", name)
		}
	}
	rule := func(directive, where string, r StepUpRule) {
		if err := r.check(); err != nil {
			bad(directive, "%s%v", where, err)
		}
		if r.Provider != "" && h.Providers[r.Provider] == nil {
			bad(directive, "%sprovider %q is not configured", where, r.Provider)
		}
	}
	for i, r := range h.StepUp {
		where := fmt.Sprintf("rule #%d (%s): ", i+1, strings.Join(r.Paths, " "))
		if len(r.Paths) == 0 {
			bad("step_up", "%sneeds at least one path", where)
		}
		for _, p := range r.Paths {
			if err := checkPathPattern(p); err != nil {
				bad("step_up", "%s%v", where, err)
			}
		}
		rule("step_up", where, r)
	}
	if a := h.ApprovalStepUp; a != nil {
		rule("approval_step_up", "", *a)
	}
	// Rules whose paths can meet must accept an acr in common.
	for i, a := range h.StepUp {
		for _, b := range h.StepUp[i+1:] {
			if a.Provider != b.Provider || len(a.ACR) == 0 || len(b.ACR) == 0 || !authn.PatternsMayOverlap(a.Paths, b.Paths) {
				continue
			}
			if _, err := authn.Combine(authn.Requirement{ACR: a.ACR}, authn.Requirement{ACR: b.ACR}); err != nil {
				bad("step_up", "rules for %s and %s can apply to one request but accept no acr in common (%v / %v)",
					strings.Join(a.Paths, " "), strings.Join(b.Paths, " "), a.ACR, b.ACR)
			}
		}
	}
}

func (h *Handler) validateAssertion(bad func(string, string, ...any), check func(string, error)) {
	a := h.AssertionHeader
	if a == nil {
		return
	}
	if len(a.Keys) == 0 {
		bad("assertion_header", "key is required: an EC P-256 private key PEM file")
	}
	if len(a.Claims) == 0 {
		bad("assertion_header", "claims is required: the user claims the JWT carries, such as sub email groups")
	}
	if t := time.Duration(a.TTL); t < time.Second || t > time.Hour {
		bad("assertion_header", "ttl must be between 1s and 1h")
	}
	switch {
	case a.Issuer == "" && h.ExternalURL == "":
		bad("assertion_header", "needs a fixed issuer: set external_url (this site's public origin, such as https://app.example.com) "+
			"or issuer in its block; the request's Host is the client's to choose, so it cannot name the issuer")
	case a.Issuer != "":
		if err := checkOriginURL(a.Issuer, false); err != nil {
			bad("assertion_header", "issuer: %v", err)
		}
	}
}

// The rules for single values, shared by Validate and the Caddyfile
// parser.

// validatePages checks pages_dir (a directory: its files are read by
// Provision) and support_contact.
func (h *Handler) validatePages(bad func(string, string, ...any), check func(string, error)) {
	if h.PagesDir != "" {
		if fi, err := os.Stat(h.PagesDir); err != nil {
			bad("pages_dir", "%v", err)
		} else if !fi.IsDir() {
			bad("pages_dir", "%s is not a directory", h.PagesDir)
		}
	}
	if h.SupportContact != "" {
		check("support_contact", checkSupportContact(h.SupportContact))
	}
}

// checkSupportContact: one line of printable text, short enough for a
// page's footer.
func checkSupportContact(v string) error {
	if gate.CleanText(v, 200) != v {
		return fmt.Errorf("%q must be one line of printable text, at most 200 bytes", v)
	}
	return nil
}

func checkApp(v string) error {
	if !appNameRE.MatchString(v) {
		return fmt.Errorf("%q must be 1-64 letters, digits, '.', '_' or '-'", v)
	}
	return nil
}

// checkSecret checks the n-th cookie secret's length; resolved says
// placeholders were resolved (Validate), else it is a literal
// (Caddyfile).
func checkSecret(n int, s string, resolved bool) error {
	after := ""
	if resolved {
		after = " after placeholders"
	}
	switch {
	case s == "":
		return fmt.Errorf("secret #%d is empty%s (an unset environment variable, or an empty file?); it must be at least %d bytes (generate one with: openssl rand -base64 48)", n, after, authn.MinSecretLen)
	case len(s) < authn.MinSecretLen:
		return fmt.Errorf("secret #%d is %d bytes%s; it must be at least %d (generate one with: openssl rand -base64 48)", n, len(s), after, authn.MinSecretLen)
	}
	return nil
}

func checkCookieName(v string) error {
	if !cookieNameRE.MatchString(v) {
		return fmt.Errorf("%q must be 1-48 letters, digits, '_' or '-'", v)
	}
	return nil
}

func checkProviderName(v string) error {
	if !cookieNameRE.MatchString(v) {
		return fmt.Errorf("name %q must be 1-48 letters, digits, '_' or '-'", v)
	}
	return nil
}

func checkIdleActivity(v string) error {
	if v != "navigation" && v != "any" {
		return fmt.Errorf("%q must be navigation or any", v)
	}
	return nil
}

func checkDecisionLog(v string) error {
	if v != "minimal" && v != "full" {
		return fmt.Errorf("%q must be minimal or full", v)
	}
	return nil
}

func checkPreservePost(n int64) error {
	if n < -1 || n > gate.MaxPreservePost {
		return fmt.Errorf("must be a size up to %d bytes (1MiB), or -1 (off), got %d", gate.MaxPreservePost, n)
	}
	return nil
}

func checkPolicyCache(n int) error {
	if n < -1 {
		return fmt.Errorf("must be a number of decisions, or -1 (off), got %d", n)
	}
	return nil
}

// check says what a step-up rule (or approval_step_up) is missing: it
// must ask for something.
func (r StepUpRule) check() error {
	if len(r.ACR) == 0 && len(r.AMR) == 0 && r.MaxAge == 0 && r.Provider == "" {
		return errors.New("asks for nothing: give acr, amr, max_age or provider")
	}
	if r.MaxAge < 0 {
		return errors.New("max_age must not be negative")
	}
	return nil
}

func checkPathPattern(p string) error {
	if p == "" || (p[0] != '/' && p[0] != '*') {
		return fmt.Errorf("path %q must start with / or *", p)
	}
	return nil
}

// checkUpgradeOrigin accepts an upgrade_origins entry.
func checkUpgradeOrigin(o string) error {
	if _, err := authn.NormalizeOrigin(o); err != nil || strings.Contains(o, "*") {
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
		if !gate.IsLoopbackHost(u.Hostname()) {
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
