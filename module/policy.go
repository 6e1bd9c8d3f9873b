package module

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
	"github.com/gatehouse-proxy/gatehouse/policies"
)

// policyEngines shares one watched engine per policy directory, query and
// timeout across handler instances and config reloads.
var policyEngines = caddy.NewUsagePool()

var defaultRedactQuery = []string{"code", "state", "token", "access_token", "id_token", "refresh_token",
	"password", "secret", "key", "api_key", "session", "sig", "signature"}

func (h *Handler) provisionPolicy() error {
	dir, err := filepath.Abs(h.Policy)
	if err != nil {
		return fmt.Errorf("gatehouse: policy: %v", err)
	}
	opts := policies.Options{Query: h.PolicyQuery, Timeout: time.Duration(h.PolicyTimeout), CacheSize: h.PolicyCache}
	h.engineKey = fmt.Sprintf("%s\x00%s\x00%s\x00%d", dir, opts.Query, opts.Timeout, opts.CacheSize)
	val, _, err := policyEngines.LoadOrNew(h.engineKey, func() (caddy.Destructor, error) {
		return policies.NewEngine(dir, opts, zap.New(caddyCore{name: "http.handlers.gatehouse.policy"}))
	})
	if err != nil {
		return fmt.Errorf("gatehouse: policy %s: %w", h.Policy, err)
	}
	h.engine = val.(*policies.Engine)
	return nil
}

// caddyCore writes through Caddy's current default logger, whatever config
// is loaded: a pooled engine outlives the config that created it.
type caddyCore struct {
	name   string
	fields []zapcore.Field
}

func (c caddyCore) core() zapcore.Core {
	return caddy.Log().Named(c.name).Core().With(c.fields)
}
func (c caddyCore) Enabled(l zapcore.Level) bool { return c.core().Enabled(l) }
func (c caddyCore) With(f []zapcore.Field) zapcore.Core {
	return caddyCore{name: c.name, fields: append(append([]zapcore.Field(nil), c.fields...), f...)}
}
func (c caddyCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	e.LoggerName = c.name
	return c.core().Check(e, ce)
}
func (c caddyCore) Write(e zapcore.Entry, f []zapcore.Field) error { return c.core().Write(e, f) }
func (c caddyCore) Sync() error                                    { return c.core().Sync() }

// policyInput builds the documented input for one request. With rev, it
// leaves out the query, headers and verifications when the policy cannot
// read them (and the decision log does not show the input).
func (h *Handler) policyInput(r *http.Request, s *authn.Session, canon string, now time.Time, gs []grants.Grant, grantsErr bool, rev *policies.Revision) *policies.Input {
	all := rev == nil || h.DecisionLog == "full"
	in := inputs.Get().(*policies.Input)
	*in = policies.Input{
		App: h.App,
		User: policies.User{
			Sub: s.Subject, Iss: h.Issuer, Email: s.Email, Name: s.Name, Groups: s.Groups,
			ACR: s.ACR, AMR: s.AMR, AuthTime: s.AuthTime,
		},
		Session: policies.Session{AgeS: now.Unix() - s.Created, IdleS: now.Unix() - s.LastSeen},
		Request: policies.Request{
			Method: r.Method, Host: r.Host, Path: canon, PathLower: strings.ToLower(canon),
			RawPath: r.URL.EscapedPath(), RemoteIP: clientIP(r),
		},
		GrantsError: grantsErr,
		Now:         now.Unix(),
		NowMinute:   policies.MinuteOf(now.Unix()),
		Version:     policies.InputVersion,
	}
	in.SetGrants(policyGrants(gs))
	if in.User.Groups == nil {
		in.User.Groups = []string{}
	}
	if in.User.AMR == nil {
		in.User.AMR = []string{}
	}
	if len(s.Verifications) > 0 && (all || rev.Reads("user", "verifications")) {
		in.User.Verifications = make(map[string]map[string]any, len(s.Verifications))
		for name, v := range s.Verifications {
			facts := map[string]any{"acr": v.ACR, "auth_time": v.AuthTime}
			for c, val := range v.Claims {
				if c != "acr" && c != "auth_time" {
					facts[c] = val
				}
			}
			in.User.Verifications[name] = facts
		}
	} else if all {
		in.User.Verifications = map[string]map[string]any{}
	}
	if all || rev.Reads("request", "query") {
		if r.URL.RawQuery != "" {
			in.Request.Query = r.URL.Query()
		} else {
			in.Request.Query = map[string][]string{}
		}
	}
	if all || rev.Reads("request", "headers") {
		in.Request.Headers = make(map[string]string, len(h.inputHeaders))
		for i, name := range h.inputHeaders {
			if v := r.Header.Get(name); v != "" {
				in.Request.Headers[h.inputHeadersLower[i]] = v
			}
		}
	}
	return in
}

