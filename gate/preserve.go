package gate

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// No lost forms: a form posted after the session idled out or reached
// its lifetime is kept (sealed, in the grant store, for ten minutes,
// bound to this browser and to the user whose session ended) while the
// user signs in again; then /.gatehouse/resubmit shows it as a page of
// hidden fields that the user sends again with one click. Only a
// same-origin form navigation is kept: a form from another site, a
// script's post, a form of someone never signed in or who signed out is
// not, and the page says so. See docs/forms.md.
const (
	// DefaultPreservePost is the largest form body kept by default.
	DefaultPreservePost = 64 << 10
	// MaxPreservePost is the largest preserve_post allowed.
	MaxPreservePost = 1 << 20
	// formTTL is how long a kept form waits for its user.
	formTTL = 10 * time.Minute
	// formSealName is the name kept forms are sealed under.
	formSealName = "gatehouse-form"
)

// formKeeper keeps forms: the cookie that names this browser's kept form
// (path /.gatehouse/; it outlives the form by an hour, to say it expired) and the sealers of the cookie and of
// the form in the store.
type formKeeper struct {
	limit  int64  // preserve_post, bytes; 0 keeps nothing
	cookie string // __Secure-<cookie_name>_form
	refs   *authn.Sealer
	bodies *authn.Sealer
}

func newFormKeeper(cfg Config, binding authn.Binding) (*formKeeper, error) {
	k := &formKeeper{limit: cfg.PreservePost, cookie: "__Secure-" + cfg.CookieName + "_form"}
	var err error
	// The store's expiry decides; the cookie outlives it a little, so
	// that a late user is told the form expired rather than nothing.
	if k.refs, err = authn.NewSealer(cfg.CookieSecrets, "form-ref", binding, formTTL+time.Hour); err != nil {
		return nil, err
	}
	if k.bodies, err = authn.NewSealer(cfg.CookieSecrets, "form", binding, formTTL); err != nil {
		return nil, err
	}
	// JSON escapes a byte as at most 6, sealing adds two base64 rounds.
	k.bodies.SetMaxLength(int(16*max(k.limit, 1)) + 16<<10)
	if cfg.Now != nil {
		k.refs.SetClock(cfg.Now)
		k.bodies.SetClock(cfg.Now)
	}
	return k, nil
}

// keptForm is a kept form, sealed in the store.
type keptForm struct {
	Key     string      `json:"k"` // the store key it was kept under
	Iss     string      `json:"i"`
	Sub     string      `json:"s"`
	Target  string      `json:"t"` // the same-origin path and query it was posted to
	Path    string      `json:"p"` // the canonical path, for the audit
	Enctype string      `json:"e"`
	Fields  []FormField `json:"f"`
	Bytes   int         `json:"b"`
	Kept    int64       `json:"at"` // unix seconds
}

// ResubmitForm is the resubmit page's data (.Extra of resubmit.html):
// a form that posts Fields to Action again.
type ResubmitForm struct {
	Action  string      // the URL the form was posted to: a same-origin path and query
	Enctype string      // application/x-www-form-urlencoded or multipart/form-data
	Fields  []FormField // in the order sent: hidden fields, and file inputs to fill again
	Files   int         // how many files must be chosen again
}

// ref reads this browser's kept-form cookie: the store key of its form.
// Two cookies of that name are none (one could be planted).
func (k *formKeeper) ref(r *http.Request) (string, bool) {
	var vals []string
	for _, c := range r.Cookies() {
		if c.Name == k.cookie {
			vals = append(vals, c.Value)
		}
	}
	var key string
	if len(vals) != 1 || k.refs.Open(k.cookie, vals[0], &key) != nil || key == "" {
		return "", false
	}
	return key, true
}

