package module

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("gatehouse", parseCaddyfile)
	// Authentication comes before everything that serves content, so no
	// `order` line is needed.
	httpcaddyfile.RegisterDirectiveOrder("gatehouse", httpcaddyfile.Before, "basic_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	g := new(Handler)
	err := g.UnmarshalCaddyfile(h.Dispenser)
	return g, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	gatehouse {
//	    app                 <name>
//	    issuer              <url>
//	    client_id           <id>
//	    client_secret       <secret>
//	    scopes              <scope...>
//	    groups_claim        <claim>
//	    cookie_secret       <secret...>        # repeatable; the first seals
//	    cookie_name         <name>
//	    cookie_domain       <domain>
//	    idle_timeout        <duration>
//	    idle_activity       navigation|any
//	    idle_ignore         <paths...>         # repeatable
//	    session_lifetime    <duration>
//	    identity_header     <header> <claim>   # repeatable
//	    public              <paths...>         # repeatable
//	    allow_groups        <group...>         # repeatable
//	    allow_email_domains <domain...>        # repeatable
//	    external_url        <url>
//	    upgrade_origins     <origin...>        # repeatable
//	    trust_unverified_email
//	    policy              <dir>
//	    policy_query        <query>
//	    policy_headers      <names...>         # repeatable
//	    policy_timeout      <duration>
//	    policy_cache        <decisions>|off
//	    decision_log        minimal|full
//	    input_headers       <names...>         # repeatable
//	    redact_query        <names...>         # repeatable
//	    strip_headers       <names...>         # repeatable; X-Acme-* for a prefix
//	    keep_headers        <names...>         # repeatable
//	    step_up <paths...> {                   # repeatable
//	        acr <value...>; amr <value...>; max_age <duration>; provider <name>
//	    }
//	    assertion_header <Header> {
//	        key <file...>; claims <claim...>; ttl <duration>; issuer <origin>
//	    }
//	    grants              <url>              # file:///…, redis://…
//	    grants_timeout      <duration>
//	    approval_step_up {
//	        acr <value...>; amr <value...>; max_age <duration>; provider <name>
//	    }
//	    provider <name> {                      # repeatable
//	        issuer <url>; client_id <id>; client_secret <secret>; scopes <scope...>
//	        link_claim <claim>; claims <claim...>; trust_unverified_email
//	    }
//	}
//
// Secrets take placeholders ({env.X}, {file./path}), resolved at start.
// An unknown subdirective, or a single-valued one given twice, is an
// error.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("gatehouse takes no arguments on its line, only a block; got %q", d.Val())
	}
	seen := map[string]bool{}
	single := map[string]*string{
		"app": &h.App, "issuer": &h.Issuer, "client_id": &h.ClientID, "client_secret": &h.ClientSecret,
		"groups_claim": &h.GroupsClaim, "cookie_domain": &h.CookieDomain, "external_url": &h.ExternalURL,
		"policy": &h.Policy, "policy_query": &h.PolicyQuery, "grants": &h.Grants,
	}
	lists := map[string]*[]string{
		"scopes": &h.Scopes, "allow_groups": &h.AllowGroups, "allow_email_domains": &h.AllowEmailDomains,
		"policy_headers": &h.PolicyHeaders, "input_headers": &h.InputHeaders, "redact_query": &h.RedactQuery,
		"strip_headers": &h.StripHeaders, "keep_headers": &h.KeepHeaders, "upgrade_origins": &h.UpgradeOrigins,
	}
	paths := map[string]*[]string{"public": &h.Public, "idle_ignore": &h.IdleIgnore}
	durations := map[string]*caddy.Duration{"idle_timeout": &h.IdleTimeout, "session_lifetime": &h.SessionLifetime,
		"policy_timeout": &h.PolicyTimeout, "grants_timeout": &h.GrantsTimeout}
	for d.NextBlock(0) {
		sub := d.Val()
		switch sub {
		case "cookie_secret", "idle_ignore", "identity_header", "public", "allow_groups", "allow_email_domains",
			"policy_headers", "input_headers", "redact_query", "step_up", "provider", "strip_headers", "keep_headers", "upgrade_origins":
		default:
			if seen[sub] {
				return d.Errf("%s is set twice", sub)
			}
		}
		seen[sub] = true
		var err error
		switch {
		case single[sub] != nil:
			err = oneArg(d, single[sub])
		case lists[sub] != nil:
			n := len(*lists[sub])
			if err = someArgs(d, lists[sub]); err == nil {
				err = checkListValues(d, sub, (*lists[sub])[n:])
			}
		case paths[sub] != nil:
			err = pathArgs(d, paths[sub])
		case durations[sub] != nil:
			err = durationArg(d, durations[sub])
		default:
			err = h.unmarshalSpecial(d, sub)
		}
		if err != nil {
			return err
		}
		if d.NextBlock(1) {
			return d.Errf("%s takes no block", sub)
		}
	}
	return nil
}

