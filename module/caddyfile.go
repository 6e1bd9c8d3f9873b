package module

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/dustin/go-humanize"

	"github.com/gatehouse-proxy/gatehouse/gate"
)

func init() {
	httpcaddyfile.RegisterDirective("gatehouse", parseDirective)
	// Authentication comes before everything that serves content, so no
	// `order` line is needed.
	httpcaddyfile.RegisterDirectiveOrder("gatehouse", httpcaddyfile.Before, "basic_auth")
}

// parseDirective is the gatehouse directive, which takes no matcher: a
// matcher would let the sign-in callback and the other endpoints under
// /.gatehouse/ fall through to the upstream (which would receive the
// authorization code), and Caddy's path matching is not the gate's, so
// paths meant to be protected could pass unchecked.
func parseDirective(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	if !h.Next() {
		return nil, h.ArgErr()
	}
	if h.NextArg() {
		if tok := h.Val(); strings.HasPrefix(tok, "/") || strings.HasPrefix(tok, "@") || tok == "*" {
			return nil, h.Errf("gatehouse takes no matcher (got %s): a matcher would send Gatehouse's own endpoints "+
				"(/.gatehouse/callback, …) to the upstream, with the sign-in code. Put gatehouse on the whole site and "+
				"open the paths that need no sign-in with `public <paths...>`; to protect only part of a site, give that "+
				"part its own site block (see docs/caddyfile.md)", tok)
		}
	}
	h.Reset()
	g := new(Handler)
	if err := g.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return h.NewRoute(nil, g), nil
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
//	    idp <name> {                           # repeatable; instead of the six above
//	        issuer <url>; client_id <id>; client_secret <secret>; scopes <scope...>
//	        groups_claim <claim>; domains <domain...>; label <text>; trust_unverified_email
//	    }
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
//	    policy_shadow       <dir>
//	    decision_log        minimal|full
//	    input_headers       <names...>         # repeatable
//	    redact_query        <names...>         # repeatable
//	    strip_headers       <names...>         # repeatable; X-Acme-* for a prefix
//	    keep_headers        <names...>         # repeatable
//	    pages_dir           <dir>
//	    support_contact     <text>             # quoted: "IT helpdesk, ext. 4040"
//	    preserve_post       <size>|off         # 64KiB by default; at most 1MiB
//	    step_up <paths...> {                   # repeatable
//	        acr <value...>; amr <value...>; max_age <duration>; provider <name>
//	    }
//	    assertion_header <Header> {
//	        key <file...>; claims <claim...>; ttl <duration>; issuer <origin>
//	    }
//	    grants              <url>              # file:///…, redis://…
//	    grants_timeout      <duration>
//	    history             <duration>         # evidence kept, default 400 days
//	    approval_step_up {                     # also for the reviews page
//	        acr <value...>; amr <value...>; max_age <duration>; provider <name>
//	    }
//	    review <name> {                        # repeatable
//	        every <duration>; reviewers <group...>; scope standing|grants|all
//	        on_timeout keep|revoke|flag; duration <duration>
//	    }
//	    provider <name> {                      # repeatable
//	        issuer <url>; client_id <id>; client_secret <secret>; scopes <scope...>
//	        link_claim <claim>; claims <claim...>; trust_unverified_email
//	    }
//	    bearer {                               # repeatable, one per issuer
//	        issuer <url>; audience <aud...>; algorithms <alg...>; scopes_claim <claim>
//	        require_scopes <scope...>; groups_claim <claim>; plain_jwt; dpop required|optional
//	    }
//	    pass_authorization
//	    scim {
//	        token <secret...>; link email|sub
//	    }
//	}
//
// Secrets take placeholders ({env.X}, {file./path}), resolved at start.
// An unknown subdirective, or a single-valued one given twice, is an
// error; so are idp blocks beside the top-level issuer, client_id,
// client_secret, scopes, groups_claim or trust_unverified_email, which
// are the shorthand for one IdP.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.Errf("gatehouse takes no arguments on its line, only a block; got %q", d.Val())
	}
	// Settings of one value or a list, with the rule each value must
	// follow; a value with a placeholder is checked once resolved (by
	// Validate, at start).
	type setting struct {
		one   *string
		list  *[]string
		check func(string) error
		paths bool // a list of paths
	}
	settings := map[string]setting{
		"app": {one: &h.App, check: checkApp}, "issuer": {one: &h.Issuer}, "client_id": {one: &h.ClientID},
		"client_secret": {one: &h.ClientSecret}, "groups_claim": {one: &h.GroupsClaim},
		"cookie_name": {one: &h.CookieName, check: checkCookieName}, "cookie_domain": {one: &h.CookieDomain},
		"external_url":  {one: &h.ExternalURL, check: func(v string) error { return checkOriginURL(v, false) }},
		"idle_activity": {one: &h.IdleActivity, check: checkIdleActivity}, "decision_log": {one: &h.DecisionLog, check: checkDecisionLog},
		"policy": {one: &h.Policy}, "policy_query": {one: &h.PolicyQuery}, "policy_shadow": {one: &h.PolicyShadow}, "grants": {one: &h.Grants},
		"scopes": {list: &h.Scopes}, "allow_groups": {list: &h.AllowGroups}, "allow_email_domains": {list: &h.AllowEmailDomains},
		"policy_headers": {list: &h.PolicyHeaders, check: gate.CheckHeaderName}, "input_headers": {list: &h.InputHeaders},
		"redact_query": {list: &h.RedactQuery}, "strip_headers": {list: &h.StripHeaders, check: gate.CheckHeaderPattern},
		"keep_headers": {list: &h.KeepHeaders, check: gate.CheckHeaderPattern}, "upgrade_origins": {list: &h.UpgradeOrigins, check: checkUpgradeOrigin},
		"public": {list: &h.Public, paths: true}, "idle_ignore": {list: &h.IdleIgnore, paths: true},
		"pages_dir": {one: &h.PagesDir}, "support_contact": {one: &h.SupportContact, check: checkSupportContact},
	}
	durations := map[string]*caddy.Duration{"idle_timeout": &h.IdleTimeout, "session_lifetime": &h.SessionLifetime,
		"policy_timeout": &h.PolicyTimeout, "grants_timeout": &h.GrantsTimeout, "history": &h.History}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		sub := d.Val()
		if seen[sub] && !repeatable[sub] {
			return d.Errf("%s is set twice", sub)
		}
		seen[sub] = true
		if sub == "idp" && slices.ContainsFunc(shorthandSettings, func(s string) bool { return seen[s] }) ||
			slices.Contains(shorthandSettings, sub) && seen["idp"] {
			return d.Errf("%s: %s", sub, errMixedIdPs)
		}
		var err error
		switch st, ok := settings[sub]; {
		case ok && st.one != nil:
			if err = oneArg(d, st.one); err == nil {
				err = checkValues(d, sub, st.check, *st.one)
			}
		case ok && st.paths:
			err = pathArgs(d, st.list)
		case ok:
			n := len(*st.list)
			if err = someArgs(d, st.list); err == nil {
				err = checkValues(d, sub, st.check, (*st.list)[n:]...)
			}
		case durations[sub] != nil:
			err = durationArg(d, durations[sub])
		default:
			err = h.unmarshalSpecial(d, sub)
		}
		if err == nil {
			err = noBlock(d, sub)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// repeatable are the subdirectives that may be given more than once:
// each adds to a list.
// subdirectives are the gatehouse block's settings, for suggestions.
var subdirectives = []string{
	"app", "issuer", "client_id", "client_secret", "scopes", "groups_claim", "idp", "cookie_secret", "cookie_name",
	"cookie_domain", "idle_timeout", "idle_activity", "idle_ignore", "session_lifetime", "identity_header", "public",
	"allow_groups", "allow_email_domains", "external_url", "upgrade_origins", "trust_unverified_email", "policy",
	"policy_query", "policy_headers", "policy_timeout", "policy_cache", "policy_shadow", "decision_log", "input_headers", "redact_query",
	"strip_headers", "keep_headers", "pages_dir", "support_contact", "bearer", "pass_authorization", "preserve_post", "step_up", "assertion_header", "grants", "grants_timeout", "history", "approval_step_up", "provider", "scim",
	"review",
}

// nearest is the known name nearest to a misspelt one: at most two edits
// away, or one that contains it or that it contains; "" if none is.
func nearest(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		d := editDistance(name, k)
		if d >= bestDist && len(name) >= 4 && (strings.Contains(k, name) || strings.Contains(name, k)) {
			d = 2
		}
		if d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

var repeatable = map[string]bool{
	"cookie_secret": true, "idle_ignore": true, "identity_header": true, "public": true, "allow_groups": true,
	"allow_email_domains": true, "policy_headers": true, "input_headers": true, "redact_query": true, "step_up": true,
	"provider": true, "bearer": true, "idp": true, "strip_headers": true, "keep_headers": true, "upgrade_origins": true,
	"review": true,
}

// checkValues applies a setting's rule to the values just read, so that
// the error names the line. Values with placeholders are checked once
// resolved, by Validate.
func checkValues(d *caddyfile.Dispenser, sub string, check func(string) error, vals ...string) error {
	if check == nil {
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

// noBlock refuses a block (an empty one too) after a setting that takes
// none, naming the setting's line.
func noBlock(d *caddyfile.Dispenser, sub string) error {
	line, file := d.Line(), d.File()
	if !d.Next() {
		return nil
	}
	if d.Val() == "{" && d.Line() == line && d.File() == file {
		return d.Errf("%s takes no block", sub)
	}
	d.Prev()
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
		n := len(h.CookieSecrets)
		h.CookieSecrets = append(h.CookieSecrets, args...)
		for i, s := range args {
			// A literal is checked here, so the error can name the line.
			if !strings.Contains(s, "{") {
				if err := checkSecret(n+i+1, s, false); err != nil {
					return d.Errf("cookie_secret: %v", err)
				}
			}
		}
	case "identity_header":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return d.Errf("identity_header takes a header name and a claim, such as: identity_header X-Remote-User email")
		}
		if err := gate.CheckHeaderName(args[0]); err != nil {
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
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return d.Errf("policy_cache must be a number of decisions or off, got %q", v)
		}
		h.PolicyCache = n
	case "preserve_post":
		var v string
		if err := oneArg(d, &v); err != nil {
			return err
		}
		if v == "off" {
			h.PreservePost = -1
			return nil
		}
		n, err := humanize.ParseBytes(v)
		if err != nil || n < 1 || n > gate.MaxPreservePost {
			return d.Errf("preserve_post must be a size from 1 to 1MiB (64KiB, 100000) or off, got %q", v)
		}
		h.PreservePost = int64(n)
	case "trust_unverified_email":
		if d.NextArg() {
			return d.Errf("trust_unverified_email takes no value (it is on when present), got %q", d.Val())
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
	case "provider":
		return h.unmarshalProvider(d)
	case "bearer":
		return h.unmarshalBearer(d)
	case "pass_authorization":
		if d.NextArg() {
			return d.Errf("pass_authorization takes no value (it is on when present), got %q", d.Val())
		}
		h.PassAuthorization = true
	case "idp":
		return h.unmarshalIdP(d)
	case "scim":
		return h.unmarshalSCIM(d)
	case "review":
		return h.unmarshalReview(d)
	default:
		if near := nearest(sub, subdirectives); near != "" {
			return d.Errf("unknown gatehouse subdirective %q (did you mean %q?)", sub, near)
		}
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
// step_up and approval_step_up; what names the directive in errors.
func unmarshalStepUpBlock(d *caddyfile.Dispenser, what string) (StepUpRule, error) {
	var r StepUpRule
	err := eachSetting(d, what, "acr, amr, max_age, provider", func(sub string) error {
		switch sub {
		case "acr":
			return someArgs(d, &r.ACR)
		case "amr":
			return someArgs(d, &r.AMR)
		case "max_age":
			return durationArg(d, &r.MaxAge)
		case "provider":
			return oneArg(d, &r.Provider)
		}
		return errUnknownSetting
	})
	if err != nil {
		return r, err
	}
	if err := r.check(); err != nil {
		return r, d.Errf("%s %v in its block", what, err)
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
	a := &Assertion{}
	if err := oneArg(d, &a.Header); err != nil {
		return err
	}
	if err := gate.CheckHeaderName(a.Header); err != nil {
		return d.Errf("assertion_header: %v", err)
	}
	err := eachSetting(d, "assertion_header", "key, claims, ttl, issuer", func(sub string) error {
		switch sub {
		case "key":
			return someArgs(d, &a.Keys)
		case "claims":
			return someArgs(d, &a.Claims)
		case "ttl":
			return durationArg(d, &a.TTL)
		case "issuer":
			return oneArg(d, &a.Issuer)
		}
		return errUnknownSetting
	})
	if err != nil {
		return err
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
	if !d.NextArg() {
		return d.Errf("provider needs a name: provider <name> { issuer …; client_id …; link_claim … }")
	}
	name := d.Val()
	if d.NextArg() {
		return d.Errf("provider takes one name, then a block; got %q too", d.Val())
	}
	if err := checkProviderName(name); err != nil {
		return d.Errf("provider %v", err)
	}
	if h.Providers[name] != nil {
		return d.Errf("provider %s is defined twice", name)
	}
	p := &Provider{}
	single := map[string]*string{"issuer": &p.Issuer, "client_id": &p.ClientID, "client_secret": &p.ClientSecret, "link_claim": &p.LinkClaim}
	what := "provider " + name
	err := eachSetting(d, what, "issuer, client_id, client_secret, scopes, link_claim, claims, trust_unverified_email", func(sub string) error {
		switch {
		case single[sub] != nil:
			return oneArg(d, single[sub])
		case sub == "scopes":
			return someArgs(d, &p.Scopes)
		case sub == "claims":
			return someArgs(d, &p.Claims)
		case sub == "trust_unverified_email":
			if d.NextArg() {
				return d.Errf("trust_unverified_email takes no value (it is on when present), got %q", d.Val())
			}
			p.TrustUnverifiedEmail = true
			return nil
		}
		return errUnknownSetting
	})
	if err != nil {
		return err
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

// unmarshalBearer parses
//
//	bearer {
//	    issuer <url>; audience <aud...>; algorithms <alg...>; scopes_claim <claim>
//	    require_scopes <scope...>; groups_claim <claim>; plain_jwt; dpop required|optional
//	}
func (h *Handler) unmarshalBearer(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("bearer takes no arguments, only a block; got %q", d.Val())
	}
	b := &Bearer{}
	single := map[string]*string{"issuer": &b.Issuer, "scopes_claim": &b.ScopesClaim, "groups_claim": &b.GroupsClaim, "dpop": &b.DPoP}
	err := eachSetting(d, "bearer", "issuer, audience, algorithms, scopes_claim, require_scopes, groups_claim, plain_jwt, dpop", func(sub string) error {
		switch {
		case single[sub] != nil:
			return oneArg(d, single[sub])
		case sub == "audience":
			return someArgs(d, &b.Audiences)
		case sub == "algorithms":
			return someArgs(d, &b.Algorithms)
		case sub == "require_scopes":
			return someArgs(d, &b.RequireScopes)
		case sub == "plain_jwt":
			if d.NextArg() {
				return d.Errf("plain_jwt takes no value (it is on when present), got %q", d.Val())
			}
			b.PlainJWT = true
			return nil
		}
		return errUnknownSetting
	})
	if err != nil {
		return err
	}
	if err := b.check(); err != nil {
		return d.Errf("bearer: %v", err)
	}
	h.Bearer = append(h.Bearer, b)
	return nil
}

// errUnknownSetting is what a block's setting parser says of a name it
// does not know.
var errUnknownSetting = errors.New("unknown setting")

// eachSetting runs parse for each setting of the block that follows a
// directive (what, for errors: "step_up /admin"): a setting given twice,
// one it does not know (known lists them) and a block after a setting
// are errors, each naming the directive and the line.
func eachSetting(d *caddyfile.Dispenser, what, known string, parse func(sub string) error) error {
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("%s: %s is set twice", what, sub)
		}
		seen[sub] = true
		err := parse(sub)
		if errors.Is(err, errUnknownSetting) {
			if near := nearest(sub, strings.Split(known, ", ")); near != "" {
				return d.Errf("%s: unknown setting %q (did you mean %q? it takes %s)", what, sub, near, known)
			}
			return d.Errf("%s: unknown setting %q (it takes %s)", what, sub, known)
		}
		if err == nil {
			err = noBlock(d, sub)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
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
	if err := checkValues(d, sub, checkPathPattern, args...); err != nil {
		return err
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
