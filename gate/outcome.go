package gate

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// Kind is what an Outcome asks the server to do.
type Kind int

const (
	// Allow passes the request on to the upstream, with Upstream's
	// headers set.
	Allow Kind = iota + 1
	// Login asks the user to sign in: a navigation is redirected to the
	// IdP (Location), anything else gets a 401 Answer.
	Login
	// StepUp asks for a stronger or fresher sign-in, like Login.
	StepUp
	// Deny refuses the request for this user (403, or a refused sign-in).
	Deny
	// Unavailable says something Gatehouse depends on is down (502, 503).
	Unavailable
	// BadRequest refuses a request whatever the user (400, 404, 405).
	BadRequest
	// Redirect sends the browser to Location.
	Redirect
	// Page is one of Gatehouse's own pages or documents (200).
	Page
	// Failure is an unexpected internal failure (Err): the server's own
	// error handling answers 500.
	Failure
)

var kindNames = [...]string{"", "allow", "login", "step_up", "deny", "unavailable", "bad_request", "redirect", "page", "failure"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Result is the audit line's result: what happened to the request.
type Result string

// Every result the audit log can show (docs/audit-log.md).
const (
	ResultAllow           Result = "allow"            // passed to the upstream
	ResultPublic          Result = "public"           // a public path, passed on without a session
	ResultInternal        Result = "internal"         // one of Gatehouse's endpoints answered
	ResultLogin           Result = "login"            // sent to the IdP to sign in
	ResultUnauthenticated Result = "unauthenticated"  // 401: no valid session (an API request)
	ResultStepUp          Result = "step_up"          // sent to the IdP for a stronger sign-in
	ResultStepUpRequired  Result = "step_up_required" // 401: a stronger sign-in is needed (an API request)
	ResultDeny            Result = "deny"             // refused (403, and refused forms and requests)
	ResultReject          Result = "reject"           // refused before any check: the request is unusable
	ResultError           Result = "error"            // a dependency failed (IdP, grant store)
	ResultLoginOK         Result = "login_ok"         // a sign-in completed: a session was made
	ResultLoginFailed     Result = "login_failed"     // a sign-in or step-up answer was refused
	ResultLogout          Result = "logout"           // the session was ended (or, by back-channel logout, the IdP session's sessions)
	ResultLogoutRefused   Result = "logout_refused"   // a back-channel logout request was refused
	ResultStepUpOK        Result = "step_up_ok"       // a step-up completed: the session was upgraded
	ResultGrantRequested  Result = "grant_requested"  // an access request was made
	ResultGrantRevoked    Result = "grant_revoked"    // a user ended one of their grants
	ResultGrantApproved   Result = "grant_approved"   // an approver approved a request
	ResultGrantRejected   Result = "grant_rejected"   // an approver rejected a request
)

// Results lists every Result, for documentation and its test.
var Results = []Result{ResultAllow, ResultPublic, ResultInternal, ResultLogin, ResultUnauthenticated, ResultStepUp,
	ResultStepUpRequired, ResultDeny, ResultReject, ResultError, ResultLoginOK, ResultLoginFailed, ResultLogout,
	ResultLogoutRefused, ResultStepUpOK, ResultGrantRequested, ResultGrantRevoked, ResultGrantApproved, ResultGrantRejected}

// Reason is the audit line's reason, and (except for step-up answers,
// whose JSON names only the unmet part) the reason of the answer. The
// values are stable: tests, dashboards and API clients read them.
type Reason string

// The reasons Gatehouse itself gives. Besides these, a request without a
// session carries the authn.Reason that says why (no_session,
// idle_timeout, …), a refused sign-in carries the authn.LoginError's
// reason (nonce_mismatch, weaker_acr, …), and an error the IdP returned
// is idp_<its error code>.
const (
	ReasonNone Reason = ""

	// Requests refused before any check.
	ReasonAmbiguousPath      Reason = "ambiguous_path"       // a path upstreams may read differently
	ReasonNotFound           Reason = "not_found"            // an unknown /.gatehouse/ endpoint
	ReasonMethodNotAllowed   Reason = "method_not_allowed"   // a method an endpoint does not take
	ReasonHTTPSRequired      Reason = "https_required"       // a sign-in over plain HTTP (not loopback)
	ReasonCrossOriginUpgrade Reason = "cross_origin_upgrade" // a WebSocket or other upgrade from another origin

	// The pipeline.
	ReasonNotAllowed      Reason = "not_allowed"        // not in allow_groups or allow_email_domains
	ReasonPolicyDeny      Reason = "policy_deny"        // the policy denied
	ReasonPolicyError     Reason = "policy_error"       // the policy could not decide: denied
	ReasonGrantsDown      Reason = "grants_unavailable" // JIT access (or a form) needs the grant store, which is down
	ReasonRevocationsDown Reason = "revocations_unavailable"
	ReasonStepUpConflict  Reason = "step_up_conflict"     // requirements no sign-in can meet together
	ReasonStepUpACR       Reason = "step_up_acr"          // step-up needed: the session's acr is not accepted
	ReasonStepUpAMR       Reason = "step_up_amr"          // step-up needed: a required method was not used
	ReasonStepUpMaxAge    Reason = "step_up_max_age"      // step-up needed: the authentication is too old
	ReasonStepUpVerify    Reason = "step_up_verification" // step-out needed: never verified at that provider
	ReasonIdPUnavailable  Reason = "idp_unavailable"      // the IdP cannot be reached
	ReasonAlreadySignedIn Reason = "already_signed_in"    // /login with a valid session
	ReasonStepUpNotNeeded Reason = "step_up_not_needed"   // /stepup for a page the session already meets
	ReasonHealthz         Reason = "healthz"              // liveness probes, never audited
	ReasonReadyz          Reason = "readyz"               // readiness probes, never audited
	ReasonJWKS            Reason = "jwks"

	// The sign-in page, with several IdPs.
	ReasonChooseIdP         Reason = "choose_idp"          // the sign-in page: the user chooses an IdP
	ReasonIdPUnknown        Reason = "unknown_idp"         // ?idp= names no IdP (or is given twice): the sign-in page
	ReasonLoginHintUnknown  Reason = "login_hint_unknown"  // an email that is not one, or of a domain no IdP serves: the sign-in page
	ReasonLoginHintMismatch Reason = "login_hint_mismatch" // login_hint does not fit the IdP ?idp= names: the sign-in page

	// Sign-in callbacks.
	ReasonStateMissing     Reason = "state_missing"      // no (or more than one) state parameter
	ReasonStateUnknown     Reason = "state_unknown"      // not started in this browser, or expired
	ReasonStateReplayed    Reason = "state_replayed"     // already used
	ReasonStateSuperseded  Reason = "state_superseded"   // a newer sign-in took its place, and it cannot restart
	ReasonLoginSuperseded  Reason = "login_superseded"   // a newer sign-in took its place: restarted
	ReasonIssuerMismatch   Reason = "issuer_mismatch"    // iss names another IdP (mix-up, RFC 9207)
	ReasonIssuerMissing    Reason = "issuer_missing"     // no iss from an IdP that always names itself (RFC 9207)
	ReasonDomainNotAllowed Reason = "domain_not_allowed" // the IdP may not sign in this email's domain (or gave no verified email)
	ReasonIdPError         Reason = "idp_error"          // the IdP returned an error with an unusual code
	ReasonCodeMissing      Reason = "code_missing"       // no authorization code
	ReasonSessionTooLarge  Reason = "session_too_large"  // the session does not fit in a cookie
	ReasonSessionChanged   Reason = "session_changed"    // a step-up finished in another session
	ReasonProviderUnknown  Reason = "provider_unknown"   // a step-up's provider is no longer configured
	ReasonIdentityMismatch Reason = "identity_mismatch"  // a step-up signed in as someone else
	ReasonLinkMismatch     Reason = "link_mismatch"      // a step-out's link claim is missing or differs

	// Logout.
	ReasonLoggedOut         Reason = "logged_out"          // signed out here
	ReasonIdPLogout         Reason = "idp_logout"          // signed out here, and sent to end the IdP session
	ReasonLogoutNotRecorded Reason = "logout_not_recorded" // signed out on this node, not recorded in the store

	// Back-channel logout (besides the authn.LogoutReasons of a refused
	// logout token).
	ReasonBackchannelLogout      Reason = "backchannel_logout"       // the IdP ended a session: its sessions here are revoked
	ReasonBackchannelContentType Reason = "backchannel_content_type" // not application/x-www-form-urlencoded
	ReasonBackchannelBody        Reason = "backchannel_body"         // a body over 32 KiB, or unreadable
	ReasonLogoutTokenMissing     Reason = "logout_token_missing"     // no logout_token, or more than one
	ReasonLogoutTokenReplayed    Reason = "logout_token_replayed"    // a logout token already used (on any node)

	// Access requests and approvals.
	ReasonCrossSiteForm   Reason = "cross_site_form"  // a form posted from another site
	ReasonBadForm         Reason = "bad_form"         // an unreadable form
	ReasonCSRF            Reason = "csrf"             // a form without this session's token
	ReasonOfferInvalid    Reason = "offer_invalid"    // a request for something never offered to this user
	ReasonOfferExpired    Reason = "offer_expired"    // an offer past its time
	ReasonReasonMissing   Reason = "reason_missing"   // a request without a reason
	ReasonDurationInvalid Reason = "duration_invalid" // a duration over the offer's cap
	ReasonAlreadyPending  Reason = "already_pending"  // the same request is already waiting
	ReasonNotYourGrant    Reason = "not_your_grant"   // ending a grant the user does not hold
	ReasonMyAccess        Reason = "my_access"        // the "my access" page
	ReasonApprovals       Reason = "approvals"        // the approvals page
	ReasonNoPolicy        Reason = "no_policy"        // the approvals page without a policy
	ReasonRequestUnknown  Reason = "request_unknown"  // deciding a request that does not exist
	ReasonNotAnApprover   Reason = "not_an_approver"  // the policy does not let this user decide it

	// Forms posted after the session ended (docs/forms.md): why one was
	// dropped (the "why" of a "form dropped" event), and the resubmit
	// page's answers.
	ReasonFormCrossSite     Reason = "form_cross_site"     // not provably from this site's own pages
	ReasonFormNotNavigation Reason = "form_not_navigation" // a script's post, or one into a frame
	ReasonFormSignedOut     Reason = "form_signed_out"     // the session was signed out or revoked
	ReasonFormNoSession     Reason = "form_no_session"     // no session had ended: never signed in here
	ReasonFormTooLarge      Reason = "form_too_large"      // over preserve_post
	ReasonFormUnsupported   Reason = "form_unsupported"    // a body that cannot be sent again exactly as it was
	ReasonFormReplaced      Reason = "form_replaced"       // a newer form of this browser was kept instead
	ReasonFormOtherUser     Reason = "form_other_user"     // someone else signed in: deleted unseen
	ReasonFormRestored      Reason = "form_restored"       // the resubmit page, with the form
	ReasonFormNone          Reason = "form_none"           // the resubmit page, no form kept in this browser
	ReasonFormGone          Reason = "form_gone"           // the resubmit page, the form expired or was already shown
	ReasonFormStoreError    Reason = "form_store_error"    // the resubmit page, the store failed
)

// Reasons lists Gatehouse's own reasons, for documentation and its test.
var Reasons = []Reason{ReasonAmbiguousPath, ReasonNotFound, ReasonMethodNotAllowed, ReasonHTTPSRequired,
	ReasonCrossOriginUpgrade, ReasonNotAllowed, ReasonPolicyDeny, ReasonPolicyError, ReasonGrantsDown,
	ReasonRevocationsDown, ReasonStepUpConflict, ReasonStepUpACR, ReasonStepUpAMR, ReasonStepUpMaxAge,
	ReasonStepUpVerify, ReasonIdPUnavailable, ReasonAlreadySignedIn, ReasonStepUpNotNeeded,
	ReasonJWKS, ReasonChooseIdP, ReasonIdPUnknown, ReasonLoginHintUnknown, ReasonLoginHintMismatch, ReasonStateMissing, ReasonStateUnknown, ReasonStateReplayed, ReasonStateSuperseded,
	ReasonLoginSuperseded, ReasonIssuerMismatch, ReasonIssuerMissing, ReasonDomainNotAllowed, ReasonIdPError, ReasonCodeMissing, ReasonSessionTooLarge,
	ReasonSessionChanged, ReasonProviderUnknown, ReasonIdentityMismatch, ReasonLinkMismatch, ReasonLoggedOut,
	ReasonIdPLogout, ReasonLogoutNotRecorded, ReasonBackchannelLogout, ReasonBackchannelContentType,
	ReasonBackchannelBody, ReasonLogoutTokenMissing, ReasonLogoutTokenReplayed, ReasonCrossSiteForm, ReasonBadForm, ReasonCSRF,
	ReasonOfferInvalid, ReasonOfferExpired, ReasonReasonMissing, ReasonDurationInvalid, ReasonAlreadyPending,
	ReasonNotYourGrant, ReasonMyAccess, ReasonApprovals, ReasonNoPolicy, ReasonRequestUnknown, ReasonNotAnApprover,
	ReasonBearerRequest, ReasonBearerRevoked, ReasonStepUpNotPossible, ReasonBearerStepUp,
	ReasonFormCrossSite, ReasonFormNotNavigation, ReasonFormSignedOut, ReasonFormNoSession, ReasonFormTooLarge,
	ReasonFormUnsupported, ReasonFormReplaced, ReasonFormOtherUser, ReasonFormRestored, ReasonFormNone, ReasonFormGone,
	ReasonFormStoreError}

// stepUpReason is the reason for an unmet requirement (Requirement.Unmet).
func stepUpReason(why string) Reason { return Reason("step_up_" + why) }

// Outcome is what Gatehouse decided about one request, and everything the
// answer needs. The server turns it into the HTTP answer and writes the
// audit line from it, in one place.
type Outcome struct {
	Kind Kind
	// Result and Reason are the audit line's.
	Result Result
	Reason Reason
	// Status is the answer's HTTP status (a redirect's too); 0 for Allow.
	Status int
	// Location is where a redirect sends the browser.
	Location string
	// Answer is Gatehouse's own answer: a page for browsers, JSON for
	// anything else (see Answer). Nil for Allow, redirects and Body.
	Answer *Answer
	// Body is a document to send as it is (health, key set), its
	// Content-Type in Header.
	Body []byte
	// Header holds response headers to set.
	Header http.Header
	// Cookies are set on the response, whatever the Kind.
	Cookies []*http.Cookie
	// Upstream are the headers to set on the request to the upstream
	// (Allow), after the managed headers were removed.
	Upstream []HeaderValue
	// Audit holds the rest of the audit line.
	Audit Audit
	// Events are further audit lines about what the request did (a grant
	// approved, a step-up started), written before the decision line.
	Events []Event
	// Quiet answers (liveness and readiness probes) write no audit line
	// and count in no metric.
	Quiet bool
	// Err is the unexpected failure of a Failure.
	Err error

	// viewer is who the answer's page shows as signed in: set with
	// signedInAs for a live session only (never on the signed-out page,
	// nor for a revoked session).
	viewer *authn.Session
}

// HeaderValue is one header for the upstream request: its name in
// canonical form and its value, as http.Header holds them (the values of
// one Outcome share one array: set them, do not append to them). Nil
// Values remove the header.
type HeaderValue struct {
	Name   string
	Values []string
}

// Answer is one of Gatehouse's own answers: a page for browsers, JSON
// for anything else. Page names the page template ("" is the plain
// message page); JSON, when set, is what API clients get instead of the
// Answer itself. The fields a page template reads are a documented
// contract (docs/pages.md): rename none of them.
type Answer struct {
	Error    string `json:"error"`            // class: unauthenticated, forbidden, bad_request…
	Reason   string `json:"reason,omitempty"` // stable reason code
	Message  string `json:"message"`          // for people, in plain words; never internals
	Note     string `json:"note,omitempty"`   // a second line for people
	LoginURL string `json:"login_url,omitempty"`
	// StepUpURL starts the step-up a 401 asks for; Requirement names it.
	StepUpURL   string           `json:"step_up_url,omitempty"`
	Requirement *RequirementJSON `json:"requirement,omitempty"`
	Reference   string           `json:"decision_id,omitempty"`
	// Support is whom to ask for help (support_contact), on error
	// answers; the server fills it in.
	Support    string `json:"support,omitempty"`
	Title      string `json:"-"`
	ActionURL  string `json:"-"`
	ActionText string `json:"-"`

	Page string `json:"-"`
	// SignedIn says someone is signed in: the page shows the sign-out
	// button and "My access". User is how they are named: their name,
	// else their verified email, never their subject; "" when the
	// session has neither.
	SignedIn bool   `json:"-"`
	User     string `json:"-"`
	// Return is the same-origin path the page's "Back to <app>" link
	// goes to; "" means "/".
	Return string `json:"-"`
	Notice string `json:"-"` // a line above the page's content
	Data   any    `json:"-"` // the page's own data
	JSON   any    `json:"-"`
}

// RequirementJSON is how a 401 names what is missing.
type RequirementJSON struct {
	Provider string   `json:"provider,omitempty"`
	ACR      []string `json:"acr,omitempty"`
	AMR      []string `json:"amr,omitempty"`
	MaxAge   string   `json:"max_age,omitempty"`
}

// Audit is the audit line of one request, besides its result and reason.
// It never holds a token, a cookie value or a query string.
type Audit struct {
	id     string
	Start  time.Time
	Method string
	Path   string // canonical, or the raw path (truncated) when it had none
	User   string // subject
	Iss    string // the issuer of the user's IdP: a user is Iss + User
	Email  string

	Grants       []string          // resources of the user's active grants
	Revision     string            // policy revision, when a policy was asked
	Cached       bool              // the policy decision came from the cache
	PolicyReason string            // the policy's own reason for a deny
	Offer        string            // resource the deny offered a grant for
	Refused      []string          // claims left out at sign-in, and why (never their values)
	IdP          *authn.TokenError // the IdP's refusal at its token endpoint
	Token        *TokenAudit       // a bearer token's principal
	Input        *policies.Input   // with decision_log full
}

// ID returns the decision id, creating it on first use: 16 random hex
// characters. It names a decision in the audit log and on error pages; it
// grants nothing, so a fast generator (ChaCha8, per goroutine) is enough
// for it to be unique.
func (a *Audit) ID() string {
	if a.id == "" {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], rand.Uint64())
		a.id = hex.EncodeToString(b[:])
	}
	return a.id
}

