package gate

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

// PrimaryIdP is the name of the IdP that the one-IdP settings of Config
// (Issuer, ClientID, …) describe: the shorthand for IdPs with one entry
// of that name.
const PrimaryIdP = "primary"

// IdPConfig is an identity provider users sign in with. With several, a
// sign-in page lets the user choose one (or type an email whose domain
// chooses it); the session records which one it was.
type IdPConfig struct {
	// Name names the IdP in the policy input (input.user.idp), in
	// /.gatehouse/login?idp=<name> and on the sign-in page's buttons:
	// letters, digits, '_' and '-'.
	Name string
	// Label is the sign-in page's button for it; "" shows Name.
	Label string

	Issuer               string
	ClientID             string
	ClientSecret         string // empty for a public client
	Scopes               []string
	GroupsClaim          string // a dotted path into the ID token
	TrustUnverifiedEmail bool
	// Domains are the email domains this IdP may sign users in for
	// (exact, case-insensitive): a sign-in whose verified email is in
	// none of them, or that has no verified email, is refused
	// (domain_not_allowed). They also choose this IdP when a user types
	// an email on the sign-in page. Empty: any domain, and never chosen
	// by email.
	Domains []string
	// IdP is the IdP's discovery and used-state record, shared with every
	// site of the same issuer.
	IdP IdP
}

// signInIdP is an IdP users sign in with, ready to use.
type signInIdP struct {
	IdPConfig
	rp      *authn.RelyingParty
	domains map[string]bool
}

// label is how the sign-in page names the IdP.
func (p *signInIdP) label() string {
	if p.Label != "" {
		return p.Label
	}
	return p.Name
}

// allows reports whether this IdP may sign in a user whose verified
// email is email ("" for none): always without Domains, else only an
// address in one of them.
func (p *signInIdP) allows(email string) bool {
	if len(p.domains) == 0 {
		return true
	}
	d := authn.EmailDomain(email)
	return d != "" && p.domains[d]
}

// signInIdPs are the IdPs of cfg: its IdPs, or the one its shorthand
// describes (named primary). The error says what is wrong with them.
func signInIdPs(cfg *Config, now func() time.Time, extra []string) ([]*signInIdP, error) {
	list := cfg.IdPs
	if len(list) == 0 {
		list = []IdPConfig{{Name: PrimaryIdP, Issuer: cfg.Issuer, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
			Scopes: cfg.Scopes, GroupsClaim: cfg.GroupsClaim, TrustUnverifiedEmail: cfg.TrustUnverifiedEmail, IdP: cfg.IdP}}
	} else if cfg.Issuer != "" || cfg.ClientID != "" || cfg.IdP.Discovery != nil {
		return nil, errors.New("gate: give the IdPs either as IdPs or as the one-IdP settings (Issuer, ClientID, IdP), not both")
	}
	out := make([]*signInIdP, 0, len(list))
	domainOf := map[string]string{}
	for _, c := range list {
		if c.IdP.Discovery == nil || c.IdP.Used == nil {
			return nil, fmt.Errorf("gate: IdP %s: its discovery and used states are required", c.Name)
		}
		if c.Name == "" || slices.ContainsFunc(out, func(p *signInIdP) bool { return p.Name == c.Name || p.Issuer == c.Issuer }) {
			return nil, fmt.Errorf("gate: IdP %q: names and issuers must be given, and each once", c.Name)
		}
		p := &signInIdP{IdPConfig: c, domains: map[string]bool{}}
		for _, d := range c.Domains {
			d = strings.ToLower(strings.TrimPrefix(d, "@"))
			if other, ok := domainOf[d]; ok && other != c.Name {
				return nil, fmt.Errorf("gate: the email domain %s is given to IdPs %s and %s: a domain chooses one IdP", d, other, c.Name)
			}
			domainOf[d] = c.Name
			p.domains[d] = true
		}
		p.rp = &authn.RelyingParty{
			Discovery: c.IdP.Discovery, HTTPClient: c.IdP.Discovery.Client(),
			ClientID: c.ClientID, ClientSecret: c.ClientSecret, Scopes: c.Scopes, GroupsClaim: c.GroupsClaim,
			ExtraClaims: extra, TrustUnverifiedEmail: c.TrustUnverifiedEmail, Now: now,
		}
		out = append(out, p)
	}
	return out, nil
}

// idpNamed is the sign-in IdP of that name, or nil. A sign-in state or a
// session without a name (made before IdPs had names) is the only IdP's,
// when there is only one.
func (g *Gate) idpNamed(name string) *signInIdP {
	if name == "" && len(g.idps) == 1 {
		return g.idps[0]
	}
	for _, p := range g.idps {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// idpForDomain is the IdP whose Domains hold domain, or nil.
func (g *Gate) idpForDomain(domain string) *signInIdP {
	if domain == "" {
		return nil
	}
	for _, p := range g.idps {
		if p.domains[domain] {
			return p
		}
	}
	return nil
}

// hintFits reports whether an email of domain may be sent to p as a
// login_hint: one of p's domains, or, when p lists none, a domain no
// other IdP claims.
func (g *Gate) hintFits(p *signInIdP, domain string) bool {
	if len(p.domains) > 0 {
		return p.domains[domain]
	}
	return domain != "" && g.idpForDomain(domain) == nil
}

// Most a login_hint may be: an email address is at most 254 bytes.
const maxLoginHint = 254

// chooseIdP decides where /.gatehouse/login?idp=<name>&login_hint=<email>
// sends the browser: the IdP, and the login_hint to pass on to it ("" for
// none), or (nil) why the user must choose on the sign-in page. A
// parameter given twice, an unknown name, a hint that is not one plain
// email address, or a hint whose domain belongs to another IdP than the
// one named never reaches an IdP. With one IdP there is nothing to
// choose: a hint that does not fit is dropped, and a name ignored.
func (g *Gate) chooseIdP(names, hints []string) (*signInIdP, string, Reason) {
	if len(names) == 1 && names[0] == "" {
		names = nil
	}
	if len(hints) == 1 && hints[0] == "" {
		hints = nil
	}
	var hint, domain string
	if len(hints) == 1 && len(hints[0]) <= maxLoginHint {
		if email, err := authn.ParseEmail(hints[0]); err == nil {
			hint, domain = email, authn.EmailDomain(email)
		}
	}
	if len(g.idps) == 1 {
		only := g.idps[0]
		if len(hints) != 1 || hint == "" || !g.hintFits(only, domain) {
			hint = ""
		}
		return only, hint, ReasonNone
	}
	switch {
	case len(names) > 1:
		return nil, "", ReasonIdPUnknown
	case len(hints) > 1:
		return nil, "", ReasonLoginHintUnknown
	case len(names) == 1:
		p := g.idpNamed(names[0])
		switch {
		case p == nil:
			return nil, "", ReasonIdPUnknown
		case len(hints) == 0:
			return p, "", ReasonNone
		case hint == "" || !g.hintFits(p, domain):
			return nil, "", ReasonLoginHintMismatch
		}
		return p, hint, ReasonNone
	case len(hints) == 0:
		return nil, "", ReasonChooseIdP
	}
	p := g.idpForDomain(domain)
	if p == nil {
		return nil, "", ReasonLoginHintUnknown
	}
	return p, hint, ReasonNone
}
