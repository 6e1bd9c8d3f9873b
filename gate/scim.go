package gate

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// The SCIM 2.0 service (RFC 7643, RFC 7644) for an HR or IAM
// provisioning system (Entra ID provisioning, Okta, HelloID): it records
// users, and a user made inactive or deleted there is de-provisioned
// here at once, on every node (sessions, access tokens, grants, pending
// requests), and cannot sign in again until it is active again. See
// docs/scim.md.

// PathSCIM is the SCIM service's base URL (the "tenant URL" of Entra ID,
// the "SCIM connector base URL" of Okta).
const PathSCIM = "/.gatehouse/scim/v2"

// SCIMConfig turns the SCIM service on.
type SCIMConfig struct {
	// Tokens are the static secrets the provisioning system sends as
	// Authorization: Bearer; any one is accepted (two while one replaces
	// the other).
	Tokens []string
	// Link is how a SCIM user names the users who sign in: "email" (a
	// sign-in's verified email is the SCIM user's userName or primary
	// email; any issuer) or "sub" (the primary IdP's sub is the SCIM
	// user's externalId).
	Link string
}

// The SCIM link claims.
const (
	SCIMLinkEmail = "email"
	SCIMLinkSub   = "sub"
)

// scimMaxBody bounds a SCIM request's body.
const scimMaxBody = 64 << 10

// scimActor names the SCIM service in audit events (actor).
const scimActor = "scim"

// The SCIM service's reasons, and the sign-in refusals it causes.
const (
	ReasonSCIM              Reason = "scim"                     // a SCIM read answered (a user, a search, the service's description)
	ReasonSCIMCreated       Reason = "scim_created"             // a SCIM user was created
	ReasonSCIMUpdated       Reason = "scim_updated"             // a SCIM user was changed (PUT, PATCH), its active flag as it was
	ReasonSCIMDeactivated   Reason = "scim_deactivated"         // a SCIM user was made inactive: its users are de-provisioned
	ReasonSCIMReactivated   Reason = "scim_reactivated"         // a SCIM user was made active again: its users may sign in
	ReasonSCIMDeleted       Reason = "scim_deleted"             // a SCIM user was deleted: its users are de-provisioned
	ReasonSCIMUnauthorized  Reason = "scim_unauthorized"        // no SCIM token, or not one of the configured ones
	ReasonSCIMInvalid       Reason = "scim_invalid"             // 400: a malformed body, filter, path or value (the answer's scimType says which)
	ReasonSCIMNotFound      Reason = "scim_not_found"           // no such SCIM user (or deleted), or no such SCIM endpoint
	ReasonSCIMConflict      Reason = "scim_conflict"            // another SCIM user has this userName
	ReasonSCIMPrecondition  Reason = "scim_precondition_failed" // If-Match names another version
	ReasonSCIMTooLarge      Reason = "scim_too_large"           // a body over 64 KiB
	ReasonSCIMContentType   Reason = "scim_content_type"        // a body that is not application/scim+json or application/json
	ReasonSCIMUnavailable   Reason = "scim_unavailable"         // the grant store failed: the change was not made, or not all of it
	ReasonDeprovisioned     Reason = "deprovisioned"            // a sign-in refused: the provisioning system made the user inactive or deleted it
	ReasonDeprovisionUnsure Reason = "deprovision_unknown"      // a sign-in refused: the grant store cannot say whether the user is active
)

// SCIMReasons lists the SCIM reasons, for documentation and its test.
var SCIMReasons = []Reason{ReasonSCIM, ReasonSCIMCreated, ReasonSCIMUpdated, ReasonSCIMDeactivated, ReasonSCIMReactivated,
	ReasonSCIMDeleted, ReasonSCIMUnauthorized, ReasonSCIMInvalid, ReasonSCIMNotFound, ReasonSCIMConflict, ReasonSCIMPrecondition,
	ReasonSCIMTooLarge, ReasonSCIMContentType, ReasonSCIMUnavailable, ReasonDeprovisioned, ReasonDeprovisionUnsure}