// checkListValues checks the values of list subdirectives that have a
// syntax of their own, so that the error names the line. Values with
// placeholders are checked once resolved, at start.
func checkListValues(d *caddyfile.Dispenser, sub string, vals []string) error {
	var check func(string) error
	switch sub {
	case "strip_headers", "keep_headers":
		check = checkHeaderPattern
	case "upgrade_origins":
		check = checkUpgradeOrigin
	default:
		return nil
	}
	for _, v := range vals {
		if strings.Contains(v, "{") {
			continue
		}
		if err := check(v); err != nil {
			return d.Errf("%s: %v", sub, err)
		}
	}
	return nil
}

// unmarshalSpecial parses the subdirectives with their own syntax.
func (h *Handler) unmarshalSpecial(d *caddyfile.Dispenser, sub string) error {
	switch sub {
	case "cookie_secret":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.Errf("cookie_secret needs at least one secret")
		}
		for i, s := range args {
			// A literal (no placeholder) is checked here, so the
			// error can name the line.
			if !strings.Contains(s, "{") && len(s) < authn.MinSecretLen {
				return d.Errf("cookie_secret: secret #%d is %d bytes; it must be at least %d (generate one with: openssl rand -base64 48)", len(h.CookieSecrets)+i+1, len(s), authn.MinSecretLen)
			}
		}
		h.CookieSecrets = append(h.CookieSecrets, args...)
	case "cookie_name":
		if err := oneArg(d, &h.CookieName); err != nil {
			return err
		}
		if !cookieNameRE.MatchString(h.CookieName) {
			return d.Errf("cookie_name %q must be 1-48 letters, digits, '_' or '-'", h.CookieName)
		}
	case "idle_activity":
		if err := oneArg(d, &h.IdleActivity); err != nil {
			return err
		}
		if h.IdleActivity != "navigation" && h.IdleActivity != "any" {
			return d.Errf("idle_activity must be navigation or any, got %q", h.IdleActivity)
		}
	case "identity_header":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return d.Errf("identity_header takes a header name and a claim, such as: identity_header X-Remote-User email")
		}
		if err := checkManagedHeaderName(args[0]); err != nil {
			return d.Errf("identity_header: %v", err)
		}
		h.IdentityHeaders = append(h.IdentityHeaders, IdentityHeader{Header: args[0], Claim: args[1]})
	case "policy_cache":
		var v string
		if err := oneArg(d, &v); err != nil {
			return err
		}
		if v == "off" {
			h.PolicyCache = -1
			break
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return d.Errf("policy_cache must be a number of decisions or off, got %q", v)
		}
		h.PolicyCache = n
	case "decision_log":
		if err := oneArg(d, &h.DecisionLog); err != nil {
			return err
		}
		if h.DecisionLog != "minimal" && h.DecisionLog != "full" {
			return d.Errf("decision_log must be minimal or full, got %q", h.DecisionLog)
		}
	case "trust_unverified_email":
		if d.NextArg() {
			return d.ArgErr()
		}
		h.TrustUnverifiedEmail = true
	case "step_up":
		return h.unmarshalStepUp(d)
	case "assertion_header":
		return h.unmarshalAssertion(d)
	case "approval_step_up":
		if d.NextArg() {
			return d.Errf("approval_step_up takes no paths, only a block")
		}
		r, err := unmarshalStepUpBlock(d, "approval_step_up")
		if err != nil {
			return err
		}
		h.ApprovalStepUp = &r
		return nil
	case "provider":
		return h.unmarshalProvider(d)
	default:
		return d.Errf("unknown gatehouse subdirective %q", sub)
	}
	return nil
}

// unmarshalStepUp parses
//
//	step_up <paths...> {
//	    acr      <value...>
//	    amr      <value...>
//	    max_age  <duration>
//	    provider <name>
//	}
func (h *Handler) unmarshalStepUp(d *caddyfile.Dispenser) error {
	var paths []string
	if err := pathArgs(d, &paths); err != nil {
		return err
	}
	r, err := unmarshalStepUpBlock(d, "step_up "+strings.Join(paths, " "))
	if err != nil {
		return err
	}
	r.Paths = paths
	h.StepUp = append(h.StepUp, r)
	return nil
}

