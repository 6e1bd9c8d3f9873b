package module

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

var providerNameRE = cookieNameRE

// validateStepUp checks step_up rules and providers; it runs with the
// rest of validate.
func (h *Handler) validateStepUp(bad func(directive, format string, args ...any)) {
	for name, p := range h.Providers {
		if !providerNameRE.MatchString(name) {
			bad("provider", "name %q must be letters, digits, '_' or '-'", name)
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
	for i, r := range h.StepUp {
		where := fmt.Sprintf("rule #%d (%s)", i+1, strings.Join(r.Paths, " "))
		if len(r.Paths) == 0 {
			bad("step_up", "%s: needs at least one path", where)
		}
		for _, p := range r.Paths {
			if err := checkPathPattern(p); err != nil {
				bad("step_up", "%s: %v", where, err)
			}
		}
		if len(r.ACR) == 0 && len(r.AMR) == 0 && r.MaxAge == 0 && r.Provider == "" {
			bad("step_up", "%s: asks for nothing: give acr, amr, max_age or provider", where)
		}
		if r.MaxAge < 0 {
			bad("step_up", "%s: max_age must not be negative", where)
		}
		if r.Provider != "" && h.Providers[r.Provider] == nil {
			bad("step_up", "%s: provider %q is not configured", where, r.Provider)
		}
	}
	// Rules whose paths can meet must accept an acr in common.
	for i, a := range h.StepUp {
		for _, b := range h.StepUp[i+1:] {
			if a.Provider != b.Provider || len(a.ACR) == 0 || len(b.ACR) == 0 || !patternsMayOverlap(a.Paths, b.Paths) {
				continue
			}
			if _, err := authn.Combine(authn.Requirement{ACR: a.ACR}, authn.Requirement{ACR: b.ACR}); err != nil {
				bad("step_up", "rules for %s and %s can apply to one request but accept no acr in common (%v / %v)",
					strings.Join(a.Paths, " "), strings.Join(b.Paths, " "), a.ACR, b.ACR)
			}
		}
	}
}

// patternsMayOverlap reports whether some path could match a pattern of
// each list. It is conservative: wildcard patterns are compared by their
// literal prefix.
func patternsMayOverlap(a, b []string) bool {
	prefix := func(p string) (string, bool) {
		if i := strings.IndexByte(p, '*'); i >= 0 {
			return strings.ToLower(p[:i]), true
		}
		return strings.ToLower(p), false
	}
	for _, x := range a {
		for _, y := range b {
			px, wx := prefix(x)
			py, wy := prefix(y)
			switch {
			case wx && wy:
				if strings.HasPrefix(px, py) || strings.HasPrefix(py, px) {
					return true
				}
			case wx:
				if strings.HasPrefix(py, px) {
					return true
				}
			case wy:
				if strings.HasPrefix(px, py) {
					return true
				}
			default:
				if px == py {
					return true
				}
			}
		}
	}
	return false
}

// provisionStepUp builds the rules' matchers and the second providers'
// relying parties (discovery stays lazy).
func (h *Handler) provisionStepUp(ctx caddy.Context) error {
	h.stepUps = h.stepUps[:0]
	for _, r := range h.StepUp {
		m := caddyhttp.MatchPath(append([]string(nil), r.Paths...))
		if err := m.Provision(ctx); err != nil {
			return err
		}
		h.stepUps = append(h.stepUps, stepUpRule{match: m, req: authn.Requirement{
			Provider: r.Provider, ACR: r.ACR, AMR: r.AMR, MaxAge: time.Duration(r.MaxAge)}})
	}
	h.approvalReq = nil
	if a := h.ApprovalStepUp; a != nil {
		h.approvalReq = &authn.Requirement{Provider: a.Provider, ACR: a.ACR, AMR: a.AMR, MaxAge: time.Duration(a.MaxAge)}
	}
	names := make([]string, 0, len(h.Providers))
	for name := range h.Providers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := h.Providers[name]
		val, _, err := providers.LoadOrNew(p.Issuer, func() (caddy.Destructor, error) {
			return &providerEntry{discovery: authn.NewDiscovery(p.Issuer, newIdPClient()), used: authn.NewUsedStates()}, nil
		})
		if err != nil {
			return err
		}
		h.providerKeys = append(h.providerKeys, p.Issuer)
		entry := val.(*providerEntry)
		scopes := p.Scopes
		if len(scopes) == 0 {
			scopes = []string{"openid"}
		}
		extra := append([]string(nil), p.Claims...)
		if p.LinkClaim != "email" {
			extra = append(extra, p.LinkClaim)
		}
		p.rp = &authn.RelyingParty{
			Discovery: entry.discovery, HTTPClient: entry.discovery.Client(),
			ClientID: p.ClientID, ClientSecret: p.ClientSecret, Scopes: scopes,
			ExtraClaims: extra, TrustUnverifiedEmail: p.TrustUnverifiedEmail, Now: h.now,
		}
	}
	return nil
}

// resolveProviders resolves placeholders in the providers' settings.
func (h *Handler) resolveProviders(repl *caddy.Replacer) {
	for _, p := range h.Providers {
		if p == nil {
			continue
		}
		p.Issuer = strings.TrimSpace(repl.ReplaceKnown(p.Issuer, ""))
		p.ClientID = repl.ReplaceKnown(p.ClientID, "")
		p.ClientSecret = repl.ReplaceKnown(p.ClientSecret, "")
	}
}

// linkClaims are the session claims second providers link on; the
// primary login keeps them.
func (h *Handler) linkClaims() []string {
	var out []string
	for _, p := range h.Providers {
		if p != nil && p.LinkClaim != "email" && !builtinClaims[p.LinkClaim] && !slices.Contains(out, p.LinkClaim) {
			out = append(out, p.LinkClaim)
		}
	}
	sort.Strings(out)
	return out
}

// requirements lists what a request needs: the step_up rules matching its
// canonical path, and the policy decision's obligation.
func (h *Handler) requirements(pv *pathView, dec policies.Decision) ([]authn.Requirement, error) {
	var reqs []authn.Requirement
	for _, r := range h.stepUps {
		if r.match.Match(pv.req()) {
			reqs = append(reqs, r.req)
		}
	}
	if s := dec.StepUp; s != nil {
		reqs = append(reqs, authn.Requirement{ACR: s.ACR, AMR: s.AMR, MaxAge: s.MaxAge})
	}
	// The approvals page's own requirement, so that the step-up endpoint
	// (which a 401 from that page names) starts it too.
	if h.approvalReq != nil && strings.EqualFold(pv.canon, approvalsPath) {
		reqs = append(reqs, *h.approvalReq)
	}
	if len(reqs) == 0 {
		return nil, nil
	}
	return authn.Combine(reqs...)
}

// firstUnmet returns the first requirement the session does not meet.
func firstUnmet(reqs []authn.Requirement, s *authn.Session, now time.Time) (authn.Requirement, string) {
	for _, r := range reqs {
		if why := r.Unmet(s, now); why != "" {
			return r, why
		}
	}
	return authn.Requirement{}, ""
}

// stepUpPolicy applies step 7 of the pipeline. It returns true when the
// request may go on; otherwise it has answered.
func (h *Handler) stepUpPolicy(w http.ResponseWriter, r *http.Request, pv *pathView, d *decision, s *authn.Session, dec policies.Decision) bool {
	if len(h.stepUps) == 0 && dec.StepUp == nil {
		return true
	}
	reqs, err := h.requirements(pv, dec)
	if err != nil {
		d.result, d.reason = "deny", "step_up_conflict"
		h.logger.Error("conflicting step-up requirements", zap.String("decision_id", d.ID()), zap.Error(err))
		_ = h.reject(w, r, d, answer{Status: http.StatusForbidden, Error: "forbidden", Reason: "step_up_conflict",
			Title: "Access denied", Message: "This page asks for sign-in requirements that no sign-in can meet together. Please contact your administrator with the reference below."})
		return false
	}
	req, why := firstUnmet(reqs, s, d.start)
	if why == "" {
		return true
	}
	_ = h.requireStepUp(w, r, d, s, req, why, r.URL.RequestURI())
	return false
}

// stepUpJSON is how a 401 names what is missing.
type stepUpJSON struct {
	Provider string   `json:"provider,omitempty"`
	ACR      []string `json:"acr,omitempty"`
	AMR      []string `json:"amr,omitempty"`
	MaxAge   string   `json:"max_age,omitempty"`
}

// requireStepUp answers a request whose session lacks a requirement:
// navigations are sent to the provider, anything else gets 401 JSON that
// names the requirement and the URL that starts the step-up.
func (h *Handler) requireStepUp(w http.ResponseWriter, r *http.Request, d *decision, s *authn.Session, req authn.Requirement, why, returnTo string) error {
	d.reason = "step_up_" + why
	if !authn.IsNavigation(r) {
		d.result = "step_up_required"
		start := "/.gatehouse/stepup?rd=" + url.QueryEscape(authn.SafeReturnPath(returnTo))
		a := answer{Status: http.StatusUnauthorized, Error: "step_up_required", Reason: why,
			Title: "Stronger sign-in needed", Message: "This page needs a stronger or more recent sign-in: " + req.String() + ".",
			StepUpURL: start, ActionURL: start, ActionText: "Sign in again"}
		a.Requirement = &stepUpJSON{Provider: req.Provider, ACR: req.ACR, AMR: req.AMR}
		if req.MaxAge > 0 {
			a.Requirement.MaxAge = req.MaxAge.String()
		}
		return h.reject(w, r, d, a)
	}
	d.result = "step_up"
	return h.beginStepUp(w, r, d, s, req, returnTo)
}

// relyingParty returns the primary IdP's relying party, or a second
// provider's.
func (h *Handler) relyingParty(provider string) (*authn.RelyingParty, bool) {
	if provider == "" {
		return h.rp, true
	}
	p := h.Providers[provider]
	if p == nil || p.rp == nil {
		return nil, false
	}
	return p.rp, true
}

// beginStepUp sends the browser to the provider with acr_values, max_age
// and prompt=login, remembering what the login must prove.
func (h *Handler) beginStepUp(w http.ResponseWriter, r *http.Request, d *decision, s *authn.Session, req authn.Requirement, returnTo string) error {
	origin, ok := h.origin(r)
	if !ok {
		d.result, d.reason = "reject", "https_required"
		return h.reject(w, r, d, answer{Status: http.StatusBadRequest, Error: "bad_request", Reason: "https_required",
			Message: "This application must be reached over HTTPS."})
	}
	rp, ok := h.relyingParty(req.Provider)
	if !ok {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("step-up provider %q is not configured", req.Provider))
	}
	opt := authn.AuthOptions{ForceLogin: true, MaxAge: req.MaxAge, ACRValues: req.ACR}
	st, err := rp.Begin(r.Context(), origin+"/.gatehouse/callback", returnTo, opt)
	if err != nil {
		return h.idpDown(w, r, d, err)
	}
	st.StepUp = &authn.StepUpState{Provider: req.Provider, ACR: req.ACR, AMR: req.AMR,
		MaxAge: int64(req.MaxAge / time.Second), Session: s.ID}
	if err := h.sendToIdP(w, r, d, rp, st, opt); err != nil {
		return err
	}
	h.auditStepUp("step-up started", d, req, "")
	return nil
}