// The SCIM service's events.
const (
	EventSCIMUserCreated       = "scim user created"
	EventSCIMUserUpdated       = "scim user updated"
	EventSCIMUserDeactivated   = "scim user deactivated"
	EventSCIMUserReactivated   = "scim user reactivated"
	EventSCIMUserDeleted       = "scim user deleted"
	EventSCIMWriteFailed       = "scim write failed"
	EventSCIMDeprovisionFailed = "scim de-provisioning failed"
)

// SCIMEvents lists the SCIM events, for documentation and its test.
var SCIMEvents = []string{EventSCIMUserCreated, EventSCIMUserUpdated, EventSCIMUserDeactivated, EventSCIMUserReactivated,
	EventSCIMUserDeleted, EventSCIMWriteFailed, EventSCIMDeprovisionFailed}

// isSCIMPath reports whether a lowercase canonical path is the SCIM
// service's.
func isSCIMPath(lower string) bool {
	return lower == strings.ToLower(PathSCIM) || strings.HasPrefix(lower, strings.ToLower(PathSCIM)+"/")
}

// scim answers a SCIM request. It needs no session and sets no cookie:
// the provisioning system's token is the proof, compared in constant
// time with each configured token. Every answer is application/scim+json.
func (g *Gate) scim(req *Request, out Outcome) Outcome {
	r := req.HTTP
	out.Result = ResultInternal
	origin, ok := g.origin(req)
	if !ok {
		return scimRefused(out, &scimProblem{Status: http.StatusForbidden, Detail: "SCIM needs HTTPS: the token must not travel in clear", Reason: ReasonHTTPSRequired})
	}
	token := g.scimToken(r)
	if token == 0 {
		out.setHeader("WWW-Authenticate", `Bearer realm="gatehouse-scim"`)
		return scimRefused(out, &scimProblem{Status: http.StatusUnauthorized, Detail: "a valid SCIM bearer token is required", Reason: ReasonSCIMUnauthorized})
	}
	s := &scimCall{g: g, req: req, base: origin + PathSCIM, token: token}
	if len(req.path) < len(PathSCIM) || !strings.EqualFold(req.path[:len(PathSCIM)], PathSCIM) {
		return scimRefused(out, &scimProblem{Status: http.StatusNotFound, Detail: "there is no such SCIM endpoint", Reason: ReasonSCIMNotFound})
	}
	segs := strings.Split(strings.Trim(req.path[len(PathSCIM):], "/"), "/")
	resource := strings.ToLower(segs[0])
	methods := ""
	switch {
	case len(segs) == 1 && resource == "users":
		methods = "GET, POST"
	case len(segs) == 2 && resource == "users":
		methods = "GET, PUT, PATCH, DELETE"
	case len(segs) == 1 && resource == "serviceproviderconfig",
		len(segs) <= 2 && (resource == "schemas" || resource == "resourcetypes"):
		methods = "GET"
	default:
		return scimRefused(out, &scimProblem{Status: http.StatusNotFound, Detail: "there is no such SCIM endpoint", Reason: ReasonSCIMNotFound})
	}
	if !strings.Contains(", "+methods+",", ", "+r.Method+",") {
		out.setHeader("Allow", methods)
		return scimRefused(out, &scimProblem{Status: http.StatusMethodNotAllowed, Detail: r.Method + " is not allowed here", Reason: ReasonMethodNotAllowed})
	}
	switch {
	case resource == "users" && len(segs) == 1 && r.Method == http.MethodGet:
		return s.list(out)
	case resource == "users" && len(segs) == 1:
		return s.create(out)
	case resource == "users" && r.Method == http.MethodGet:
		return s.get(out, segs[1])
	case resource == "users" && r.Method == http.MethodDelete:
		return s.delete(out, segs[1])
	case resource == "users":
		return s.update(out, segs[1])
	}
	return s.describe(out, resource, segs[1:])
}

