package module

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// grantOffer is what a deny page offers, sealed into its request form:
// nobody can request a resource the policy never offered them.
type grantOffer struct {
	App      string `json:"a"`
	Iss      string `json:"i"`
	Sub      string `json:"s"`
	Resource string `json:"r"`
	Max      int64  `json:"m"` // seconds
	Return   string `json:"rt"`
	Expires  int64  `json:"e"`
}

const offerCookie = "gatehouse-offer" // the name the offer is sealed under

// storeTimeout bounds writes made from Gatehouse's pages (not the hot path).
const storeTimeout = 2 * time.Second

type durationChoice struct{ Value, Label string }

// durationChoices offers common durations up to the cap, and the cap.
func durationChoices(max time.Duration) []durationChoice {
	var out []durationChoice
	for _, d := range []time.Duration{15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour, 24 * time.Hour} {
		if d < max {
			out = append(out, durationChoice{d.String(), humanDuration(d)})
		}
	}
	return append(out, durationChoice{max.String(), humanDuration(max)})
}

// humanDuration writes a duration for people: "1 hour", "2 hours 30
// minutes", "45 seconds".
func humanDuration(d time.Duration) string {
	if d < time.Minute {
		return plural(int64(d/time.Second), "second")
	}
	d = d.Round(time.Minute)
	h, m := int64(d/time.Hour), int64(d%time.Hour/time.Minute)
	switch {
	case h == 0:
		return plural(m, "minute")
	case m == 0:
		return plural(h, "hour")
	}
	return plural(h, "hour") + " " + plural(m, "minute")
}

