package gate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// Just-in-time access: the deny page's request form, "my access", and
// (approvals.go) the approvers' page.
const (
	// offerTTL is how long a deny page's request form stays valid.
	offerTTL = 15 * time.Minute
	// offerName is the name the offer is sealed under.
	offerName = "gatehouse-offer"
	// storeTimeout bounds the store calls of Gatehouse's pages (not the
	// hot path).
	storeTimeout = 2 * time.Second
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

// The pages' own data (Answer.Data), which page templates read as
// .Extra: part of the documented template contract (docs/pages.md).

// RequestForm is the deny page's request form (the "request" page).
type RequestForm struct {
	CSRF        string           // the form's csrf field
	Offer       string           // the sealed offer, the form's offer field
	Resource    string           // what access is offered to
	MaxDuration string           // the longest duration offered, for people ("4 hours")
	Durations   []DurationChoice // the duration menu, up to MaxDuration
}

// notices are the lines a page shows after a form (?notice=…).
var notices = map[string]string{
	"requested":       "Your request was sent. You will have access once it is approved.",
	"auto_approved":   "Your request was approved at once.",
	"approved":        "Approved. The access is active now.",
	"rejected":        "Rejected.",
	"ended":           "That access has ended.",
	"already_decided": "Someone else decided that request first.",
}

// denyWithOffer is a deny whose decision offers a grant: a page with the
// request form, or JSON with what a client needs to post it.
// The page says in plain words what the user can do (the policy's own
// reason, in words for its authors, is in the audit line); msg is said
// only when the form cannot be made.
func (g *Gate) denyWithOffer(req *Request, out Outcome, s *authn.Session, msg string, offer *policies.GrantOffer) Outcome {
	o := grantOffer{App: g.cfg.App, Iss: s.Issuer, Sub: s.Subject, Resource: offer.Resource, Max: int64(offer.MaxDuration / time.Second),
		Return: authn.SafeReturnPath(req.HTTP.URL.RequestURI()), Expires: req.Start.Add(offerTTL).Unix()}
	a := &Answer{Error: "forbidden", Title: "Access denied", Message: msg}
	sealed, err := g.offers.Seal(offerName, o)
	if err != nil {
		return out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonPolicyDeny, a)
	}
	a.Message = "You need temporary access to " + offer.Resource + ". Ask for it here."
	out = out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonPolicyDeny, a)
	csrf := g.csrf.Token(s.ID)
	a.Page = "request"
	a.Data = RequestForm{CSRF: csrf, Offer: sealed, Resource: offer.Resource, MaxDuration: humanDuration(offer.MaxDuration),
		Durations: durationChoices(offer.MaxDuration)}
	a.JSON = struct {
		*Answer
		RequestGrant map[string]string `json:"request_grant"`
	}{a, map[string]string{"resource": offer.Resource, "max_duration": offer.MaxDuration.String(),
		"request_url": PathRequest, "offer": sealed, "csrf": csrf}}
	return out
}