// scimToken is the number (from 1) of the configured token the request
// carries as Authorization: Bearer, 0 if none. Every configured token is
// compared, in constant time, whichever matches.
func (g *Gate) scimToken(r *http.Request) int {
	vals := r.Header.Values("Authorization")
	if len(vals) != 1 {
		return 0
	}
	scheme, tok, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
	tok = strings.TrimSpace(tok)
	if !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return 0
	}
	// Hashes have one length: the comparison says nothing of a token's.
	got := sha256.Sum256([]byte(tok))
	found := 0
	for i, t := range g.cfg.SCIM.Tokens {
		want := sha256.Sum256([]byte(t))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 && found == 0 {
			found = i + 1
		}
	}
	return found
}

// scimCall is one authorized SCIM request.
type scimCall struct {
	g     *Gate
	req   *Request
	base  string // the service's absolute URL
	token int    // which configured token it carried
}

// store is the grant store, for calls bounded by revokeTimeout that a
// client going away does not cancel (a de-provisioning is finished).
func (s *scimCall) store() (context.Context, context.CancelFunc, grants.Store) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.req.HTTP.Context()), revokeTimeout)
	return ctx, cancel, s.g.cfg.Grants.Store()
}

// storeFailed answers a store error: a SCIM error for what it says of
// the data, else 503 (logged for the operator).
func (s *scimCall) storeFailed(out Outcome, err error) Outcome {
	switch {
	case errors.Is(err, grants.ErrNotFound):
		return scimRefused(out, &scimProblem{Status: http.StatusNotFound, Detail: "there is no such user", Reason: ReasonSCIMNotFound})
	case errors.Is(err, grants.ErrConflict):
		return scimRefused(out, &scimProblem{Status: http.StatusConflict, SCIMType: "uniqueness", Detail: "another user has this userName", Reason: ReasonSCIMConflict})
	case errors.Is(err, grants.ErrInvalid):
		return scimRefused(out, badSCIM("invalidValue", "%s", strings.TrimPrefix(err.Error(), grants.ErrInvalid.Error()+": ")))
	}
	s.g.log.Error("SCIM: the grant store failed", zap.String("app", s.g.cfg.App), zap.Error(err))
	out.setHeader("Retry-After", "5")
	return scimRefused(out, &scimProblem{Status: http.StatusServiceUnavailable, Detail: "the store is unavailable; try again", Reason: ReasonSCIMUnavailable})
}

// list is GET /Users: every user, or those a filter selects, a page at
// a time (startIndex from 1, count at most 100).
func (s *scimCall) list(out Outcome) Outcome {
	q := s.req.HTTP.URL.Query()
	var f grants.SCIMFilter
	none := false
	if fs, ok := q["filter"]; ok {
		if len(fs) != 1 {
			return scimRefused(out, badSCIM("invalidFilter", "give one filter"))
		}
		pf, err := parseSCIMFilter(fs[0])
		if err != nil {
			return scimRefused(out, err.(*scimProblem))
		}
		none = pf.value == "" // no user has an empty userName or externalId
		if pf.attr == "userName" {
			f.UserName = pf.value
		} else {
			f.ExternalID = pf.value
		}
	}
	start, err := scimInt(q, "startIndex", 1)
	if err != nil {
		return scimRefused(out, err)
	}
	count, err := scimInt(q, "count", scimMaxResults)
	if err != nil {
		return scimRefused(out, err)
	}
	start, count = max(start, 1), min(max(count, 0), scimMaxResults)
	var users []grants.SCIMUser
	if !none {
		ctx, cancel, store := s.store()
		defer cancel()
		all, err := store.SCIMUsers(ctx, f)
		if err != nil {
			return s.storeFailed(out, err)
		}
		for _, u := range all {
			if u.Deleted == 0 {
				users = append(users, u)
			}
		}
	}
	page := []scimUserJSON{}
	for i := start - 1; i < len(users) && len(page) < count; i++ {
		page = append(page, s.resource(&users[i]))
	}
	return scimAnswer(out, http.StatusOK, ReasonSCIM, scimList{Schemas: []string{scimListResponse},
		TotalResults: len(users), StartIndex: start, ItemsPerPage: len(page), Resources: page})
}