func plural(n int64, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

type requestPage struct {
	CSRF, Offer, Resource, MaxDuration string
	Durations                          []durationChoice
}

// denyWithOffer answers a deny whose decision offers a grant: a page with
// the request form, or JSON with what a client needs to post it.
func (h *Handler) denyWithOffer(w http.ResponseWriter, r *http.Request, d *decision, s *authn.Session, msg string, offer *policies.GrantOffer) {
	o := grantOffer{App: h.App, Iss: h.Issuer, Sub: s.Subject, Resource: offer.Resource, Max: int64(offer.MaxDuration / time.Second),
		Return: authn.SafeReturnPath(r.URL.RequestURI()), Expires: d.start.Add(offerTTL).Unix()}
	sealed, err := h.offers.Seal(offerCookie, o)
	if err != nil {
		_ = h.reject(w, r, d, answer{Status: http.StatusForbidden, Error: "forbidden", Reason: "policy_deny", Title: "Access denied", Message: msg})
		return
	}
	a := answer{Status: http.StatusForbidden, Error: "forbidden", Reason: "policy_deny", Title: "Access denied", Message: msg, Reference: d.ID()}
	h.audit(d)
	body := struct {
		answer
		RequestGrant map[string]string `json:"request_grant"`
	}{a, map[string]string{"resource": offer.Resource, "max_duration": offer.MaxDuration.String(),
		"request_url": "/.gatehouse/request", "offer": sealed, "csrf": h.csrf.Token(s.ID)}}
	h.pages.render(w, authn.WantsHTML(r), "request", pageData{answer: a, App: h.App, User: displayUser(s), Extra: requestPage{
		CSRF: h.csrf.Token(s.ID), Offer: sealed, Resource: offer.Resource, MaxDuration: humanDuration(offer.MaxDuration),
		Durations: durationChoices(offer.MaxDuration)}}, body)
}

func displayUser(s *authn.Session) string {
	if s.Email != "" {
		return s.Email
	}
	return s.Subject
}

// pageSession is the session of a request to one of Gatehouse's pages:
// valid and not revoked. Without one it has answered (login for a
// navigation, 401 otherwise).
func (h *Handler) pageSession(w http.ResponseWriter, r *http.Request, d *decision, path string) (*authn.Session, bool) {
	sess, _, _, reason := h.liveSession(r, d.start)
	if sess == nil {
		d.reason = string(reason)
		if authn.IsNavigation(r) {
			d.result = "login"
			_ = h.beginLogin(w, r, d, path, reason.ForcesReauthentication())
			return nil, false
		}
		d.result = "unauthenticated"
		_ = h.reject(w, r, d, answer{Status: http.StatusUnauthorized, Error: "unauthenticated", Reason: string(reason),
			Message: "Sign in to use this page.", LoginURL: "/.gatehouse/login?rd=" + url.QueryEscape(path)})
		return nil, false
	}
	d.user, d.email = sess.Subject, sess.Email
	return sess, true
}

// checkForm guards every state-changing form: POST, a CSRF token tied to
// this session, and no cross-site origin.
func (h *Handler) checkForm(w http.ResponseWriter, r *http.Request, d *decision, s *authn.Session) bool {
	if r.Method != http.MethodPost {
		_ = h.methodNotAllowed(w, r, d, "POST")
		return false
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	bad := func(why string) bool {
		d.result, d.reason = "deny", why
		_ = h.reject(w, r, d, answer{Status: http.StatusForbidden, Error: "forbidden", Reason: why,
			Title: "Request refused", Message: "This form could not be verified. Go back, reload the page and try again."})
		return false
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return bad("cross_site_form")
	}
	switch o := r.Header.Get("Origin"); {
	case o == "null":
		// Sent by a page with a no-referrer policy: trust only Fetch
		// Metadata then.
		if r.Header.Get("Sec-Fetch-Site") != "same-origin" {
			return bad("cross_site_form")
		}
	case o != "":
		if own, ok := h.origin(r); !ok || !strings.EqualFold(o, own) {
			return bad("cross_site_form")
		}
	}
	if err := r.ParseForm(); err != nil {
		return bad("bad_form")
	}
	if !h.csrf.Valid(s.ID, r.PostForm.Get("csrf")) {
		return bad("csrf")
	}
	return true
}

// cleanText keeps a free-text field to one line of printable text, at
// most max bytes of valid UTF-8: controls, invalid bytes and invisible
// format characters (bidi overrides such as U+202E, which could make a
// reason read differently to an approver) become spaces.
func cleanText(s string, max int) string {
	s = strings.TrimSpace(strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s))
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

var notices = map[string]string{
	"requested":       "Your request was sent. You will have access once it is approved.",
	"auto_approved":   "Your request was approved at once by policy.",
	"approved":        "Approved. The access is active now.",
	"rejected":        "Rejected.",
	"ended":           "That access has ended.",
	"already_decided": "Someone else decided that request first.",
}

// serveRequest takes the deny page's form: a request for a resource the
// policy offered this user, for no longer than it allowed. The approval
// policy may grant it at once.
func (h *Handler) serveRequest(w http.ResponseWriter, r *http.Request, d *decision) error {
	if r.Method != http.MethodPost {
		return h.methodNotAllowed(w, r, d, "POST")
	}
	sess, ok := h.pageSession(w, r, d, "/.gatehouse/access")
	if !ok || !h.checkForm(w, r, d, sess) {
		return nil
	}
	fail := func(status int, reason, msg string) error {
		d.result, d.reason = "deny", reason
		return h.reject(w, r, d, answer{Status: status, Error: "bad_request", Reason: reason, Title: "Request not sent", Message: msg})
	}
	var o grantOffer
	if err := h.offers.Open(offerCookie, r.PostForm.Get("offer"), &o); err != nil ||
		o.App != h.App || o.Iss != h.Issuer || o.Sub != sess.Subject {
		return fail(http.StatusForbidden, "offer_invalid", "This request form was not offered to you. Open the page you need again.")
	}
	if d.start.Unix() >= o.Expires {
		return fail(http.StatusForbidden, "offer_expired", "This request form has expired. Open the page you need again.")
	}
	reason := cleanText(r.PostForm.Get("reason"), 500)
	if reason == "" {
		return fail(http.StatusBadRequest, "reason_missing", "Please say why you need this access.")
	}
	dur, err := time.ParseDuration(r.PostForm.Get("duration"))
	if err != nil || dur < time.Second || dur > time.Duration(o.Max)*time.Second {
		return fail(http.StatusBadRequest, "duration_invalid", fmt.Sprintf("Choose a duration of at most %s.", humanDuration(time.Duration(o.Max)*time.Second)))
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), storeTimeout)
	defer cancel()
	store := h.cache.Store()
	// A resubmitted or replayed form does not make a second request.
	u := h.user(sess)
	pending, err := store.Requests(ctx, grants.RequestFilter{App: h.App, Status: grants.Pending, User: &u})
	if err != nil {
		return h.storeDown(w, r, d, err)
	}
	for _, p := range pending {
		if p.Resource == o.Resource {
			d.result, d.reason = "grant_requested", "already_pending"
			http.Redirect(w, r, "/.gatehouse/access?notice=requested", http.StatusSeeOther)
			return nil
		}
	}
	req, err := store.CreateRequest(ctx, grants.Request{App: h.App, Resource: o.Resource, Reason: reason, User: h.user(sess),
		Email: sess.Email, Name: sess.Name, Duration: int64(dur / time.Second), MaxDuration: o.Max, CreatedAt: d.start.Unix()})
	if err != nil {
		return h.storeDown(w, r, d, err)
	}
	d.result, d.reason = "grant_requested", ""
	h.auditGrant("grant requested", d, requestFields(&req)...)

	// The approval policy may approve at once.
	if h.engine != nil {
		ap, err := h.approval(r, sess, d, req)
		if err != nil {
			h.logger.Error("approval policy error: the request waits for an approver", zap.String("decision_id", d.ID()), zap.Error(err))
		} else if ap.AutoApprove {
			dr, g, err := store.Decide(ctx, req.ID, grants.Decision{Approve: true, Auto: true, By: "policy " + d.revision,
				Reason: "auto-approved by policy", MaxDuration: ap.MaxDuration, Now: d.start})
			if err == nil && g != nil {
				h.cache.Invalidate(dr.User)
				h.auditGrant("grant auto-approved", d, grantFields(g)...)
				http.Redirect(w, r, authn.SafeReturnPath(o.Return), http.StatusSeeOther)
				return nil
			}
			if err != nil && !errors.Is(err, grants.ErrAlreadyDecided) {
				return h.storeDown(w, r, d, err)
			}
		}
	}
	http.Redirect(w, r, "/.gatehouse/access?notice=requested", http.StatusSeeOther)
	return nil
}

// approval asks the policy what the current user may do with req.
func (h *Handler) approval(r *http.Request, s *authn.Session, d *decision, req grants.Request) (policies.Approval, error) {
	canon, _ := authn.CanonicalPath(r.URL.EscapedPath())
	gst, gerr := h.lookupGrants(r.Context(), s, d.start)
	in := h.policyInput(r, s, canon, d.start, gst.Grants, gerr, nil)
	in.AccessReq = &policies.AccessRequest{
		Requester: policies.Requester{Sub: req.User.Sub, Iss: req.User.Iss, Email: req.Email},
		Resource:  req.Resource, Reason: req.Reason, Duration: (time.Duration(req.Duration) * time.Second).String(),
	}
	rev := h.engine.Current()
	d.revision = rev.ID
	return rev.Approval(context.WithoutCancel(r.Context()), in.Value())
}

func (h *Handler) storeDown(w http.ResponseWriter, r *http.Request, d *decision, err error) error {
	d.result, d.reason = "error", "grants_unavailable"
	h.logger.Error("grant store", zap.String("decision_id", d.ID()), zap.Error(err))
	return h.reject(w, r, d, answer{Status: http.StatusServiceUnavailable, Error: "grants_unavailable", Reason: "grants_unavailable",
		Title: "Temporarily unavailable", Message: "Temporary access cannot be requested or changed right now. Please try again in a minute."})
}

type grantView struct {
	ID, Resource, Left, Until, ApprovedBy string
}

type requestView struct {
	ID, Resource, Duration, Cap, Status, DecidedBy, DecisionReason, Who, Reason, Asked string
}

type accessPage struct {
	CSRF     string
	Grants   []grantView
	Requests []requestView
}

// serveAccess is "my access": active grants with time left, and requests.
// A POST ends one of the user's own grants early.
func (h *Handler) serveAccess(w http.ResponseWriter, r *http.Request, d *decision) error {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		return h.methodNotAllowed(w, r, d, "GET, POST")
	}
	sess, ok := h.pageSession(w, r, d, "/.gatehouse/access")
	if !ok {
		return nil
	}
	u := h.user(sess)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), storeTimeout)
	defer cancel()
	store := h.cache.Store()
	if r.Method == http.MethodPost {
		if !h.checkForm(w, r, d, sess) {
			return nil
		}
		id := r.PostForm.Get("grant")
		gs, err := store.Grants(ctx, grants.GrantFilter{User: &u, Now: d.start})
		if err != nil {
			return h.storeDown(w, r, d, err)
		}
		for _, g := range gs {
			if g.ID == id && r.PostForm.Get("action") == "end" {
				rg, err := store.RevokeGrant(ctx, id, displayUser(sess), d.start)
				if errors.Is(err, grants.ErrNotDurable) {
					h.cache.NoteGrantRevoked(rg) // it holds here, and is written back if a failover loses it
				}
				if err != nil {
					return h.storeDown(w, r, d, err)
				}
				h.cache.NoteGrantRevoked(rg)
				d.result = "grant_revoked"
				h.auditGrant("grant revoked", d, append(grantFields(&rg), zap.String("why", "ended by the user"))...)
				http.Redirect(w, r, "/.gatehouse/access?notice=ended", http.StatusSeeOther)
				return nil
			}
		}
		d.result, d.reason = "deny", "not_your_grant"
		return h.reject(w, r, d, answer{Status: http.StatusNotFound, Error: "not_found", Reason: "not_your_grant", Message: "You hold no such access."})
	}
	gs, err := store.Grants(ctx, grants.GrantFilter{User: &u, Now: d.start})
	if err != nil {
		return h.storeDown(w, r, d, err)
	}
	reqs, err := store.Requests(ctx, grants.RequestFilter{App: h.App, User: &u})
	if err != nil {
		return h.storeDown(w, r, d, err)
	}
	d.reason = "my_access"
	page := accessPage{CSRF: h.csrf.Token(sess.ID)}
	for _, g := range gs {
		page.Grants = append(page.Grants, grantView{ID: g.ID, Resource: g.Resource, ApprovedBy: g.ApprovedBy,
			Left:  humanDuration(time.Unix(g.ExpiresAt, 0).Sub(d.start)),
			Until: time.Unix(g.ExpiresAt, 0).UTC().Format("2006-01-02 15:04 MST")})
	}
	for i := len(reqs) - 1; i >= 0 && len(page.Requests) < 20; i-- {
		page.Requests = append(page.Requests, viewRequest(reqs[i]))
	}
	h.audit(d)
	h.pages.render(w, authn.WantsHTML(r), "access", pageData{answer: answer{Status: http.StatusOK, Title: "My access"},
		App: h.App, User: displayUser(sess), Notice: notices[r.URL.Query().Get("notice")], Extra: page},
		map[string]any{"grants": gs, "requests": reqs, "csrf": page.CSRF})
	return nil
}