// inputs recycles policy inputs that no log line keeps.
var inputs = sync.Pool{New: func() any { return new(policies.Input) }}

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

// loggableInput is the input as the decision log shows it: query values
// named in redact_query masked.
func (h *Handler) loggableInput(in *policies.Input) *policies.Input {
	cp := *in
	if len(in.Request.Query) > 0 {
		q := make(url.Values, len(in.Request.Query))
		for k, vs := range in.Request.Query {
			if h.redact[strings.ToLower(k)] {
				masked := make([]string, len(vs))
				for i := range masked {
					masked[i] = "REDACTED"
				}
				vs = masked
			}
			q[k] = vs
		}
		cp.Request.Query = q
	}
	return &cp
}

// decide evaluates the policy for a request with a valid session. It
// returns the decision, or an error that must deny (policy_error).
func (h *Handler) decide(r *http.Request, s *authn.Session, canon string, d *decision, gs []grants.Grant, grantsErr bool) (policies.Decision, error) {
	rev := h.engine.Current()
	d.revision = rev.ID
	in := h.policyInput(r, s, canon, d.start, gs, grantsErr, rev)
	if h.DecisionLog == "full" {
		d.input = h.loggableInput(in)
	}
	// The decision is made and logged even if the client has gone.
	dec, cached, err := rev.DecideInput(r.Context(), in)
	d.cached = cached
	if d.input == nil {
		inputs.Put(in)
	}
	if err != nil {
		return dec, err
	}
	for name := range dec.Headers {
		if _, ok := h.policyHeaders[normalizeHeaderName(name)]; !ok {
			return dec, fmt.Errorf("%w: the decision sets header %q, which policy_headers does not declare", policies.ErrPolicy, name)
		}
	}
	return dec, nil
}

// applyDecision acts on a policy decision. It returns true when the
// request may go on; otherwise it has answered.
func (h *Handler) applyDecision(w http.ResponseWriter, r *http.Request, d *decision, s *authn.Session, dec policies.Decision, err error, grantsErr bool) bool {
	if err != nil {
		d.result, d.reason = "deny", "policy_error"
		h.logger.Error("policy error: denied", zap.String("decision_id", d.ID()), zap.String("revision", d.revision), zap.Error(err))
		_ = h.reject(w, r, d, answer{Status: http.StatusForbidden, Error: "forbidden", Reason: "policy_error",
			Title: "Access denied", Message: "The access policy could not decide on this request, so access is denied. Please contact your administrator with the reference below."})
		return false
	}
	if dec.Allow {
		return true
	}
	d.result, d.reason = "deny", "policy_deny"
	d.policyReason = dec.Reason
	msg := dec.Reason
	if msg == "" {
		msg = "The access policy does not allow this request."
	}
	offer := dec.RequestGrant
	if offer == nil {
		_ = h.reject(w, r, d, answer{Status: http.StatusForbidden, Error: "forbidden", Reason: "policy_deny", Title: "Access denied", Message: msg})
		return false
	}
	d.offer = offer.Resource
	if grantsErr {
		// JIT access cannot be checked or requested: say so, not "forbidden".
		d.reason = "grants_unavailable"
		_ = h.reject(w, r, d, answer{Status: http.StatusServiceUnavailable, Error: "grants_unavailable", Reason: "grants_unavailable",
			Title: "Temporarily unavailable", Message: "Access to " + offer.Resource + " depends on temporary grants, which cannot be checked right now. Please try again in a minute."})
		return false
	}
	h.denyWithOffer(w, r, d, s, msg, offer)
	return false
}

// setPolicyHeaders sets the decision's headers on the upstream request.
func (h *Handler) setPolicyHeaders(r *http.Request, dec policies.Decision) {
	for name, v := range dec.Headers {
		r.Header[h.policyHeaders[normalizeHeaderName(name)]] = []string{headerValue(v)}
	}
}