// scimMaxResults is the most users one page holds.
const scimMaxResults = 100

// scimInt reads an integer query parameter; def when absent.
func scimInt(q map[string][]string, name string, def int) (int, *scimProblem) {
	vs, ok := q[name]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(vs[0]))
	if len(vs) != 1 || err != nil {
		return 0, badSCIM("invalidValue", "%s must be one integer", name)
	}
	return n, nil
}

// get is GET /Users/{id}.
func (s *scimCall) get(out Outcome, id string) Outcome {
	u, problem := s.read(id)
	if problem != nil {
		return problem(out)
	}
	out.setHeader("ETag", scimETag(&u))
	return scimAnswer(out, http.StatusOK, ReasonSCIM, s.resource(&u))
}

// read is the user with id, not deleted; else the answer to give.
func (s *scimCall) read(id string) (grants.SCIMUser, func(Outcome) Outcome) {
	ctx, cancel, store := s.store()
	defer cancel()
	u, err := store.SCIMUser(ctx, id)
	if err == nil && u.Deleted != 0 {
		err = grants.ErrNotFound
	}
	if err != nil {
		return u, func(out Outcome) Outcome { return s.storeFailed(out, err) }
	}
	return u, nil
}

// create is POST /Users.
func (s *scimCall) create(out Outcome) Outcome {
	body, problem := s.body()
	if problem != nil {
		return scimRefused(out, problem)
	}
	u, err := parseSCIMUser(body, true)
	if err != nil {
		return scimRefused(out, err.(*scimProblem))
	}
	u.ID = ""
	ctx, cancel, store := s.store()
	defer cancel()
	created, err := store.PutSCIMUser(ctx, u, s.req.Start)
	if err != nil {
		out.Events = append(out.Events, s.failed("create", &u, err))
		return s.storeFailed(out, err)
	}
	out, ok := s.changed(ctx, out, EventSCIMUserCreated, nil, &created)
	if !ok {
		return out
	}
	out.setHeader("Location", s.location(&created))
	out.setHeader("ETag", scimETag(&created))
	return scimAnswer(out, http.StatusCreated, ReasonSCIMCreated, s.resource(&created))
}

// update is PUT (a replacement) and PATCH (operations) of /Users/{id}.
func (s *scimCall) update(out Outcome, id string) Outcome {
	body, problem := s.body()
	if problem != nil {
		return scimRefused(out, problem)
	}
	prev, answer := s.read(id)
	if answer != nil {
		return answer(out)
	}
	if p := s.precondition(&prev); p != nil {
		return scimRefused(out, p)
	}
	var next grants.SCIMUser
	var err error
	if s.req.HTTP.Method == http.MethodPut {
		next, err = parseSCIMUser(body, prev.Active)
	} else {
		next, err = applySCIMPatch(prev, body)
	}
	if err != nil {
		return scimRefused(out, err.(*scimProblem))
	}
	next.ID = prev.ID
	ctx, cancel, store := s.store()
	defer cancel()
	stored, err := store.PutSCIMUser(ctx, next, s.req.Start)
	if err != nil {
		out.Events = append(out.Events, s.failed("update", &next, err))
		return s.storeFailed(out, err)
	}
	msg, reason := EventSCIMUserUpdated, ReasonSCIMUpdated
	switch {
	case prev.Active && !stored.Active:
		msg, reason = EventSCIMUserDeactivated, ReasonSCIMDeactivated
	case !prev.Active && stored.Active:
		msg, reason = EventSCIMUserReactivated, ReasonSCIMReactivated
	}
	out, ok := s.changed(ctx, out, msg, &prev, &stored)
	if !ok {
		return out
	}
	out.setHeader("ETag", scimETag(&stored))
	return scimAnswer(out, http.StatusOK, reason, s.resource(&stored))
}

