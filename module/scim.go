package module

import (
	"fmt"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// SCIM turns on the SCIM 2.0 service at /.gatehouse/scim/v2 for an HR or
// IAM provisioning system (Entra ID provisioning, Okta, HelloID): a user
// it makes inactive or deletes is de-provisioned on every node at once
// and cannot sign in until it is active again (docs/scim.md).
type SCIM struct {
	// Tokens are the secrets the provisioning system sends as
	// Authorization: Bearer, each at least 32 characters; any one is
	// accepted, so a new token can be set there before the old one is
	// removed here. Placeholders ({env.X}, {file./path}) are resolved
	// at start.
	Tokens []string `json:"tokens"`
	// Link is how a SCIM user names the users who sign in: email (their
	// verified email is its userName or primary email) or sub (the
	// primary IdP's sub is its externalId). Default: email.
	Link string `json:"link,omitempty"`
}

// unmarshalSCIM parses
//
//	scim {
//	    token <secret...>
//	    link  email|sub
//	}
func (h *Handler) unmarshalSCIM(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("scim takes no arguments, only a block; got %q", d.Val())
	}
	s := &SCIM{}
	err := eachSetting(d, "scim", "token, link", func(sub string) error {
		switch sub {
		case "token":
			n := len(s.Tokens)
			if err := someArgs(d, &s.Tokens); err != nil {
				return err
			}
			return checkValues(d, "token", gate.CheckSCIMToken, s.Tokens[n:]...)
		case "link":
			if err := oneArg(d, &s.Link); err != nil {
				return err
			}
			return checkValues(d, "link", checkSCIMLink, s.Link)
		}
		return errUnknownSetting
	})
	if err != nil {
		return err
	}
	if len(s.Tokens) == 0 {
		return d.Errf("scim needs token in its block: the secret the provisioning system sends (such as {env.GATEHOUSE_SCIM_TOKEN})")
	}
	h.SCIM = s
	return nil
}

func checkSCIMLink(v string) error {
	if v != gate.SCIMLinkEmail && v != gate.SCIMLinkSub {
		return fmt.Errorf("must be email or sub, got %q", v)
	}
	return nil
}

// resolveSCIM resolves the tokens' placeholders.
func (h *Handler) resolveSCIM(resolve func(setting string, s *string)) {
	if h.SCIM == nil {
		return
	}
	for i := range h.SCIM.Tokens {
		resolve("scim token", &h.SCIM.Tokens[i])
	}
	if h.SCIM.Link == "" {
		h.SCIM.Link = gate.SCIMLinkEmail
	}
}

// validateSCIM checks the scim block, once placeholders are resolved: a
// token, each a secret; a link claim; and a grant store that keeps what
// it is told (a leaver the memory store forgot at a restart could sign
// in again).
func (h *Handler) validateSCIM(bad func(string, string, ...any), check func(string, error)) {
	s := h.SCIM
	if s == nil {
		return
	}
	if len(s.Tokens) == 0 {
		bad("scim", "token is required: the secret the provisioning system sends (such as {env.GATEHOUSE_SCIM_TOKEN})")
	}
	for _, t := range s.Tokens {
		check("scim token", gate.CheckSCIMToken(t))
	}
	if s.Link != "" {
		check("scim link", checkSCIMLink(s.Link))
	}
	if u, err := grants.ParseURL(h.Grants); err == nil && u.Kind == "memory" {
		bad("scim", "needs a grants store that keeps its data (grants file:///… or redis://…): the memory store forgets at a restart which users were made inactive")
	}
}

// gateSCIM is the gate's SCIM configuration; nil when off.
func (h *Handler) gateSCIM() *gate.SCIMConfig {
	if h.SCIM == nil {
		return nil
	}
	return &gate.SCIMConfig{Tokens: h.SCIM.Tokens, Link: h.SCIM.Link}
}
