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
	PathJWKS      = "/.gatehouse/jwks.json"
	PathCallback  = "/.gatehouse/callback"
	PathLogin     = "/.gatehouse/login"
	PathLogout    = "/.gatehouse/logout"
	PathStepUp    = "/.gatehouse/stepup"
	PathRequest   = "/.gatehouse/request"
	PathAccess    = "/.gatehouse/access"
	PathApprovals = "/.gatehouse/approvals"
)

// endpoint routes one of Gatehouse's own endpoints. They are never
// proxied: an unknown one is 404.
func (g *Gate) endpoint(req *Request, out Outcome) Outcome {
	out.Result = ResultInternal
	type endpoint struct {
		methods string // allowed methods, as the Allow header lists them
		serve   func(*Request, Outcome) Outcome
	}
	var e endpoint
	switch strings.ToLower(req.path) {
	case PathHealthz:
		e = endpoint{"GET, HEAD", g.Healthz}
	case PathJWKS:
		e = endpoint{"GET, HEAD", g.JWKS}
	case PathCallback:
		e = endpoint{"GET", g.Callback}
	case PathLogin:
		e = endpoint{"GET", g.Login}
	case PathLogout:
		e = endpoint{"GET, POST", g.Logout}
	case PathStepUp:
		e = endpoint{"GET", g.StepUp}
	case PathRequest:
		e = endpoint{"POST", g.RequestAccess}
	case PathAccess:
		e = endpoint{"GET, POST", g.Access}
	case PathApprovals:
		e = endpoint{"GET, POST", g.Approvals}
	default:
		return out.refuse(BadRequest, http.StatusNotFound, ResultInternal, ReasonNotFound, &Answer{Error: "not_found",
			Message: "There is nothing here."})
	}
	if !slices.Contains(strings.Split(e.methods, ", "), req.HTTP.Method) {
		out.setHeader("Allow", e.methods)
		return out.refuse(BadRequest, http.StatusMethodNotAllowed, ResultInternal, ReasonMethodNotAllowed,
			&Answer{Error: "method_not_allowed", Message: "This method is not allowed here."})
	}
	return e.serve(req, out)
}

// Healthz answers liveness checks without a session.
func (g *Gate) Healthz(req *Request, out Outcome) Outcome {
	out.Kind, out.Status, out.Result, out.Reason = Page, http.StatusOK, ResultInternal, ReasonHealthz
	out.setHeader("Content-Type", "application/json")
	out.setHeader("Cache-Control", "no-store")
	if req.HTTP.Method == http.MethodGet {
		out.Body = []byte(`{"status":"ok"}` + "\n")
	}
	return out
}

// JWKS publishes the keys that verify the signed assertion.
func (g *Gate) JWKS(req *Request, out Outcome) Outcome {
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