// delete is DELETE /Users/{id}. A deleted user's sign-ins stay refused
// until a new user takes its userName. Deleting a deleted user again is
// 404, but de-provisions its users again first: a DELETE retried after a
// store failure finishes the job.
func (s *scimCall) delete(out Outcome, id string) Outcome {
	ctx, cancel, store := s.store()
	defer cancel()
	prev, err := store.SCIMUser(ctx, id)
	if err != nil {
		return s.storeFailed(out, err)
	}
	if prev.Deleted != 0 {
		if out, ok := s.deprovision(ctx, out, &prev, &prev); !ok {
			return out
		}
		return s.storeFailed(out, grants.ErrNotFound)
	}
	if p := s.precondition(&prev); p != nil {
		return scimRefused(out, p)
	}
	deleted, err := store.DeleteSCIMUser(ctx, id, s.req.Start)
	if err != nil {
		out.Events = append(out.Events, s.failed("delete", &prev, err))
		return s.storeFailed(out, err)
	}
	out, ok := s.changed(ctx, out, EventSCIMUserDeleted, &prev, &deleted)
	if !ok {
		return out
	}
	out.Kind, out.Status, out.Reason = Page, http.StatusNoContent, ReasonSCIMDeleted
	return out
}

// body reads a request's SCIM body: application/scim+json (or
// application/json), at most 64 KiB.
func (s *scimCall) body() ([]byte, *scimProblem) {
	r := s.req.HTTP
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != "application/scim+json" && mt != "application/json") {
		return nil, &scimProblem{Status: http.StatusUnsupportedMediaType, Detail: "the body must be application/scim+json", Reason: ReasonSCIMContentType}
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, scimMaxBody+1))
	switch {
	case err != nil:
		return nil, badSCIM("invalidSyntax", "the body could not be read")
	case len(b) > scimMaxBody:
		return nil, &scimProblem{Status: http.StatusRequestEntityTooLarge, Detail: "the body is larger than 64 KiB", Reason: ReasonSCIMTooLarge}
	}
	return b, nil
}

// precondition checks If-Match against the user's version.
func (s *scimCall) precondition(u *grants.SCIMUser) *scimProblem {
	im := s.req.HTTP.Header.Get("If-Match")
	if im == "" {
		return nil
	}
	etag := scimETag(u)
	for v := range strings.SplitSeq(im, ",") {
		if v = strings.TrimSpace(v); v == "*" || v == etag || "W/"+v == etag {
			return nil
		}
	}
	return &scimProblem{Status: http.StatusPreconditionFailed, Detail: "the user has changed: read it again", Reason: ReasonSCIMPrecondition}
}

// event is the audit line of a SCIM user written.
func (s *scimCall) event(msg string, u *grants.SCIMUser) Event {
	return Event{Msg: msg, Fields: withActor(scimActor, "", zap.String("scim_id", u.ID), zap.String("user_name", u.UserName),
		zap.String("external_id", u.ExternalID), zap.String("email", u.PrimaryEmail()), zap.Bool("active", u.Active),
		zap.Int64("version", u.Version), zap.Int("scim_token", s.token))}
}

// failed is the audit line of a SCIM write the store refused or failed.
func (s *scimCall) failed(op string, u *grants.SCIMUser, err error) Event {
	return Event{Msg: EventSCIMWriteFailed, Failed: true, Fields: withActor(scimActor, "", zap.String("op", op),
		zap.String("scim_id", u.ID), zap.String("user_name", u.UserName), zap.Int("scim_token", s.token), zap.Error(err))}
}