// requestAccess takes the deny page's form (POST): a request for a
// resource the policy offered this user, for no longer than it allowed.
// The approval policy may grant it at once.
func (g *Gate) requestAccess(req *Request, out Outcome) Outcome {
	r, now := req.HTTP, req.Start
	in, ok := g.pageSession(req, &out, PathAccess)
	if !ok || !g.checkForm(req, &out, &in) {
		return out
	}
	sess := in.Session
	back := "" // the page the form was for, once the offer is open
	fail := func(status int, reason Reason, msg string) Outcome {
		return out.refuse(Deny, status, ResultDeny, reason, &Answer{Error: "bad_request", Title: "Request not sent", Message: msg, Return: back})
	}
	var o grantOffer
	if err := g.offers.Open(offerName, r.PostForm.Get("offer"), &o); err != nil ||
		o.App != g.cfg.App || o.Iss != sess.Issuer || o.Sub != sess.Subject {
		return fail(http.StatusForbidden, ReasonOfferInvalid, "This request form was not offered to you. Open the page you need again.")
	}
	back = authn.SafeReturnPath(o.Return)
	if now.Unix() >= o.Expires {
		return fail(http.StatusForbidden, ReasonOfferExpired, "This request form has expired. Open the page you need again.")
	}
	reason := CleanText(r.PostForm.Get("reason"), 500)
	if reason == "" {
		return fail(http.StatusBadRequest, ReasonReasonMissing, "Please say why you need this access.")
	}
	dur, err := time.ParseDuration(r.PostForm.Get("duration"))
	if err != nil || dur < time.Second || dur > time.Duration(o.Max)*time.Second {
		return fail(http.StatusBadRequest, ReasonDurationInvalid, fmt.Sprintf("Choose a duration of at most %s.", humanDuration(time.Duration(o.Max)*time.Second)))
	}
	ctx, cancel, store := g.pageStore(req)
	defer cancel()
	// A resubmitted or replayed form does not make a second request.
	u := g.user(sess)
	pending, err := store.Requests(ctx, grants.RequestFilter{App: g.cfg.App, Status: grants.Pending, User: &u})
	if err != nil {
		return g.storeDown(out, err)
	}
	for _, p := range pending {
		if p.Resource == o.Resource {
			out.Result, out.Reason = ResultGrantRequested, ReasonAlreadyPending
			return out.redirect(Redirect, http.StatusSeeOther, PathAccess+"?notice=requested")
		}
	}
	ar, err := store.CreateRequest(ctx, grants.Request{App: g.cfg.App, Resource: o.Resource, Reason: reason, User: u,
		Email: sess.Email, Name: sess.Name, Duration: int64(dur / time.Second), MaxDuration: o.Max, CreatedAt: now.Unix()})
	if err != nil {
		return g.storeDown(out, err)
	}
	out.Result, out.Reason = ResultGrantRequested, ReasonNone
	out.Events = append(out.Events, g.requestEvent(EventGrantRequested, &out, &ar, ""))

	// The approval policy may approve at once.
	if g.cfg.Policy != nil {
		ap, err := g.approval(req, &out, in, ar)
		if err != nil {
			g.log.Error("approval policy error: the request waits for an approver", zap.String("decision_id", out.Audit.ID()), zap.Error(err))
		} else if ap.AutoApprove {
			dr, grant, err := store.Decide(ctx, ar.ID, grants.Decision{Approve: true, Auto: true, By: "policy " + out.Audit.Revision,
				Reason: "auto-approved by policy", MaxDuration: ap.MaxDuration, Now: now})
			if err == nil && grant != nil {
				g.cfg.Grants.Invalidate(dr.User)
				out.Events = append(out.Events, g.grantEvent(EventGrantAutoApproved, &out, grant, ""))
				return out.redirect(Redirect, http.StatusSeeOther, authn.SafeReturnPath(o.Return))
			}
			if err != nil && !errors.Is(err, grants.ErrAlreadyDecided) {
				return g.storeDown(out, err)
			}
		}
	}
	return out.redirect(Redirect, http.StatusSeeOther, PathAccess+"?notice=requested")
}

// approval asks the approval policy what the current user may do with
// an access request.
func (g *Gate) approval(req *Request, out *Outcome, in signedIn, ar grants.Request) (policies.Approval, error) {
	src := g.inputSource(req, in.Session, in.Grants.Grants, in.GrantsErr)
	input := policies.NewInput(&src, nil, true)
	input.AccessReq = &policies.AccessRequest{
		Requester: policies.Requester{Sub: ar.User.Sub, Iss: ar.User.Iss, Email: ar.Email},
		Resource:  ar.Resource, Reason: ar.Reason, Duration: (time.Duration(ar.Duration) * time.Second).String(),
	}
	rev := g.cfg.Policy.Current()
	out.Audit.Revision = rev.ID
	ap, err := rev.Approval(context.WithoutCancel(req.HTTP.Context()), input.Value())
	policies.Release(input)
	return ap, err
}

// pageStore is the grant store for a page's calls, and the context that
// bounds them (they finish even if the client goes away).
func (g *Gate) pageStore(req *Request) (context.Context, context.CancelFunc, grants.Store) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(req.HTTP.Context()), storeTimeout)
	return ctx, cancel, g.cfg.Grants.Store()
}

// storeDown answers when the grant store fails a page's operation.
func (g *Gate) storeDown(out Outcome, err error) Outcome {
	g.log.Error("grant store", zap.String("decision_id", out.Audit.ID()), zap.Error(err))
	return out.refuse(Unavailable, http.StatusServiceUnavailable, ResultError, ReasonGrantsDown, &Answer{Error: "grants_unavailable",
		Title: "Temporarily unavailable", Message: "Temporary access cannot be requested or changed right now. Please try again in a minute."})
}

// grantEvent and requestEvent are grant events caused by this request:
// the signed-in user is the actor.
func (g *Gate) grantEvent(msg string, out *Outcome, gr *grants.Grant, why string) Event {
	e := GrantEvent(msg, gr, out.Audit.User, why)
	e.Fields = append(e.Fields, zap.String("decision_id", out.Audit.ID()))
	return e
}

func (g *Gate) requestEvent(msg string, out *Outcome, ar *grants.Request, why string) Event {
	e := RequestEvent(msg, ar, out.Audit.User, why)
	e.Fields = append(e.Fields, zap.String("decision_id", out.Audit.ID()))
	return e
}

// GrantView is one active grant on "my access".
type GrantView struct {
	ID         string // the form's grant field, to end it
	Resource   string
	Left       string // time left, for people ("2 hours 5 minutes")
	Until      string // when it ends, UTC ("2026-01-31 17:00 UTC")
	ApprovedBy string
}

