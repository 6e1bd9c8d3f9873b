package policies

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
)

// A field is one leaf of the input as the decision cache sees it: a
// top-level field, or a field of user or request. It knows how to build
// itself as an OPA term and how to write itself into a cache key. Both
// read the same Input fields, and every key encoding is self-delimiting,
// so equal keys mean equal values (FuzzProjectionKey checks it).
type field struct {
	top, sub string // "user", "groups"; "app", ""
	term     func(in *Input) *ast.Term
	key      func(b []byte, in *Input) []byte
}

// fields lists every leaf, grouped by top-level field, in key order.
var fields = []field{
	{"access_request", "", accessRequestTerm, accessRequestKey},
	{"app", "", func(in *Input) *ast.Term { return ast.StringTerm(in.App) }, func(b []byte, in *Input) []byte { return keyString(b, in.App) }},
	{"grant_resources", "", func(in *Input) *ast.Term { return stringsTerm(in.GrantResources) }, func(b []byte, in *Input) []byte { return keyStrings(b, in.GrantResources) }},
	{"grants", "", grantsTerm, grantsKey},
	{"grants_error", "", func(in *Input) *ast.Term { return ast.BooleanTerm(in.GrantsError) }, func(b []byte, in *Input) []byte { return keyBool(b, in.GrantsError) }},
	{"now", "", func(in *Input) *ast.Term { return ast.IntNumberTerm(int(in.Now)) }, func(b []byte, in *Input) []byte { return keyInt(b, in.Now) }},
	{"now_minute", "", func(in *Input) *ast.Term { return ast.IntNumberTerm(int(in.NowMinute)) }, func(b []byte, in *Input) []byte { return keyInt(b, in.NowMinute) }},
	{"principal", "kind", func(in *Input) *ast.Term { return ast.StringTerm(in.Principal.Kind) }, func(b []byte, in *Input) []byte { return keyString(b, in.Principal.Kind) }},
	{"principal", "via", func(in *Input) *ast.Term { return ast.StringTerm(in.Principal.Via) }, func(b []byte, in *Input) []byte { return keyString(b, in.Principal.Via) }},
	{"request", "headers", func(in *Input) *ast.Term { return stringMapTerm(in.Request.Headers) }, func(b []byte, in *Input) []byte { return keyStringMap(b, in.Request.Headers) }},
	{"request", "host", func(in *Input) *ast.Term { return ast.StringTerm(in.Request.Host) }, func(b []byte, in *Input) []byte { return keyString(b, in.Request.Host) }},
	{"request", "method", func(in *Input) *ast.Term { return ast.StringTerm(in.Request.Method) }, func(b []byte, in *Input) []byte { return keyString(b, in.Request.Method) }},
	{"request", "path", func(in *Input) *ast.Term { return ast.StringTerm(in.Request.Path) }, func(b []byte, in *Input) []byte { return keyString(b, in.Request.Path) }},
	{"request", "path_lower", func(in *Input) *ast.Term { return ast.StringTerm(in.Request.PathLower) }, func(b []byte, in *Input) []byte { return keyString(b, in.Request.PathLower) }},
	{"request", "query", func(in *Input) *ast.Term { return queryTerm(in.Request.Query) }, func(b []byte, in *Input) []byte { return keyQuery(b, in.Request.Query) }},
	{"request", "raw_path", func(in *Input) *ast.Term { return ast.StringTerm(in.Request.RawPath) }, func(b []byte, in *Input) []byte { return keyString(b, in.Request.RawPath) }},
	{"request", "remote_ip", func(in *Input) *ast.Term { return ast.StringTerm(in.Request.RemoteIP) }, func(b []byte, in *Input) []byte { return keyString(b, in.Request.RemoteIP) }},
	{"review_item", "", reviewItemTerm, reviewItemKey},
	{"revoked_resources", "", func(in *Input) *ast.Term { return stringsTerm(in.RevokedResources) }, func(b []byte, in *Input) []byte { return keyStrings(b, in.RevokedResources) }},
	{"session", "", func(in *Input) *ast.Term {
		return ast.ObjectTerm(ast.Item(ast.StringTerm("age_s"), ast.IntNumberTerm(int(in.Session.AgeS))), ast.Item(ast.StringTerm("idle_s"), ast.IntNumberTerm(int(in.Session.IdleS))))
	}, func(b []byte, in *Input) []byte { return keyInt(keyInt(b, in.Session.AgeS), in.Session.IdleS) }},
	{"token", "client_id", func(in *Input) *ast.Term { return ast.StringTerm(in.Token.ClientID) }, func(b []byte, in *Input) []byte { return keyString(b, in.Token.ClientID) }},
	{"token", "scopes", func(in *Input) *ast.Term { return stringsTerm(in.Token.Scopes) }, func(b []byte, in *Input) []byte { return keyStrings(b, in.Token.Scopes) }},
	{"user", "acr", func(in *Input) *ast.Term { return ast.StringTerm(in.User.ACR) }, func(b []byte, in *Input) []byte { return keyString(b, in.User.ACR) }},
	{"user", "amr", func(in *Input) *ast.Term { return stringsTerm(in.User.AMR) }, func(b []byte, in *Input) []byte { return keyStrings(b, in.User.AMR) }},
	{"user", "auth_time", func(in *Input) *ast.Term { return ast.IntNumberTerm(int(in.User.AuthTime)) }, func(b []byte, in *Input) []byte { return keyInt(b, in.User.AuthTime) }},
	{"user", "email", func(in *Input) *ast.Term { return ast.StringTerm(in.User.Email) }, func(b []byte, in *Input) []byte { return keyString(b, in.User.Email) }},
	{"user", "groups", func(in *Input) *ast.Term { return stringsTerm(in.User.Groups) }, func(b []byte, in *Input) []byte { return keyStrings(b, in.User.Groups) }},
	{"user", "idp", func(in *Input) *ast.Term { return ast.StringTerm(in.User.IdP) }, func(b []byte, in *Input) []byte { return keyString(b, in.User.IdP) }},
	{"user", "iss", func(in *Input) *ast.Term { return ast.StringTerm(in.User.Iss) }, func(b []byte, in *Input) []byte { return keyString(b, in.User.Iss) }},
	{"user", "name", func(in *Input) *ast.Term { return ast.StringTerm(in.User.Name) }, func(b []byte, in *Input) []byte { return keyString(b, in.User.Name) }},
	{"user", "sub", func(in *Input) *ast.Term { return ast.StringTerm(in.User.Sub) }, func(b []byte, in *Input) []byte { return keyString(b, in.User.Sub) }},
	{"user", "verifications", func(in *Input) *ast.Term { return verificationsTerm(in.User.Verifications) }, func(b []byte, in *Input) []byte { return keyVerifications(b, in.User.Verifications) }},
	{"version", "", func(*Input) *ast.Term { return ast.IntNumberTerm(InputVersion) }, func(b []byte, _ *Input) []byte { return b }},
}