// keepForm keeps a form posted without a live session (from
// requireLogin), so that the user can send it again once signed in. It
// reports whether it kept it; if not, note tells the user why ("" when
// the request is no form post, or preserve_post is off). What happened
// is audited either way; the form's content never is.
func (g *Gate) keepForm(req *Request, out *Outcome, reason authn.Reason) (note string, kept bool) {
	r, now := req.HTTP, req.Start
	enctype, _ := formEnctype(r.Method, r.Header.Get("Content-Type"))
	if g.forms.limit <= 0 || enctype == "" {
		return "", false
	}
	var sess *authn.Session
	if reason == authn.ReasonIdle || reason == authn.ReasonLifetime {
		sess = g.endedSession(r, now)
	}
	rec := keptForm{Target: r.URL.RequestURI(), Path: req.path, Kept: now.Unix()}
	if sess != nil {
		rec.Iss, rec.Sub = sess.Issuer, sess.Subject
	}
	drop := func(why Reason, words string) (string, bool) {
		out.Events = append(out.Events, g.formEvent(EventFormDropped, out, why, &rec))
		return "What you sent was not kept: " + words, false
	}
	switch {
	case !g.sameOriginPost(req):
		return drop(ReasonFormCrossSite, "it came from another site or page. If you meant to send it, sign in, then fill in the form again.")
	case !authn.IsFormNavigation(r):
		return drop(ReasonFormNotNavigation, "it was sent by the page in the background. Sign in, then try again.")
	case reason == authn.ReasonLoggedOut || reason == authn.ReasonRevoked:
		return drop(ReasonFormSignedOut, "you had signed out, or were signed out. Sign in, then fill in the form again.")
	case sess == nil:
		return drop(ReasonFormNoSession, "you were not signed in. Sign in, then fill in the form again.")
	case authn.SafeReturnPath(rec.Target) != rec.Target:
		return drop(ReasonFormUnsupported, "its address cannot be used again. Sign in, then fill in the form again.")
	case r.ContentLength > g.forms.limit:
		rec.Bytes = int(r.ContentLength)
		return drop(ReasonFormTooLarge, "it was too large to keep while you sign in. Sign in, then fill in the form again.")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, g.forms.limit+1))
	rec.Bytes = len(body)
	switch {
	case err != nil:
		return drop(ReasonFormUnsupported, "it could not be read. Sign in, then fill in the form again.")
	case int64(len(body)) > g.forms.limit:
		return drop(ReasonFormTooLarge, "it was too large to keep while you sign in. Sign in, then fill in the form again.")
	}
	if rec.Enctype, rec.Fields, err = ParseFormBody(r.Header.Get("Content-Type"), body); err != nil {
		return drop(ReasonFormUnsupported, "it cannot be sent again as it was. Sign in, then fill in the form again.")
	}
	rec.Key = strings.ToLower(rand.Text())
	sealed, err := g.forms.bodies.Seal(formSealName, rec)
	if err != nil {
		return drop(ReasonFormTooLarge, "it was too large to keep while you sign in. Sign in, then fill in the form again.")
	}
	ctx, cancel, store := g.pageStore(req)
	defer cancel()
	// One kept form per browser: a newer one replaces it.
	if old, ok := g.forms.ref(r); ok {
		if prev, err := g.takeForm(ctx, store, old, now); err == nil {
			out.Events = append(out.Events, g.formEvent(EventFormDropped, out, ReasonFormReplaced, prev))
		}
	}
	if err := store.PutPending(ctx, rec.Key, []byte(sealed), now, formTTL); err != nil {
		g.log.Error("grant store: a form posted after the session ended could not be kept", zap.String("decision_id", out.Audit.ID()), zap.Error(err))
		e := g.formEvent(EventKeepFormFailed, out, "", &rec)
		e.Failed, e.Fields = true, append(e.Fields, zap.Error(err))
		out.Events = append(out.Events, e)
		return "What you sent could not be kept while you sign in. Sign in, then fill in the form again.", false
	}
	v, err := g.forms.refs.Seal(g.forms.cookie, rec.Key)
	if err != nil {
		return drop(ReasonFormUnsupported, "it could not be kept. Sign in, then fill in the form again.")
	}
	out.Cookies = append(out.Cookies, g.cookies.make(g.forms.cookie, v, "/.gatehouse/", int((formTTL+time.Hour)/time.Second), ""))
	out.Events = append(out.Events, g.formEvent(EventFormKept, out, "", &rec))
	return "", true
}

// endedSession is the session of r's cookie when it ended by time (idle
// or lifetime): whose form it is.
func (g *Gate) endedSession(r *http.Request, now time.Time) *authn.Session {
	ck, err := r.Cookie(g.cookies.session)
	if err != nil {
		return nil
	}
	s, err := g.cookies.opened.Open(ck.Value, now)
	if err != nil || s.Subject == "" {
		return nil
	}
	if why := g.cfg.Lifetimes.Check(&s, now); why != authn.ReasonIdle && why != authn.ReasonLifetime {
		return nil
	}
	return &s
}