// RequestView is one access request: the user's own on "my access",
// someone else's on the approvals page.
type RequestView struct {
	ID             string // the form's request field, to decide it
	Resource       string
	Duration       string // asked for, for people
	Cap            string // the longest the offer allowed, for people
	Status         string // pending, approved, rejected, auto-approved
	DecidedBy      string
	DecisionReason string // the approver's note
	Who            string // the requester: "Name <email>", else their subject
	Reason         string // why they asked
	Asked          string // when, UTC
}

// AccessPage is the data of "my access" (Grants and the user's
// Requests) and of the approvals page (the Requests this user may
// decide).
type AccessPage struct {
	CSRF     string // the forms' csrf field
	Grants   []GrantView
	Requests []RequestView
}

// access is "my access": the user's active grants with the time left,
// and their requests. A POST ends one of the user's own grants early.
func (g *Gate) access(req *Request, out Outcome) Outcome {
	r, now := req.HTTP, req.Start
	in, ok := g.pageSession(req, &out, PathAccess)
	if !ok {
		return out
	}
	sess := in.Session
	u := g.user(sess)
	ctx, cancel, store := g.pageStore(req)
	defer cancel()
	if r.Method == http.MethodPost {
		if !g.checkForm(req, &out, &in) {
			return out
		}
		return g.endGrant(ctx, req, out, sess, store)
	}
	gs, err := store.Grants(ctx, grants.GrantFilter{User: &u, Now: now})
	if err != nil {
		return g.storeDown(out, err)
	}
	reqs, err := store.Requests(ctx, grants.RequestFilter{App: g.cfg.App, User: &u})
	if err != nil {
		return g.storeDown(out, err)
	}
	page := AccessPage{CSRF: g.csrf.Token(sess.ID)}
	for _, gr := range gs {
		page.Grants = append(page.Grants, GrantView{ID: gr.ID, Resource: gr.Resource, ApprovedBy: gr.ApprovedBy,
			Left:  humanDuration(time.Unix(gr.ExpiresAt, 0).Sub(now)),
			Until: time.Unix(gr.ExpiresAt, 0).UTC().Format("2006-01-02 15:04 MST")})
	}
	for i := len(reqs) - 1; i >= 0 && len(page.Requests) < 20; i-- {
		page.Requests = append(page.Requests, viewRequest(reqs[i]))
	}
	out.Kind, out.Status, out.Reason = Page, http.StatusOK, ReasonMyAccess
	out.Answer = &Answer{Title: "My access", Page: "access", Notice: notices[r.URL.Query().Get("notice")],
		Data: page, JSON: map[string]any{"grants": gs, "requests": reqs, "csrf": page.CSRF}}
	out.identify(out.Answer)
	return out
}

// endGrant ends one of the user's own grants (the "End now" button).
func (g *Gate) endGrant(ctx context.Context, req *Request, out Outcome, sess *authn.Session, store grants.Store) Outcome {
	r, now := req.HTTP, req.Start
	u := g.user(sess)
	id := r.PostForm.Get("grant")
	gs, err := store.Grants(ctx, grants.GrantFilter{User: &u, Now: now})
	if err != nil {
		return g.storeDown(out, err)
	}
	for _, gr := range gs {
		if gr.ID != id || r.PostForm.Get("action") != "end" {
			continue
		}
		rg, err := store.RevokeGrant(ctx, id, displayUser(sess), now)
		if errors.Is(err, grants.ErrNotDurable) {
			g.cfg.Grants.NoteGrantRevoked(rg) // it holds here, and is written back if a failover loses it
		}
		if err != nil {
			return g.storeDown(out, err)
		}
		g.cfg.Grants.NoteGrantRevoked(rg)
		out.Result = ResultGrantRevoked
		out.Events = append(out.Events, g.grantEvent(EventGrantRevoked, &out, &rg, "ended by the user"))
		return out.redirect(Redirect, http.StatusSeeOther, PathAccess+"?notice=ended")
	}
	return out.refuse(BadRequest, http.StatusNotFound, ResultDeny, ReasonNotYourGrant, &Answer{Error: "not_found",
		Message: "You do not have that access any more: it may have ended already."})
}

func viewRequest(q grants.Request) RequestView {
	who := q.Name
	if q.Email != "" {
		who = strings.TrimSpace(who + " <" + q.Email + ">")
	}
	if who == "" {
		who = q.User.Sub
	}
	return RequestView{ID: q.ID, Resource: q.Resource, Reason: q.Reason, Who: who, Status: strings.ReplaceAll(string(q.Status), "_", "-"),
		Duration: humanDuration(time.Duration(q.Duration) * time.Second), Cap: humanDuration(time.Duration(q.MaxDuration) * time.Second),
		DecidedBy: q.DecidedBy, DecisionReason: q.DecisionReason, Asked: time.Unix(q.CreatedAt, 0).UTC().Format("2006-01-02 15:04 MST")}
}
