package module

import (
	"fmt"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/gatehouse-proxy/gatehouse/gate"
)

// Several IdPs for one app: the idp blocks (JSON idps). The top-level
// issuer, client_id, client_secret, scopes, groups_claim and
// trust_unverified_email are the shorthand for one IdP, named primary;
// a configuration uses one form or the other.

// IdP is an identity provider users sign in with. With more than one, a
// sign-in page lets each user choose (a button per IdP, or an email
// whose domain chooses it); /.gatehouse/login?idp=<name> or
// ?login_hint=<email> skips the choice.
type IdP struct {
	// Name names the IdP in the policy input (input.user.idp), in
	// ?idp=<name> and in the readiness answer: 1-48 letters, digits, '_'
	// or '-'. Required, and unique among idps and providers.
	Name string `json:"name"`
	// Label is the sign-in page's button for it, such as "Example staff".
	// Default: the name.
	Label string `json:"label,omitempty"`
	// Issuer is the IdP's issuer URL (https, or http on loopback).
	// Required; no two IdPs may share one.
	Issuer string `json:"issuer"`
	// ClientID is this gateway's client at that IdP. Required.
	ClientID string `json:"client_id"`
	// ClientSecret is the client's secret; empty for a public client.
	ClientSecret string `json:"client_secret,omitempty"`
	// Scopes requested there. Default: openid email profile.
	Scopes []string `json:"scopes,omitempty"`
	// GroupsClaim names that IdP's groups claim. Default: groups.
	GroupsClaim string `json:"groups_claim,omitempty"`
	// Domains are the email domains this IdP may sign users in for
	// (exact, case-insensitive): a sign-in whose verified email is in none
	// of them, or that has no verified email, is refused
	// (domain_not_allowed), so that a partner's IdP cannot sign in your
	// own addresses. A user who types an address of one of them on the
	// sign-in page is sent to this IdP. A domain belongs to one IdP.
	// Default: none, which allows any address and is never chosen by
	// email.
	Domains []string `json:"domains,omitempty"`
	// TrustUnverifiedEmail uses this IdP's email claim even when
	// email_verified is not true.
	TrustUnverifiedEmail bool `json:"trust_unverified_email,omitempty"`
}

// shorthandSettings are the top-level settings of the one-IdP shorthand.
var shorthandSettings = []string{"issuer", "client_id", "client_secret", "scopes", "groups_claim", "trust_unverified_email"}

// errMixedIdPs says how the two forms of naming IdPs combine: they don't.
const errMixedIdPs = "the top-level issuer, client_id, client_secret, scopes, groups_claim and trust_unverified_email " +
	"describe one IdP (named primary); with idp blocks, give each IdP its settings in its own block"