func viewRequest(q grants.Request) requestView {
	who := q.Name
	if q.Email != "" {
		who = strings.TrimSpace(who + " <" + q.Email + ">")
	}
	if who == "" {
		who = q.User.Sub
	}
	return requestView{ID: q.ID, Resource: q.Resource, Reason: q.Reason, Who: who, Status: strings.ReplaceAll(string(q.Status), "_", "-"),
		Duration: humanDuration(time.Duration(q.Duration) * time.Second), Cap: humanDuration(time.Duration(q.MaxDuration) * time.Second),
		DecidedBy: q.DecidedBy, DecisionReason: q.DecisionReason, Asked: time.Unix(q.CreatedAt, 0).UTC().Format("2006-01-02 15:04 MST")}
}

// serveApprovals lists the pending requests the policy lets this user
// decide (never their own), and takes approve/reject, re-checking the
// policy and the approver's step-up on every submit.
func (h *Handler) serveApprovals(w http.ResponseWriter, r *http.Request, d *decision) error {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		return h.methodNotAllowed(w, r, d, "GET, POST")
	}
	sess, ok := h.pageSession(w, r, d, approvalsPath)
	if !ok {
		return nil
	}
	if h.approvalReq != nil {
		reqs, err := h.requirements(&pathView{r: r, canon: approvalsPath}, policies.Decision{})
		if err != nil {
			return err
		}
		if req, why := firstUnmet(reqs, sess, d.start); why != "" {
			return h.requireStepUp(w, r, d, sess, req, why, approvalsPath)
		}
	}
	if h.engine == nil {
		d.reason = "no_policy"
		h.pages.write(w, authn.WantsHTML(r), answer{Status: http.StatusOK, Title: "Approvals",
			Message: "No approval policy is configured, so nobody approves requests here."}, h.App, displayUser(sess))
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), storeTimeout)
	defer cancel()
	store := h.cache.Store()
	if r.Method == http.MethodPost {
		if !h.checkForm(w, r, d, sess) {
			return nil
		}
		return h.decideRequest(ctx, w, r, d, sess, store)
	}
	reqs, err := store.Requests(ctx, grants.RequestFilter{App: h.App, Status: grants.Pending})
	if err != nil {
		return h.storeDown(w, r, d, err)
	}
	page := accessPage{CSRF: h.csrf.Token(sess.ID)}
	var mine []grants.Request
	for _, q := range reqs {
		ap, err := h.approval(r, sess, d, q)
		if err != nil {
			h.logger.Error("approval policy error", zap.String("request_id", q.ID), zap.Error(err))
			continue
		}
		if ap.MayApprove {
			page.Requests = append(page.Requests, viewRequest(q))
			mine = append(mine, q)
		}
	}
	d.reason = "approvals"
	h.audit(d)
	h.pages.render(w, authn.WantsHTML(r), "approvals", pageData{answer: answer{Status: http.StatusOK, Title: "Approvals"},
		App: h.App, User: displayUser(sess), Notice: notices[r.URL.Query().Get("notice")], Extra: page},
		map[string]any{"requests": mine, "csrf": page.CSRF})
	return nil
}