// serveStepUp is /.gatehouse/stepup?rd=<path>: it starts the step-up that
// rd needs (the URL a 401 names), or goes straight to rd when none is
// missing.
func (h *Handler) serveStepUp(w http.ResponseWriter, r *http.Request, d *decision) error {
	if r.Method != http.MethodGet {
		return h.methodNotAllowed(w, r, d, "GET")
	}
	rd := authn.SafeReturnPath(r.URL.Query().Get("rd"))
	sess, gst, grantsErr, reason := h.liveSession(r, d.start)
	if sess == nil {
		d.result, d.reason = "login", string(reason)
		return h.beginLogin(w, r, d, rd, reason.ForcesReauthentication())
	}
	d.user, d.email = sess.Subject, sess.Email
	u, _ := url.Parse(rd)
	canon, err := authn.CanonicalPath(u.EscapedPath())
	if err != nil {
		http.Redirect(w, r, "/", http.StatusFound)
		return nil
	}
	target := r.Clone(r.Context())
	target.Method = http.MethodGet
	target.URL = u
	target.RequestURI = rd
	var dec policies.Decision
	if h.engine != nil {
		dec, _ = h.decide(target, sess, canon, d, gst.Grants, grantsErr)
	}
	reqs, err := h.requirements(&pathView{r: target, canon: canon}, dec)
	if err == nil {
		if req, why := firstUnmet(reqs, sess, d.start); why != "" {
			d.result, d.reason = "step_up", "step_up_"+why
			return h.beginStepUp(w, r, d, sess, req, rd)
		}
	}
	d.result, d.reason = "internal", "step_up_not_needed"
	http.Redirect(w, r, rd, http.StatusFound)
	return nil
}

