// Package policies loads, hot-reloads and evaluates Gatehouse's Rego
// entitlement policies with the embedded OPA engine, and holds the policy
// library (*.rego with *_test.rego) that ships with Gatehouse.
//
// The reusable API is small: build an Input, ask a Revision for a Decision
// (or an Approval), and Explain one offline. Engine keeps the current
// Revision of a directory, swapping it atomically when the files change.
package policies

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// InputVersion is the version of the input document described in the
// README. It changes only when a field changes meaning or disappears.
//
// Version 2 added principal (who or what is asking: a person's session, a
// person's token, a service's token), token (a bearer token's client and
// scopes) and user.idp: with bearer tokens, user and session may describe
// a service and a token's age, and with several IdPs, user.groups and
// user.email are what the user's IdP (user.idp) asserts.
const InputVersion = 2

// Input is the document every policy evaluates, documented in the README.
// Value builds it as an OPA value directly (no JSON round trip: that is
// the cost that matters on the hot path); the JSON tags give the same
// document for logs and for replaying a decision offline.
type Input struct {
	App     string  `json:"app"`
	User    User    `json:"user"`
	Session Session `json:"session"`
	Request Request `json:"request"`
	Grants  []Grant `json:"grants"`
	// GrantResources names the resources of Grants, sorted, each once
	// (SetGrants): a policy that needs no more than the names caches
	// better reading them.
	GrantResources []string `json:"grant_resources"`
	GrantsError    bool     `json:"grants_error"`
	Now            int64    `json:"now"`
	// NowMinute is Now rounded down to the minute. Rules that need no
	// finer time (working hours) should read it: a policy that never reads
	// now lets Gatehouse reuse a decision for the rest of the minute.
	NowMinute int64          `json:"now_minute"`
	Version   int            `json:"version"`
	AccessReq *AccessRequest `json:"access_request,omitempty"`
	Principal Principal      `json:"principal"`
	Token     Token          `json:"token"`
	// RevokedResources are the resources of this app an access review
	// took away from the user (review.go), sorted: deny them. A grant
	// for one, approved after the review, lifts it while it lasts
	// (Gatehouse leaves the resource out then).
	RevokedResources []string `json:"revoked_resources"`
	// ReviewItem is the access a review query is about (review.go).
	ReviewItem *ReviewItem `json:"review_item,omitempty"`
}

// Principal is who or what made the request.
type Principal struct {
	// Kind is "user" (a person: a session, or a token on their behalf)
	// or "service" (a client acting for itself).
	Kind string `json:"kind"`
	// Via is "session" (a browser's sign-in) or "token" (a bearer token).
	Via string `json:"via"`
}

// Token is the request's bearer token: empty for a session.
type Token struct {
	ClientID string   `json:"client_id"`
	Scopes   []string `json:"scopes"`
}

// User is who made the request, from the verified session.
type User struct {
	Sub string `json:"sub"`
	Iss string `json:"iss"`
	// IdP names the IdP the user signed in with, as the configuration
	// names it (primary for the one-IdP settings).
	IdP      string   `json:"idp"`
	Email    string   `json:"email"` // verified email, or ""
	Name     string   `json:"name"`
	Groups   []string `json:"groups"`
	ACR      string   `json:"acr"`
	AMR      []string `json:"amr"`
	AuthTime int64    `json:"auth_time"`
	// Verifications are step-outs to second providers, by provider name:
	// acr, auth_time and the claims the provider's configuration lists.
	Verifications map[string]map[string]any `json:"verifications"`
}

// Session describes the session's age and idleness, in seconds.
type Session struct {
	AgeS  int64 `json:"age_s"`
	IdleS int64 `json:"idle_s"`
}

// Request is what was asked. Path is canonical (decoded, cleaned, case
// kept); PathLower is its lowercase, which is what rules should compare;
// RawPath is what the client sent. Headers holds only the configured
// allow-list, names in lowercase.
type Request struct {
	Method    string              `json:"method"`
	Host      string              `json:"host"`
	Path      string              `json:"path"`
	PathLower string              `json:"path_lower"`
	RawPath   string              `json:"raw_path"`
	Query     map[string][]string `json:"query"`
	RemoteIP  string              `json:"remote_ip"`
	Headers   map[string]string   `json:"headers"`
}

// Grant is an active just-in-time grant of the user.
type Grant struct {
	Resource   string `json:"resource"`
	ExpiresAt  int64  `json:"expires_at"`
	ApprovedBy string `json:"approved_by"`
}

// AccessRequest is the request an approval decision is about.
type AccessRequest struct {
	Requester Requester `json:"requester"`
	Resource  string    `json:"resource"`
	Reason    string    `json:"reason"`
	Duration  string    `json:"duration"` // Go duration syntax, such as "2h"
}