// unmarshalStepUpBlock parses the { acr; amr; max_age; provider } block of
// step_up and approval_step_up.
func unmarshalStepUpBlock(d *caddyfile.Dispenser, what string) (StepUpRule, error) {
	var r StepUpRule
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return r, d.Errf("step_up: %s is set twice", sub)
		}
		seen[sub] = true
		var err error
		switch sub {
		case "acr":
			err = someArgs(d, &r.ACR)
		case "amr":
			err = someArgs(d, &r.AMR)
		case "max_age":
			err = durationArg(d, &r.MaxAge)
		case "provider":
			err = oneArg(d, &r.Provider)
		default:
			err = d.Errf("step_up: unknown setting %q (acr, amr, max_age, provider)", sub)
		}
		if err != nil {
			return r, err
		}
	}
	if len(r.ACR) == 0 && len(r.AMR) == 0 && r.MaxAge == 0 && r.Provider == "" {
		return r, d.Errf("%s asks for nothing: give acr, amr, max_age or provider in its block", what)
	}
	return r, nil
}

// unmarshalAssertion parses
//
//	assertion_header <Header> {
//	    key    <file> [<older files>...]
//	    claims <claim...>
//	    ttl    <duration>
//	    issuer <origin>      # default: external_url; one is required
//	}
func (h *Handler) unmarshalAssertion(d *caddyfile.Dispenser) error {
	if h.AssertionHeader != nil {
		return d.Errf("assertion_header is set twice")
	}
	a := &Assertion{}
	if err := oneArg(d, &a.Header); err != nil {
		return err
	}
	if err := checkManagedHeaderName(a.Header); err != nil {
		return d.Errf("assertion_header: %v", err)
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("assertion_header: %s is set twice", sub)
		}
		seen[sub] = true
		var err error
		switch sub {
		case "key":
			err = someArgs(d, &a.Keys)
		case "claims":
			err = someArgs(d, &a.Claims)
		case "ttl":
			err = durationArg(d, &a.TTL)
		case "issuer":
			err = oneArg(d, &a.Issuer)
		default:
			err = d.Errf("assertion_header: unknown setting %q (key, claims, ttl, issuer)", sub)
		}
		if err != nil {
			return err
		}
	}
	if len(a.Keys) == 0 || len(a.Claims) == 0 {
		return d.Errf("assertion_header %s needs key and claims in its block", a.Header)
	}
	h.AssertionHeader = a
	return nil
}

// unmarshalProvider parses
//
//	provider <name> {
//	    issuer        <url>
//	    client_id     <id>
//	    client_secret <secret>
//	    scopes        <scope...>
//	    link_claim    <claim>
//	    claims        <claim...>
//	    trust_unverified_email
//	}
func (h *Handler) unmarshalProvider(d *caddyfile.Dispenser) error {
	var name string
	if err := oneArg(d, &name); err != nil {
		return err
	}
	if !providerNameRE.MatchString(name) {
		return d.Errf("provider name %q must be letters, digits, '_' or '-'", name)
	}
	if h.Providers[name] != nil {
		return d.Errf("provider %s is defined twice", name)
	}
	p := &Provider{}
	single := map[string]*string{"issuer": &p.Issuer, "client_id": &p.ClientID, "client_secret": &p.ClientSecret, "link_claim": &p.LinkClaim}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("provider %s: %s is set twice", name, sub)
		}
		seen[sub] = true
		var err error
		switch {
		case single[sub] != nil:
			err = oneArg(d, single[sub])
		case sub == "scopes":
			err = someArgs(d, &p.Scopes)
		case sub == "claims":
			err = someArgs(d, &p.Claims)
		case sub == "trust_unverified_email":
			if d.NextArg() {
				err = d.ArgErr()
			}
			p.TrustUnverifiedEmail = true
		default:
			err = d.Errf("provider %s: unknown setting %q (issuer, client_id, client_secret, scopes, link_claim, claims, trust_unverified_email)", name, sub)
		}
		if err != nil {
			return err
		}
	}
	if p.Issuer == "" || p.ClientID == "" || p.LinkClaim == "" {
		return d.Errf("provider %s needs issuer, client_id and link_claim", name)
	}
	if h.Providers == nil {
		h.Providers = map[string]*Provider{}
	}
	h.Providers[name] = p
	return nil
}

func oneArg(d *caddyfile.Dispenser, dst *string) error {
	sub := d.Val()
	args := d.RemainingArgs()
	if len(args) != 1 {
		return d.Errf("%s takes exactly one value, got %d", sub, len(args))
	}
	*dst = args[0]
	return nil
}

func someArgs(d *caddyfile.Dispenser, dst *[]string) error {
	sub := d.Val()
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("%s needs at least one value", sub)
	}
	*dst = append(*dst, args...)
	return nil
}

func pathArgs(d *caddyfile.Dispenser, dst *[]string) error {
	sub := d.Val()
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("%s needs at least one path", sub)
	}
	for _, p := range args {
		if err := checkPathPattern(p); err != nil {
			return d.Errf("%s: %v", sub, err)
		}
	}
	*dst = append(*dst, args...)
	return nil
}

func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	sub := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("%s: %q is not a duration (such as 15m or 12h): %v", sub, s, err)
	}
	if dur <= 0 {
		return d.Errf("%s must be positive, got %s", sub, s)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Handler)(nil)