// finishStepUp completes a step-up login at the callback: the session it
// was started for must still be the browser's, the new identity must be
// the same user (primary) or link to it (second provider), and it must
// prove what was asked. The session is then upgraded in place.
func (h *Handler) finishStepUp(w http.ResponseWriter, r *http.Request, d *decision, code string, st *authn.LoginState,
	failed func(status int, reason, msg string) error) error {
	su := st.StepUp
	req := su.Requirement()
	sess, _, _, _ := h.liveSession(r, d.start)
	if sess == nil || sess.ID != su.Session {
		h.auditStepUp("step-up refused", d, req, "session_changed")
		return failed(http.StatusUnauthorized, "session_changed", "Your session ended or changed during the stronger sign-in. Please sign in and try again.")
	}
	d.user, d.email = sess.Subject, sess.Email
	rp, ok := h.relyingParty(su.Provider)
	if !ok {
		return failed(http.StatusInternalServerError, "provider_unknown", "This sign-in provider is no longer configured.")
	}
	id, err := rp.Finish(r.Context(), code, st)
	if id != nil {
		d.refused = id.Refused
	}
	if err != nil {
		var le *authn.LoginError
		if errors.As(err, &le) {
			h.auditStepUp("step-up refused", d, req, le.Reason)
			return failed(http.StatusForbidden, le.Reason, le.Msg)
		}
		return h.idpDown(w, r, d, err)
	}
	if su.Provider == "" && id.Subject != sess.Subject {
		h.auditStepUp("step-up refused", d, req, "identity_mismatch")
		return failed(http.StatusForbidden, "identity_mismatch", "You signed in as someone else. A stronger sign-in must be done by the same person.")
	}
	if su.Provider != "" {
		if why := h.link(su.Provider, id, sess); why != "" {
			h.auditStepUp("step-up refused", d, req, "link_mismatch")
			return failed(http.StatusForbidden, "link_mismatch", why)
		}
	}
	if err := authn.AcceptStepUp(id, req, time.Unix(st.Started, 0), h.now()); err != nil {
		var le *authn.LoginError
		errors.As(err, &le)
		h.auditStepUp("step-up refused", d, req, le.Reason)
		return failed(http.StatusForbidden, le.Reason, le.Msg)
	}
	h.provider.used.Mark(st.State, time.Unix(st.Started, 0), d.start)
	if su.Provider == "" {
		sess.ACR, sess.AMR, sess.AuthTime = id.ACR, id.AMR, id.AuthTime
		if v, err := h.idTokens.Seal(h.idTokenCookie, id.RawIDToken); err == nil {
			http.SetCookie(w, h.cookie(h.idTokenCookie, v, "/.gatehouse/", int(h.lifetimes.Lifetime.Seconds()), ""))
		}
	} else {
		if sess.Verifications == nil {
			sess.Verifications = map[string]authn.Verification{}
		}
		claims := map[string]string{}
		for _, c := range h.Providers[su.Provider].Claims {
			if v, ok := id.Extra[c]; ok {
				claims[c] = v
			}
		}
		sess.Verifications[su.Provider] = authn.Verification{ACR: id.ACR, AMR: id.AMR, AuthTime: id.AuthTime, Claims: claims}
	}
	sess.LastSeen = d.start.Unix()
	if err := h.writeSession(w, sess); err != nil {
		return failed(http.StatusInternalServerError, "session_too_large", "The verified facts do not fit in your session. Please contact your administrator.")
	}
	d.result, d.reason = "step_up_ok", ""
	h.auditStepUp("step-up succeeded", d, req, "")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, authn.SafeReturnPath(st.Return), http.StatusFound)
	return nil
}