// Requester is who asked for access.
type Requester struct {
	Sub   string `json:"sub"`
	Iss   string `json:"iss"`
	Email string `json:"email"`
}

// SetGrants sets Grants and GrantResources.
func (in *Input) SetGrants(gs []Grant) {
	if gs == nil {
		gs = []Grant{} // the log shows [], as the policy sees it, not null
	}
	in.Grants = gs
	in.GrantResources = make([]string, 0, len(gs))
	for _, g := range gs {
		in.GrantResources = append(in.GrantResources, g.Resource)
	}
	slices.Sort(in.GrantResources)
	in.GrantResources = slices.Compact(in.GrantResources)
}

// MinuteOf is t (Unix seconds) rounded down to the minute: NowMinute.
func MinuteOf(t int64) int64 { return t - t%60 }

// Value returns the whole input as an OPA value.
func (in *Input) Value() ast.Value { return allFields.value(in) }

// Source is what an input is built from: the verified user, the session's
// times, the HTTP request and the user's grants.
type Source struct {
	App  string
	User User // without Verifications: see Verifications
	// Verifications returns input.user.verifications; it is called only
	// when the input needs them.
	Verifications func() map[string]map[string]any
	// Created and LastSeen are the session's times, Unix seconds.
	Created, LastSeen int64
	// HTTP is the request: its method, host, raw path, query and headers.
	HTTP *http.Request
	// Path is the canonical path (see the README's paths section).
	Path string
	// RemoteIP is the client's address as the server established it.
	RemoteIP string
	// Headers are the canonical names of the headers copied into the
	// input, and HeadersLower the same names in lowercase, as the input
	// names them.
	Headers, HeadersLower []string
	Grants                []Grant
	GrantsError           bool
	Now                   time.Time
	// Principal defaults to a person's session; Token is a bearer
	// token's, nil for a session.
	Principal Principal
	Token     *Token
	// RevokedResources are the app's resources revoked for the user by
	// access reviews (Input.RevokedResources).
	RevokedResources []string
}

// NewInput builds the documented input for one request. With rev, parts
// that rev's policy cannot read (the query, the headers, verifications)
// are left out, unless whole is set (the decision log shows the input).
// Release returns the input for reuse once nothing refers to it.
func NewInput(src *Source, rev *Revision, whole bool) *Input {
	all := rev == nil || whole
	in := inputs.Get().(*Input)
	r := src.HTTP
	*in = Input{
		App:     src.App,
		User:    src.User,
		Session: Session{AgeS: src.Now.Unix() - src.Created, IdleS: src.Now.Unix() - src.LastSeen},
		Request: Request{
			Method: r.Method, Host: r.Host, Path: src.Path, PathLower: strings.ToLower(src.Path),
			RawPath: r.URL.EscapedPath(), RemoteIP: src.RemoteIP,
		},
		GrantsError: src.GrantsError,
		Now:         src.Now.Unix(),
		NowMinute:   MinuteOf(src.Now.Unix()),
		Version:     InputVersion,
	}
	in.SetGrants(src.Grants)
	in.RevokedResources = src.RevokedResources
	if in.RevokedResources == nil {
		in.RevokedResources = []string{}
	}
	in.Principal = src.Principal
	if in.Principal.Kind == "" {
		in.Principal = Principal{Kind: "user", Via: "session"}
	}
	in.Token = Token{Scopes: []string{}}
	if src.Token != nil {
		in.Token = *src.Token
		if in.Token.Scopes == nil {
			in.Token.Scopes = []string{}
		}
	}
	if in.User.Groups == nil {
		in.User.Groups = []string{}
	}
	if in.User.AMR == nil {
		in.User.AMR = []string{}
	}
	in.User.Verifications = nil
	if src.Verifications != nil && (all || rev.Reads("user", "verifications")) {
		in.User.Verifications = src.Verifications()
	}
	if in.User.Verifications == nil && all {
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
		in.Request.Headers = make(map[string]string, len(src.Headers))
		for i, name := range src.Headers {
			if v := r.Header.Get(name); v != "" {
				in.Request.Headers[src.HeadersLower[i]] = v
			}
		}
	}
	return in
}

// Release returns an input that nothing refers to any more (no log line
// keeps it) for reuse.
func Release(in *Input) { inputs.Put(in) }

// inputs recycles inputs.
var inputs = sync.Pool{New: func() any { return new(Input) }}

// Redacted returns a copy of the input for the decision log: the values
// of query parameters named in redact (lowercase names) masked.
func (in *Input) Redacted(redact map[string]bool) *Input {
	cp := *in
	if len(in.Request.Query) > 0 {
		q := make(map[string][]string, len(in.Request.Query))
		for k, vs := range in.Request.Query {
			if redact[strings.ToLower(k)] {
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
