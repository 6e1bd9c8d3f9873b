// Package policies loads, hot-reloads and evaluates Gatehouse's Rego
// entitlement policies with the embedded OPA engine, and holds the policy
// library (*.rego with *_test.rego) that ships with Gatehouse.
//
// The reusable API is small: build an Input, ask a Revision for a Decision
// (or an Approval), and Explain one offline. Engine keeps the current
// Revision of a directory, swapping it atomically when the files change.
package policies

import (
	"fmt"
	"net/url"
	"sort"

	"github.com/open-policy-agent/opa/v1/ast"
)

// InputVersion is the version of the input document described in the
// README. It changes only when a field changes meaning or disappears.
const InputVersion = 1

// Input is the document every policy evaluates, documented in the README.
// Value builds it as an OPA value directly (no JSON round trip: that is
// the cost that matters on the hot path); the JSON tags give the same
// document for logs and for replaying a decision offline.
type Input struct {
	App         string         `json:"app"`
	User        User           `json:"user"`
	Session     Session        `json:"session"`
	Request     Request        `json:"request"`
	Grants      []Grant        `json:"grants"`
	GrantsError bool           `json:"grants_error"`
	Now         int64          `json:"now"`
	Version     int            `json:"version"`
	AccessReq   *AccessRequest `json:"access_request,omitempty"`
}

