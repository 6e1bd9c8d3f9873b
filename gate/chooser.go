package gate

import (
	"net/http"
	"net/url"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

// The sign-in page: with several IdPs, /.gatehouse/login without a
// usable idp or login_hint lets the user choose one, by a button or by
// typing an email whose domain chooses it. Both are plain forms that GET
// /.gatehouse/login again: no script.

// SignInPage is the sign-in page's own data (the "signin" page, .Extra
// in its template): part of the documented template contract
// (docs/pages.md).
type SignInPage struct {
	Return  string      // the rd field of its forms: where the sign-in returns to
	IdPs    []IdPChoice // a button for each IdP, in the configuration's order
	ByEmail bool        // some IdP is chosen by email domain: show the email field
	Typed   string      // the email the user typed, shown again when it chose nothing
}

// IdPChoice is one button of the sign-in page.
type IdPChoice struct {
	Name  string `json:"name"`  // the idp field
	Label string `json:"label"` // what the button says
	// URL is the sign-in the button starts, as a link:
	// /.gatehouse/login?idp=<name>&rd=<return>.
	URL string `json:"login_url"`
}

// signInPage answers a sign-in that has not chosen an IdP (why says
// what was wrong with what it asked, or choose_idp when it asked for
// none): the page of choices, for a browser, or JSON listing them. It
// names no issuer, client or domain list: only what the page shows.
func (g *Gate) signInPage(out Outcome, rd string, why Reason, hints []string) Outcome {
	page := &SignInPage{Return: rd}
	for _, p := range g.idps {
		page.IdPs = append(page.IdPs, IdPChoice{Name: p.Name, Label: p.label(),
			URL: PathLogin + "?idp=" + url.QueryEscape(p.Name) + "&rd=" + url.QueryEscape(rd)})
		page.ByEmail = page.ByEmail || len(p.domains) > 0
	}
	a := &Answer{Error: "choose_idp", Title: "Sign in", Page: "signin", Data: page,
		Message: "Choose how to sign in."}
	kind, status := Page, http.StatusOK
	if why != ReasonChooseIdP {
		kind, status = BadRequest, http.StatusBadRequest
	}
	var typed string
	if len(hints) == 1 {
		typed = CleanText(hints[0], maxLoginHint)
	}
	switch why {
	case ReasonIdPUnknown:
		a.Message = "That way of signing in is not available here. Choose one below."
	case ReasonLoginHintUnknown:
		page.Typed = typed
		a.Message = "That is not an email address such as name@example.com. Check it, or choose below."
		if email, err := authn.ParseEmail(typed); err == nil && len(typed) == len(hints[0]) {
			a.Message = "No sign-in here is set up for addresses at " + authn.EmailDomain(email) + ". Check the address, or choose below."
		}
	case ReasonLoginHintMismatch:
		page.Typed = typed
		a.Message = "That email address cannot be used with the way of signing in you chose. Choose again below."
	}
	a.JSON = struct {
		*Answer
		IdPs []IdPChoice `json:"idps"`
	}{a, page.IdPs}
	out.setHeader("Cache-Control", "no-store")
	return out.refuse(kind, status, ResultInternal, why, a)
}