// A projection is the part of the input a policy can read: some of the
// fields, grouped by top-level field. The whole input is one too.
type projection struct {
	groups []fieldGroup
	// The fields in key order: the clock fields (now, now_minute) last,
	// so that a key without the time is a prefix of the key with it.
	base, clock []*field
}

type fieldGroup struct {
	key    *ast.Term
	leaves []*field
	object bool // user and request are objects of their leaves
}

var allFields = projectionOf(func(*field) bool { return true })

// projectionOf keeps the fields keep says the policy can read.
func projectionOf(keep func(*field) bool) *projection {
	p := &projection{}
	for i := range fields {
		f := &fields[i]
		if !keep(f) {
			continue
		}
		if clockBuiltins[f.top] != nil {
			p.clock = append(p.clock, f)
		} else {
			p.base = append(p.base, f)
		}
		if n := len(p.groups); n > 0 && p.groups[n-1].key.Value.(ast.String) == ast.String(f.top) {
			p.groups[n-1].leaves = append(p.groups[n-1].leaves, f)
			continue
		}
		p.groups = append(p.groups, fieldGroup{key: ast.StringTerm(f.top), leaves: []*field{f}, object: f.sub != ""})
	}
	return p
}

// value builds the projected input. The access request exists only in
// approval inputs.
func (p *projection) value(in *Input) ast.Value {
	items := make([][2]*ast.Term, 0, len(p.groups))
	for _, g := range p.groups {
		if !g.object {
			if g.leaves[0].top == "access_request" && in.AccessReq == nil || g.leaves[0].top == "review_item" && in.ReviewItem == nil {
				continue
			}
			items = append(items, [2]*ast.Term{g.key, g.leaves[0].term(in)})
			continue
		}
		sub := make([][2]*ast.Term, len(g.leaves))
		for i, f := range g.leaves {
			sub[i] = [2]*ast.Term{ast.StringTerm(f.sub), f.term(in)}
		}
		items = append(items, [2]*ast.Term{g.key, ast.ObjectTerm(sub...)})
	}
	return ast.NewObject(items...)
}

// key appends the cache key of the projected input to b.
func (p *projection) key(b []byte, in *Input) []byte {
	return p.clockKey(p.baseKey(b, in), in)
}

// baseKey appends the key of the projected input without the time.
func (p *projection) baseKey(b []byte, in *Input) []byte {
	for _, f := range p.base {
		b = f.key(b, in)
	}
	return b
}

// clockKey appends the key of the projected time.
func (p *projection) clockKey(b []byte, in *Input) []byte {
	for _, f := range p.clock {
		b = f.key(b, in)
	}
	return b
}