// link says why a second provider's identity does not belong to the
// session's user, or "" when the link claim matches.
func (h *Handler) link(provider string, id *authn.Identity, s *authn.Session) string {
	p := h.Providers[provider]
	var theirs, ours string
	if p.LinkClaim == "email" {
		theirs, ours = id.Email, s.Email
	} else {
		theirs, ours = id.Extra[p.LinkClaim], h.claimValue(s, p.LinkClaim)
	}
	if theirs == "" || ours == "" {
		return fmt.Sprintf("The verification cannot be linked to your account: %s is missing (verified values only).", p.LinkClaim)
	}
	if p.LinkClaim == "email" && strings.EqualFold(theirs, ours) || theirs == ours {
		return ""
	}
	return fmt.Sprintf("The verification belongs to someone else: its %s does not match your account's.", p.LinkClaim)
}

// auditStepUp writes a step-up event line (besides the request's decision
// line), naming the requirement and, when refused, why.
func (h *Handler) auditStepUp(msg string, d *decision, req authn.Requirement, reason string) {
	h.auditLog.Info(msg, zap.String("decision_id", d.ID()), zap.String("app", h.App), zap.String("user", d.user),
		zap.String("provider", req.Provider), zap.Strings("acr", req.ACR), zap.Strings("amr", req.AMR),
		zap.Duration("max_age", req.MaxAge), zap.String("reason", reason))
}