func (h *Handler) decideRequest(ctx context.Context, w http.ResponseWriter, r *http.Request, d *decision, sess *authn.Session, store grants.Store) error {
	action := r.PostForm.Get("action")
	if action != "approve" && action != "reject" {
		d.result, d.reason = "deny", "bad_form"
		return h.reject(w, r, d, answer{Status: http.StatusBadRequest, Error: "bad_request", Reason: "bad_form", Message: "Choose approve or reject."})
	}
	q, err := store.Request(ctx, r.PostForm.Get("request"))
	if errors.Is(err, grants.ErrNotFound) || (err == nil && q.App != h.App) {
		d.result, d.reason = "deny", "request_unknown"
		return h.reject(w, r, d, answer{Status: http.StatusNotFound, Error: "not_found", Reason: "request_unknown", Message: "There is no such request."})
	}
	if err != nil {
		return h.storeDown(w, r, d, err)
	}
	ap, err := h.approval(r, sess, d, q)
	if err != nil || !ap.MayApprove {
		d.result, d.reason = "deny", "not_an_approver"
		if err != nil {
			d.reason = "policy_error"
		}
		h.auditGrant("approval refused", d, append(requestFields(&q), zap.String("why", d.reason))...)
		return h.reject(w, r, d, answer{Status: http.StatusForbidden, Error: "forbidden", Reason: d.reason,
			Title: "Not allowed", Message: "The access policy does not let you decide this request (nobody may approve their own)."})
	}
	dr, g, err := store.Decide(ctx, q.ID, grants.Decision{Approve: action == "approve", By: displayUser(sess),
		Reason: cleanText(r.PostForm.Get("note"), 200), MaxDuration: ap.MaxDuration, Now: d.start})
	if errors.Is(err, grants.ErrAlreadyDecided) {
		http.Redirect(w, r, "/.gatehouse/approvals?notice=already_decided", http.StatusSeeOther)
		return nil
	}
	if err != nil {
		return h.storeDown(w, r, d, err)
	}
	h.cache.Invalidate(dr.User)
	if g != nil {
		d.result = "grant_approved"
		h.auditGrant("grant approved", d, grantFields(g)...)
		http.Redirect(w, r, "/.gatehouse/approvals?notice=approved", http.StatusSeeOther)
		return nil
	}
	d.result = "grant_rejected"
	h.auditGrant("grant rejected", d, append(requestFields(&dr), zap.String("note", dr.DecisionReason))...)
	http.Redirect(w, r, "/.gatehouse/approvals?notice=rejected", http.StatusSeeOther)
	return nil
}