// location is a user's URL.
func (s *scimCall) location(u *grants.SCIMUser) string { return s.base + "/Users/" + u.ID }

// scimETag is a user's version as an entity tag (weak: the JSON is not
// kept byte for byte).
func scimETag(u *grants.SCIMUser) string { return `W/"` + strconv.FormatInt(u.Version, 10) + `"` }

// scimUserJSON is a User resource as Gatehouse answers it.
type scimUserJSON struct {
	Schemas    []string           `json:"schemas"`
	ID         string             `json:"id"`
	ExternalID string             `json:"externalId,omitempty"`
	UserName   string             `json:"userName"`
	Emails     []grants.SCIMEmail `json:"emails,omitempty"`
	Active     bool               `json:"active"`
	Meta       scimMeta           `json:"meta"`
}

type scimMeta struct {
	ResourceType string `json:"resourceType"`
	Created      string `json:"created,omitempty"`
	LastModified string `json:"lastModified,omitempty"`
	Location     string `json:"location"`
	Version      string `json:"version,omitempty"`
}

type scimList struct {
	Schemas      []string `json:"schemas"`
	TotalResults int      `json:"totalResults"`
	StartIndex   int      `json:"startIndex"`
	ItemsPerPage int      `json:"itemsPerPage"`
	Resources    any      `json:"Resources"`
}

// resource is a user as its JSON resource.
func (s *scimCall) resource(u *grants.SCIMUser) scimUserJSON {
	return scimUserJSON{Schemas: []string{scimUserSchema}, ID: u.ID, ExternalID: u.ExternalID, UserName: u.UserName,
		Emails: u.Emails, Active: u.Active, Meta: scimMeta{ResourceType: "User",
			Created:      time.Unix(u.Created, 0).UTC().Format(time.RFC3339),
			LastModified: time.Unix(u.Modified, 0).UTC().Format(time.RFC3339),
			Location:     s.location(u), Version: scimETag(u)}}
}

// scimAnswer is a SCIM document.
func scimAnswer(out Outcome, status int, reason Reason, doc any) Outcome {
	out.Kind, out.Status, out.Reason = Page, status, reason
	b, err := json.Marshal(doc)
	if err != nil {
		return out.fail(err)
	}
	out.Body = b
	out.setHeader("Content-Type", "application/scim+json")
	out.setHeader("Cache-Control", "no-store")
	return out
}

// scimRefused is a SCIM error answer (RFC 7644 section 3.12): status as
// a string, scimType for a 400, and a detail that never repeats a token
// or a value the client sent.
func scimRefused(out Outcome, p *scimProblem) Outcome {
	out = scimAnswer(out, p.Status, p.Reason, struct {
		Schemas  []string `json:"schemas"`
		Status   string   `json:"status"`
		SCIMType string   `json:"scimType,omitempty"`
		Detail   string   `json:"detail"`
	}{[]string{scimErrorSchema}, strconv.Itoa(p.Status), p.SCIMType, p.Detail})
	out.Kind, out.Result = BadRequest, ResultReject
	switch p.Status {
	case http.StatusUnauthorized, http.StatusForbidden:
		out.Kind, out.Result = Deny, ResultDeny
	case http.StatusServiceUnavailable:
		out.Kind, out.Result = Unavailable, ResultError
	}
	return out
}

// CheckSCIMToken checks a configured SCIM token: long enough to be a
// secret, and sendable in a header.
func CheckSCIMToken(t string) error {
	switch {
	case len(t) < authn.MinSecretLen:
		return fmt.Errorf("a SCIM token needs at least %d characters (generate one with: openssl rand -base64 48)", authn.MinSecretLen)
	case strings.ContainsFunc(t, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return errors.New("a SCIM token cannot hold spaces or control characters")
	}
	return nil
}