// User is who made the request, from the verified session.
type User struct {
	Sub      string   `json:"sub"`
	Iss      string   `json:"iss"`
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

// Keys of the input document, made once: terms are immutable.
var (
	k_access_request = ast.StringTerm("access_request")
	k_acr            = ast.StringTerm("acr")
	k_age_s          = ast.StringTerm("age_s")
	k_amr            = ast.StringTerm("amr")
	k_app            = ast.StringTerm("app")
	k_approved_by    = ast.StringTerm("approved_by")
	k_auth_time      = ast.StringTerm("auth_time")
	k_duration       = ast.StringTerm("duration")
	k_email          = ast.StringTerm("email")
	k_expires_at     = ast.StringTerm("expires_at")
	k_grants         = ast.StringTerm("grants")
	k_grants_error   = ast.StringTerm("grants_error")
	k_groups         = ast.StringTerm("groups")
	k_headers        = ast.StringTerm("headers")
	k_host           = ast.StringTerm("host")
	k_idle_s         = ast.StringTerm("idle_s")
	k_iss            = ast.StringTerm("iss")
	k_method         = ast.StringTerm("method")
	k_name           = ast.StringTerm("name")
	k_now            = ast.StringTerm("now")
	k_path           = ast.StringTerm("path")
	k_path_lower     = ast.StringTerm("path_lower")
	k_query          = ast.StringTerm("query")
	k_raw_path       = ast.StringTerm("raw_path")
	k_reason         = ast.StringTerm("reason")
	k_remote_ip      = ast.StringTerm("remote_ip")
	k_request        = ast.StringTerm("request")
	k_requester      = ast.StringTerm("requester")
	k_resource       = ast.StringTerm("resource")
	k_session        = ast.StringTerm("session")
	k_sub            = ast.StringTerm("sub")
	k_user           = ast.StringTerm("user")
	k_version        = ast.StringTerm("version")
	k_verifications  = ast.StringTerm("verifications")
)

// Value returns the input as an OPA value.
func (in *Input) Value() ast.Value {
	grants := make([]*ast.Term, len(in.Grants))
	for i, g := range in.Grants {
		grants[i] = ast.ObjectTerm(
			ast.Item(k_resource, ast.StringTerm(g.Resource)),
			ast.Item(k_expires_at, ast.IntNumberTerm(int(g.ExpiresAt))),
			ast.Item(k_approved_by, ast.StringTerm(g.ApprovedBy)),
		)
	}
	items := [][2]*ast.Term{
		ast.Item(k_app, ast.StringTerm(in.App)),
		ast.Item(k_user, ast.ObjectTerm(
			ast.Item(k_sub, ast.StringTerm(in.User.Sub)),
			ast.Item(k_iss, ast.StringTerm(in.User.Iss)),
			ast.Item(k_email, ast.StringTerm(in.User.Email)),
			ast.Item(k_name, ast.StringTerm(in.User.Name)),
			ast.Item(k_groups, stringsTerm(in.User.Groups)),
			ast.Item(k_acr, ast.StringTerm(in.User.ACR)),
			ast.Item(k_amr, stringsTerm(in.User.AMR)),
			ast.Item(k_auth_time, ast.IntNumberTerm(int(in.User.AuthTime))),
			ast.Item(k_verifications, verificationsTerm(in.User.Verifications)),
		)),
		ast.Item(k_session, ast.ObjectTerm(
			ast.Item(k_age_s, ast.IntNumberTerm(int(in.Session.AgeS))),
			ast.Item(k_idle_s, ast.IntNumberTerm(int(in.Session.IdleS))),
		)),
		ast.Item(k_request, ast.ObjectTerm(
			ast.Item(k_method, ast.StringTerm(in.Request.Method)),
			ast.Item(k_host, ast.StringTerm(in.Request.Host)),
			ast.Item(k_path, ast.StringTerm(in.Request.Path)),
			ast.Item(k_path_lower, ast.StringTerm(in.Request.PathLower)),
			ast.Item(k_raw_path, ast.StringTerm(in.Request.RawPath)),
			ast.Item(k_query, queryTerm(in.Request.Query)),
			ast.Item(k_remote_ip, ast.StringTerm(in.Request.RemoteIP)),
			ast.Item(k_headers, stringMapTerm(in.Request.Headers)),
		)),
		ast.Item(k_grants, ast.ArrayTerm(grants...)),
		ast.Item(k_grants_error, ast.BooleanTerm(in.GrantsError)),
		ast.Item(k_now, ast.IntNumberTerm(int(in.Now))),
		ast.Item(k_version, ast.IntNumberTerm(InputVersion)),
	}
	if ar := in.AccessReq; ar != nil {
		items = append(items, ast.Item(k_access_request, ast.ObjectTerm(
			ast.Item(k_requester, ast.ObjectTerm(
				ast.Item(k_sub, ast.StringTerm(ar.Requester.Sub)),
				ast.Item(k_iss, ast.StringTerm(ar.Requester.Iss)),
				ast.Item(k_email, ast.StringTerm(ar.Requester.Email)),
			)),
			ast.Item(k_resource, ast.StringTerm(ar.Resource)),
			ast.Item(k_reason, ast.StringTerm(ar.Reason)),
			ast.Item(k_duration, ast.StringTerm(ar.Duration)),
		)))
	}
	return ast.NewObject(items...)
}

func verificationsTerm(vs map[string]map[string]any) *ast.Term {
	items := make([][2]*ast.Term, 0, len(vs))
	for name, facts := range vs {
		fi := make([][2]*ast.Term, 0, len(facts))
		for k, v := range facts {
			var t *ast.Term
			switch x := v.(type) {
			case string:
				t = ast.StringTerm(x)
			case int64:
				t = ast.IntNumberTerm(int(x))
			case int:
				t = ast.IntNumberTerm(x)
			default:
				t = ast.StringTerm(fmt.Sprint(x))
			}
			fi = append(fi, ast.Item(ast.StringTerm(k), t))
		}
		items = append(items, ast.Item(ast.StringTerm(name), ast.ObjectTerm(fi...)))
	}
	return ast.ObjectTerm(items...)
}

func stringsTerm(ss []string) *ast.Term {
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(ts...)
}

func stringMapTerm(m map[string]string) *ast.Term {
	items := make([][2]*ast.Term, 0, len(m))
	for k, v := range m {
		items = append(items, ast.Item(ast.StringTerm(k), ast.StringTerm(v)))
	}
	return ast.ObjectTerm(items...)
}

func queryTerm(q url.Values) *ast.Term {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	items := make([][2]*ast.Term, 0, len(q))
	for _, k := range keys {
		items = append(items, ast.Item(ast.StringTerm(k), stringsTerm(q[k])))
	}
	return ast.ObjectTerm(items...)
}
