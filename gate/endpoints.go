package gate

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
)

// The endpoints under /.gatehouse/, matched on the canonical path,
// case-insensitively.
const (
	PathHealthz   = "/.gatehouse/healthz"
	PathReadyz    = "/.gatehouse/readyz"
	PathJWKS      = "/.gatehouse/jwks.json"
	PathCallback  = "/.gatehouse/callback"
	PathLogin     = "/.gatehouse/login"
	PathLogout    = "/.gatehouse/logout"
	PathStepUp    = "/.gatehouse/stepup"
	PathRequest   = "/.gatehouse/request"
	PathAccess    = "/.gatehouse/access"
	PathApprovals = "/.gatehouse/approvals"
	// PathBackchannelLogout is the back-channel logout URI to register
	// at the IdP (backchannel_logout_uri).
	PathBackchannelLogout = "/.gatehouse/backchannel-logout"
	PathResubmit          = "/.gatehouse/resubmit"
)

// endpointMethods are the methods each endpoint takes, as the Allow
// header lists them.
var endpointMethods = map[string]string{
	PathHealthz: "GET, HEAD", PathReadyz: "GET, HEAD", PathJWKS: "GET, HEAD", PathCallback: "GET", PathLogin: "GET", PathLogout: "GET, POST",
	PathStepUp: "GET", PathRequest: "POST", PathAccess: "GET, POST", PathApprovals: "GET, POST", PathBackchannelLogout: "POST",
	PathResubmit: "GET",
}

// endpoint routes one of Gatehouse's own endpoints. They are never
// proxied: an unknown one is 404. (A switch, not a table of functions:
// calls through function values would move every Request to the heap.)
func (g *Gate) endpoint(req *Request, out Outcome) Outcome {
	out.Result = ResultInternal
	path := strings.ToLower(req.path)
	if g.cfg.SCIM != nil && isSCIMPath(path) {
		return g.scim(req, out)
	}
	methods, ok := endpointMethods[path]
	if !ok {
		return out.refuse(BadRequest, http.StatusNotFound, ResultInternal, ReasonNotFound, &Answer{Error: "not_found",
			Message: "There is nothing here."})
	}
	if !slices.Contains(strings.Split(methods, ", "), req.HTTP.Method) {
		out.setHeader("Allow", methods)
		return out.refuse(BadRequest, http.StatusMethodNotAllowed, ResultInternal, ReasonMethodNotAllowed,
			&Answer{Error: "method_not_allowed", Message: "This method is not allowed here."})
	}
	switch path {
	case PathHealthz:
		return g.healthz(req, out)
	case PathReadyz:
		return g.readyz(req, out)
	case PathJWKS:
		return g.jwks(req, out)
	case PathCallback:
		return g.callback(req, out)
	case PathLogin:
		return g.login(req, out)
	case PathLogout:
		return g.logout(req, out)
	case PathStepUp:
		return g.stepUp(req, out)
	case PathRequest:
		return g.requestAccess(req, out)
	case PathAccess:
		return g.access(req, out)
	case PathBackchannelLogout:
		return g.backchannelLogout(req, out)
	case PathResubmit:
		return g.resubmit(req, out)
	case PathReviews:
		return g.reviewsPage(req, out)
	default:
		return g.approvals(req, out)
	}
}

// jwks publishes the keys that verify the signed assertion.
func (g *Gate) jwks(req *Request, out Outcome) Outcome {
	out.Kind, out.Status, out.Result, out.Reason = Page, http.StatusOK, ResultInternal, ReasonJWKS
	body := []byte(`{"keys":[]}`)
	if g.cfg.PublishedKeys != nil {
		b, err := json.Marshal(g.cfg.PublishedKeys.Set(req.Start))
		if err != nil {
			return out.fail(err)
		}
		body = b
	}
	out.setHeader("Content-Type", "application/jwk-set+json")
	out.setHeader("Cache-Control", "public, max-age=60")
	out.setHeader("X-Content-Type-Options", "nosniff")
	if req.HTTP.Method == http.MethodGet {
		out.Body = body
	}
	return out
}