// sameOriginPost reports whether a post provably comes from a page of
// this site: Sec-Fetch-Site, when sent, is same-origin, and Origin, when
// sent, is this site's (external_url, else the request's). "null" counts
// only with Sec-Fetch-Site: same-origin, and a post with neither header
// is not provably ours. Replaying anything else would make Gatehouse a
// cross-site request forgery amplifier.
func (g *Gate) sameOriginPost(req *Request) bool {
	h := req.HTTP.Header
	sites, origins := h["Sec-Fetch-Site"], h["Origin"]
	if len(sites) > 1 || len(origins) > 1 || (len(sites) == 1 && sites[0] != "same-origin") {
		return false
	}
	sameSite := len(sites) == 1
	if len(origins) == 0 || origins[0] == "null" {
		return sameSite
	}
	o, err := authn.NormalizeOrigin(origins[0])
	if err != nil {
		return false
	}
	own, ok := g.origin(req)
	if !ok {
		return false
	}
	own, err = authn.NormalizeOrigin(own)
	return err == nil && o == own
}

// takeForm takes a kept form from the store (it is gone from there
// whatever follows) and opens it.
func (g *Gate) takeForm(ctx context.Context, store grants.Store, key string, now time.Time) (*keptForm, error) {
	b, err := store.TakePending(ctx, key, now)
	if err != nil {
		return nil, err
	}
	var rec keptForm
	if err := g.forms.bodies.Open(formSealName, string(b), &rec); err != nil || rec.Key != key {
		return nil, grants.ErrNotFound
	}
	return &rec, nil
}

// resubmit is /.gatehouse/resubmit, where the sign-in after a kept form
// returns: the form, once, to the user it was kept for, as a page that
// sends it again with one click. Anyone else signing in in this browser
// gets a page saying it was not kept; it is deleted unseen.
func (g *Gate) resubmit(req *Request, out Outcome) Outcome {
	now := req.Start
	in, ok := g.pageSession(req, &out, PathResubmit)
	if !ok {
		return out
	}
	sess := in.Session
	key, ok := g.forms.ref(req.HTTP)
	if !ok {
		return out.refuse(BadRequest, http.StatusNotFound, ResultInternal, ReasonFormNone, &Answer{Error: "not_found",
			Title: "Nothing to send", Message: "There is no form waiting to be sent again in this browser."})
	}
	ctx, cancel, store := g.pageStore(req)
	defer cancel()
	rec, err := g.takeForm(ctx, store, key, now)
	switch {
	case errors.Is(err, grants.ErrNotFound):
		out.Cookies = append(out.Cookies, g.cookies.make(g.forms.cookie, "", "/.gatehouse/", -1, ""))
		return out.refuse(BadRequest, http.StatusGone, ResultInternal, ReasonFormGone, &Answer{Error: "gone",
			Title: "Nothing to send", Message: "The form you were sending is no longer kept: it is kept for 10 minutes, and can be sent again only once. Please fill it in again."})
	case err != nil:
		g.log.Error("grant store: a kept form could not be read", zap.String("decision_id", out.Audit.ID()), zap.Error(err))
		return out.refuse(Unavailable, http.StatusServiceUnavailable, ResultError, ReasonFormStoreError, &Answer{Error: "unavailable",
			Title: "Temporarily unavailable", Message: "The form you were sending cannot be fetched right now. Reload this page in a minute.",
			ActionURL: PathResubmit, ActionText: "Try again"})
	}
	forget := g.cookies.make(g.forms.cookie, "", "/.gatehouse/", -1, "")
	if rec.Sub != sess.Subject || rec.Iss != sess.Issuer {
		// Never shown, and gone from the store.
		out.Cookies = append(out.Cookies, forget)
		out.Events = append(out.Events, g.formEvent(EventFormDropped, &out, ReasonFormOtherUser, rec))
		return out.refuse(Deny, http.StatusForbidden, ResultDeny, ReasonFormOtherUser, &Answer{Error: "forbidden",
			Title:   "Form not sent",
			Message: "A form was being sent in this browser by someone else before you signed in. It was deleted and not sent, and you cannot see it."})
	}
	// The page the form goes to may need a step-up that this sign-in
	// lacks: do it first, the form kept meanwhile, or sending it would
	// meet a step-up that a post cannot follow.
	if need, why := g.stepUpBeforeResending(req, sess, rec.Target); why != "" {
		left := formTTL - now.Sub(time.Unix(rec.Kept, 0))
		sealed, err := g.forms.bodies.Seal(formSealName, rec)
		if err == nil && left >= time.Second {
			err = store.PutPending(ctx, rec.Key, []byte(sealed), now, left)
		}
		if err != nil || left < time.Second {
			return g.formLost(out, rec, err)
		}
		return g.requireStepUp(req, out, sess, need, why, PathResubmit) // the cookie stays: the form waits
	}
	out.Cookies = append(out.Cookies, forget)
	page := ResubmitForm{Action: rec.Target, Enctype: rec.Enctype, Fields: rec.Fields}
	for _, f := range rec.Fields {
		if f.File && f.Chosen {
			page.Files++
		}
	}
	a := &Answer{Page: "resubmit", Title: "Send your form again", Return: rec.Target, Data: page,
		Message: "You were signed out while sending a form. You are signed in again: send it now, or go back to leave it.",
		JSON:    map[string]any{"action": page.Action, "enctype": page.Enctype, "fields": len(page.Fields)}}
	switch page.Files {
	case 0:
	case 1:
		a.Note = "The file you had chosen was not kept: choose it again below before sending."
	default:
		a.Note = "The files you had chosen were not kept: choose them again below before sending."
	}
	out.Events = append(out.Events, g.formEvent(EventFormRestored, &out, "", rec))
	out.Kind, out.Status, out.Reason = Page, http.StatusOK, ReasonFormRestored
	out.Answer = a
	out.identify(a)
	return out
}