// signedInAs records who the request is from, in the audit line and on
// the answer's page: s must be a live session.
func (o *Outcome) signedInAs(s *authn.Session) {
	o.Audit.setUser(s)
	o.viewer = s
}

// identify shows on a who is signed in, if anyone.
func (o *Outcome) identify(a *Answer) {
	if o.viewer == nil || a.SignedIn {
		return
	}
	a.SignedIn, a.User = true, displayName(o.viewer)
}

// displayName is how a page names a signed-in user: their name, else
// their verified email, else "" (a subject is an identifier, often a
// UUID, and never shown).
func displayName(s *authn.Session) string {
	if n := CleanText(s.Name, 100); n != "" {
		return n
	}
	return s.Email
}

// setUser records who the request is from.
func (a *Audit) setUser(s *authn.Session) {
	if s == nil {
		a.User, a.Iss, a.Email = "", "", ""
		return
	}
	a.User, a.Iss, a.Email = s.Subject, s.Issuer, s.Email
}

// TokenAudit is what the audit line says of a bearer token.
type TokenAudit struct {
	Principal string // "service" or "user"
	ClientID  string
	Issuer    string
	ID        string // jti
}

// setToken records who a verified token is for.
func (a *Audit) setToken(t *authn.AccessToken) {
	if t == nil {
		return
	}
	a.User, a.Email = t.Subject, t.Email
	a.Token = &TokenAudit{Principal: t.Kind(), ClientID: t.ClientID, Issuer: t.Issuer, ID: t.ID}
}

