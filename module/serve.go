package module

import (
	"net"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/gatehouse-proxy/gatehouse/gate"
)

// ServeHTTP runs the Gatehouse pipeline for one request: it removes the
// managed headers a client sent, lets the gate decide (its own endpoints
// under /.gatehouse/, public paths, and for everything else the session,
// revocations, grants, allow rules, policy and step-up), writes the audit
// line, and either answers (sign-in, refusal, page, redirect) or passes
// the request on with the verified identity headers.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// 1. Strip, before anything else can read them.
	h.gate.Strip(r)
	trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	req := &gate.Request{HTTP: r, Target: originalTarget(r), ClientIP: clientIP(r), TrustedProxy: trusted, Start: h.now()}

	// 2-9. Decide.
	out := h.gate.Handle(req)
	if out.Kind != gate.Allow {
		return h.respond(w, r, &out)
	}
	for _, hv := range out.Upstream {
		if hv.Values == nil {
			delete(r.Header, hv.Name) // removed for the upstream (a bearer token)
			continue
		}
		r.Header[hv.Name] = hv.Values
	}
	for _, c := range out.Cookies {
		http.SetCookie(w, c)
	}
	if out.Audit.User != "" {
		if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
			repl.Set("http.auth.user.id", out.Audit.User)
		}
	}
	h.audit(&out)
	h.gate.StripCookies(r)
	return next.ServeHTTP(w, r)
}

// originalTarget is the request-target as the client sent it, before any
// rewrite in front of Gatehouse.
func originalTarget(r *http.Request) string {
	if or, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok {
		return or.RequestURI
	}
	return r.RequestURI
}

// clientIP is the client's address as Caddy established it (honouring
// trusted_proxies), else the peer's.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