// stepUpBeforeResending is the first step-up that target's step_up
// rules ask and the session does not meet ("" when none). A policy's
// obligation is known only when the form is sent.
func (g *Gate) stepUpBeforeResending(req *Request, sess *authn.Session, target string) (authn.Requirement, string) {
	if len(g.cfg.StepUp) == 0 {
		return authn.Requirement{}, ""
	}
	treq, ok := targetRequest(req, target)
	if !ok {
		return authn.Requirement{}, ""
	}
	reqs, err := g.cfg.StepUp.For(treq.forMatch())
	if err != nil {
		return authn.Requirement{}, "" // sending it shows the conflict
	}
	return authn.FirstUnmet(reqs, sess, req.Start)
}

// formLost answers when a kept form taken from the store to wait for a
// step-up could not be put back (or its time ran out): it is lost, and
// the user is told.
func (g *Gate) formLost(out Outcome, rec *keptForm, err error) Outcome {
	out.Cookies = append(out.Cookies, g.cookies.make(g.forms.cookie, "", "/.gatehouse/", -1, ""))
	if err == nil {
		return out.refuse(BadRequest, http.StatusGone, ResultInternal, ReasonFormGone, &Answer{Error: "gone",
			Title: "Nothing to send", Message: "The form you were sending is no longer kept: it is kept for 10 minutes. Please fill it in again."})
	}
	g.log.Error("grant store: a kept form could not be kept for its step-up", zap.String("decision_id", out.Audit.ID()), zap.Error(err))
	e := g.formEvent(EventKeepFormFailed, &out, "", rec)
	e.Failed, e.Fields = true, append(e.Fields, zap.Error(err))
	out.Events = append(out.Events, e)
	return out.refuse(Unavailable, http.StatusServiceUnavailable, ResultError, ReasonFormStoreError, &Answer{Error: "unavailable",
		Title: "Form lost", Message: "The form you were sending could not be kept while you confirm who you are. Please fill it in again."})
}

// formEvent is an audit line about a kept form: whose, where it was
// posted (the path, never the query), its size, and why it was dropped.
// Never a field's name or value.
func (g *Gate) formEvent(msg string, out *Outcome, why Reason, rec *keptForm) Event {
	files := 0
	for _, f := range rec.Fields {
		if f.File {
			files++
		}
	}
	fields := []zap.Field{zap.String("user", rec.Sub), zap.String("iss", rec.Iss), zap.String("path", rec.Path),
		zap.Int("bytes", rec.Bytes), zap.Int("fields", len(rec.Fields)), zap.Int("files", files)}
	if why != "" {
		fields = append(fields, zap.String("why", string(why)))
	}
	return Event{Msg: msg, Fields: append(fields, zap.String("decision_id", out.Audit.ID()))}
}