// reads reports whether the projection holds input.top(.sub).
func (p *projection) reads(top, sub string) bool {
	for _, g := range p.groups {
		for _, f := range g.leaves {
			if f.top == top && (sub == "" || f.sub == "" || f.sub == sub) {
				return true
			}
		}
	}
	return false
}

// names lists the projection's fields ("user.groups", "now").
func (p *projection) names() []string {
	var out []string
	for _, g := range p.groups {
		for _, f := range g.leaves {
			if f.sub == "" {
				out = append(out, f.top)
			} else {
				out = append(out, f.top+"."+f.sub)
			}
		}
	}
	return out
}

// Key encodings: each is self-delimiting (a length or count first), so a
// sequence of them is unambiguous.

func keyInt(b []byte, v int64) []byte { return binary.AppendVarint(b, v) }

func keyBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func keyString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func keyStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = keyString(b, s)
	}
	return b
}

func keyStringMap(b []byte, m map[string]string) []byte {
	b = binary.AppendUvarint(b, uint64(len(m)))
	if len(m) == 1 {
		for k, v := range m {
			return keyString(keyString(b, k), v)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		b = keyString(keyString(b, k), m[k])
	}
	return b
}

func keyQuery(b []byte, q map[string][]string) []byte {
	b = binary.AppendUvarint(b, uint64(len(q)))
	for _, k := range slices.Sorted(maps.Keys(q)) {
		b = keyStrings(keyString(b, k), q[k])
	}
	return b
}

func grantsKey(b []byte, in *Input) []byte {
	b = binary.AppendUvarint(b, uint64(len(in.Grants)))
	for _, g := range in.Grants {
		b = keyString(keyInt(keyString(b, g.Resource), g.ExpiresAt), g.ApprovedBy)
	}
	return b
}

// keyVerifications writes each fact as its term is built: strings and
// integers as such, anything else as its fmt.Sprint string.
func keyVerifications(b []byte, vs map[string]map[string]any) []byte {
	b = binary.AppendUvarint(b, uint64(len(vs)))
	for _, name := range slices.Sorted(maps.Keys(vs)) {
		facts := vs[name]
		b = binary.AppendUvarint(keyString(b, name), uint64(len(facts)))
		for _, k := range slices.Sorted(maps.Keys(facts)) {
			b = keyString(b, k)
			switch x := facts[k].(type) {
			case string:
				b = keyString(append(b, 's'), x)
			case int64:
				b = keyInt(append(b, 'i'), x)
			case int:
				b = keyInt(append(b, 'i'), int64(x))
			default:
				b = keyString(append(b, 's'), fmt.Sprint(x))
			}
		}
	}
	return b
}

func accessRequestKey(b []byte, in *Input) []byte {
	ar := in.AccessReq
	if ar == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	for _, s := range []string{ar.Requester.Sub, ar.Requester.Iss, ar.Requester.Email, ar.Resource, ar.Reason, ar.Duration} {
		b = keyString(b, s)
	}
	return b
}

// Terms.

var (
	k_requester = ast.StringTerm("requester")
	k_sub       = ast.StringTerm("sub")
	k_iss       = ast.StringTerm("iss")
	k_email     = ast.StringTerm("email")
	k_resource  = ast.StringTerm("resource")
	k_reason    = ast.StringTerm("reason")
	k_duration  = ast.StringTerm("duration")
	k_expires   = ast.StringTerm("expires_at")
	k_approved  = ast.StringTerm("approved_by")
)

func accessRequestTerm(in *Input) *ast.Term {
	ar := in.AccessReq
	return ast.ObjectTerm(
		ast.Item(k_requester, ast.ObjectTerm(
			ast.Item(k_sub, ast.StringTerm(ar.Requester.Sub)),
			ast.Item(k_iss, ast.StringTerm(ar.Requester.Iss)),
			ast.Item(k_email, ast.StringTerm(ar.Requester.Email)),
		)),
		ast.Item(k_resource, ast.StringTerm(ar.Resource)),
		ast.Item(k_reason, ast.StringTerm(ar.Reason)),
		ast.Item(k_duration, ast.StringTerm(ar.Duration)),
	)
}

func grantsTerm(in *Input) *ast.Term {
	ts := make([]*ast.Term, len(in.Grants))
	for i, g := range in.Grants {
		ts[i] = ast.ObjectTerm(
			ast.Item(k_resource, ast.StringTerm(g.Resource)),
			ast.Item(k_expires, ast.IntNumberTerm(int(g.ExpiresAt))),
			ast.Item(k_approved, ast.StringTerm(g.ApprovedBy)),
		)
	}
	return ast.ArrayTerm(ts...)
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

func queryTerm(q map[string][]string) *ast.Term {
	items := make([][2]*ast.Term, 0, len(q))
	for _, k := range slices.Sorted(maps.Keys(q)) {
		items = append(items, ast.Item(ast.StringTerm(k), stringsTerm(q[k])))
	}
	return ast.ObjectTerm(items...)
}