// unmarshalIdP parses
//
//	idp <name> {
//	    issuer        <url>
//	    client_id     <id>
//	    client_secret <secret>
//	    scopes        <scope...>
//	    groups_claim  <claim>
//	    domains       <domain...>
//	    label         <text>
//	    trust_unverified_email
//	}
func (h *Handler) unmarshalIdP(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.Errf("idp needs a name: idp <name> { issuer …; client_id … }")
	}
	p := &IdP{Name: d.Val()}
	if d.NextArg() {
		return d.Errf("idp takes one name, then a block; got %q too", d.Val())
	}
	if err := checkProviderName(p.Name); err != nil {
		return d.Errf("idp %v", err)
	}
	if slices.ContainsFunc(h.IdPs, func(o *IdP) bool { return o != nil && o.Name == p.Name }) {
		return d.Errf("idp %s is defined twice", p.Name)
	}
	single := map[string]*string{"issuer": &p.Issuer, "client_id": &p.ClientID, "client_secret": &p.ClientSecret,
		"groups_claim": &p.GroupsClaim, "label": &p.Label}
	what := "idp " + p.Name
	err := eachSetting(d, what, "issuer, client_id, client_secret, scopes, groups_claim, domains, label, trust_unverified_email", func(sub string) error {
		switch {
		case single[sub] != nil:
			if err := oneArg(d, single[sub]); err != nil {
				return err
			}
			if sub == "label" {
				return checkValues(d, sub, checkLabel, p.Label)
			}
			return nil
		case sub == "scopes":
			return someArgs(d, &p.Scopes)
		case sub == "domains":
			n := len(p.Domains)
			if err := someArgs(d, &p.Domains); err != nil {
				return err
			}
			return checkValues(d, sub, checkDomain, p.Domains[n:]...)
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
	if p.Issuer == "" || p.ClientID == "" {
		return d.Errf("idp %s needs issuer and client_id", p.Name)
	}
	h.IdPs = append(h.IdPs, p)
	return nil
}

// shorthandUsed reports whether a top-level setting of the one-IdP
// shorthand is set (before defaults).
func (h *Handler) shorthandUsed() bool {
	return h.Issuer != "" || h.ClientID != "" || h.ClientSecret != "" || len(h.Scopes) > 0 || h.GroupsClaim != "" || h.TrustUnverifiedEmail
}

// validateIdPs checks the idp blocks: each complete, names and issuers
// each once (names not shared with a provider either), each domain given
// to one IdP.
func (h *Handler) validateIdPs(bad func(string, string, ...any), check func(string, error)) {
	names, issuers, domains := map[string]bool{}, map[string]string{}, map[string]string{}
	for i, p := range h.IdPs {
		if p == nil {
			bad("idp", "#%d: no configuration", i+1)
			continue
		}
		if err := checkProviderName(p.Name); err != nil {
			bad("idp", "%v", err)
		}
		switch {
		case names[p.Name]:
			bad("idp", "%s is defined twice", p.Name)
		case h.Providers[p.Name] != nil:
			bad("idp", "%s is also the name of a provider: give each its own name", p.Name)
		}
		names[p.Name] = true
		if p.Issuer == "" {
			bad("idp", "%s: issuer is required (empty after placeholders?)", p.Name)
		} else if err := checkOriginURL(p.Issuer, true); err != nil {
			bad("idp", "%s: issuer: %v", p.Name, err)
		} else if other, ok := issuers[p.Issuer]; ok {
			bad("idp", "%s and %s have the same issuer: an IdP is named once", other, p.Name)
		} else {
			issuers[p.Issuer] = p.Name
		}
		if p.ClientID == "" {
			bad("idp", "%s: client_id is required (empty after placeholders?)", p.Name)
		}
		if !slices.Contains(p.Scopes, "openid") {
			bad("idp", "%s: scopes must include openid", p.Name)
		}
		if p.Label != "" {
			check("idp", checkLabel(p.Label))
		}
		for _, d := range p.Domains {
			if err := checkDomain(d); err != nil {
				bad("idp", "%s: domains: %v", p.Name, err)
				continue
			}
			key := strings.ToLower(strings.TrimPrefix(d, "@"))
			if other, ok := domains[key]; ok && other != p.Name {
				bad("idp", "the domain %s is given to %s and to %s: an email domain chooses one IdP", key, other, p.Name)
			}
			domains[key] = p.Name
		}
	}
}

// gateIdPs are the idp blocks as the gate takes them, with each IdP's
// shared discovery from the usage pool.
func (h *Handler) gateIdPs() ([]gate.IdPConfig, error) {
	out := make([]gate.IdPConfig, 0, len(h.IdPs))
	for _, p := range h.IdPs {
		shared, err := h.idp(p.Issuer)
		if err != nil {
			return nil, err
		}
		out = append(out, gate.IdPConfig{Name: p.Name, Label: p.Label, Issuer: p.Issuer, ClientID: p.ClientID,
			ClientSecret: p.ClientSecret, Scopes: p.Scopes, GroupsClaim: p.GroupsClaim, Domains: p.Domains,
			TrustUnverifiedEmail: p.TrustUnverifiedEmail, IdP: shared})
	}
	return out, nil
}

// checkLabel: one line of printable text, short enough for a button.
func checkLabel(v string) error {
	if gate.CleanText(v, 100) != v || v == "" {
		return fmt.Errorf("label %q must be one line of printable text, at most 100 bytes", v)
	}
	return nil
}

// checkDomain: an email domain, such as partner.example.
func checkDomain(v string) error {
	if !domainRE.MatchString(strings.TrimPrefix(v, "@")) {
		return fmt.Errorf("%q is not a domain name", v)
	}
	return nil
}