// Event is an audit line besides the decision line: something the
// request (or an operator) did, or, with Failed, an operation that did
// not happen.
type Event struct {
	Msg    string
	Fields []zap.Field
	Failed bool
}

// Level is the event's log level.
func (e Event) Level() zapcore.Level {
	if e.Failed {
		return zapcore.ErrorLevel
	}
	return zapcore.InfoLevel
}

// The event messages.
const (
	EventStepUpStarted     = "step-up started"
	EventStepUpRefused     = "step-up refused"
	EventStepUpSucceeded   = "step-up succeeded"
	EventGrantRequested    = "grant requested"
	EventGrantAutoApproved = "grant auto-approved"
	EventGrantApproved     = "grant approved"
	EventGrantRejected     = "grant rejected"
	EventGrantRevoked      = "grant revoked"
	EventGrantExpired      = "grant expired"
	EventApprovalRefused   = "approval refused"
	EventUserLoggedOut     = "user logged out everywhere"
	EventUserDeprovisioned = "user de-provisioned"
	EventRevocationsKept   = "revocations lost by the store written back from this node's mirror"
	EventRevocationsLost   = "revocations lost by the store could not be written back"
	// EventBackchannelLogout: the IdP ended a session (back-channel
	// logout), and the sessions signed in through it are revoked.
	EventBackchannelLogout       = "back-channel logout"
	EventBackchannelLogoutFailed = "backchannel-logout failed"
	EventFormKept                = "form kept"
	EventFormRestored            = "form restored"
	EventFormDropped             = "form dropped"
	EventKeepFormFailed          = "keep-form failed"
)

// Events lists every event message; a failed store operation is
// "<operation> failed".
var Events = []string{EventStepUpStarted, EventStepUpRefused, EventStepUpSucceeded, EventGrantRequested,
	EventGrantAutoApproved, EventGrantApproved, EventGrantRejected, EventGrantRevoked, EventGrantExpired,
	EventApprovalRefused, EventUserLoggedOut, EventUserDeprovisioned, EventRevocationsKept, EventRevocationsLost,
	EventBackchannelLogout, EventBackchannelLogoutFailed,
	EventFormKept, EventFormRestored, EventFormDropped, EventKeepFormFailed,
	EventPolicyShadowDisagreed}
