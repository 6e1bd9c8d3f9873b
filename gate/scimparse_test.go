package gate

import (
	"errors"
	"strings"
	"testing"

	"github.com/gatehouse-proxy/gatehouse/grants"
)

func TestParseSCIMFilter(t *testing.T) {
	for _, c := range []struct {
		in, attr, value string
	}{
		{`userName eq "alice@example.com"`, "userName", "alice@example.com"},
		{`USERNAME EQ "Alice"`, "userName", "Alice"},
		{`  userName   eq   "a b"  `, "userName", "a b"},
		{`externalId eq "00ujl29u0le5T6Aj10h7"`, "externalId", "00ujl29u0le5T6Aj10h7"},
		{`urn:ietf:params:scim:schemas:core:2.0:User:userName eq "x"`, "userName", "x"},
		{`userName eq "quote \" and \u00e9"`, "userName", `quote " and é`},
		{`userName eq ""`, "userName", ""},
	} {
		f, err := parseSCIMFilter(c.in)
		if err != nil || f.attr != c.attr || f.value != c.value {
			t.Errorf("%q: %+v %v", c.in, f, err)
		}
	}
	for _, in := range []string{
		``, `userName`, `userName eq`, `userName eq alice`, `userName eq 'alice'`, `userName eq "alice`, `userName eq "a" and active eq true`,
		`userName eq "a" or userName eq "b"`, `userName co "a"`, `userName sw "a"`, `userName pr`, `not (userName eq "a")`,
		`emails[type eq "work"].value eq "a"`, `emails.value eq "a"`, `id eq "x"`, `active eq true`, `userName eq 7`, `userName eq null`,
		`userName eq ["a"]`, `urn:x:userName eq "a"`, `userName eq "a"  "b"`, `userName eq "` + strings.Repeat("a", 2000) + `"`,
	} {
		_, err := parseSCIMFilter(in)
		var p *scimProblem
		if !errors.As(err, &p) || p.Status != 400 || p.SCIMType != "invalidFilter" {
			t.Errorf("%q: %v, want 400 invalidFilter", truncate(in, 40), err)
		}
	}
}

// TestApplySCIMPatch: the operations Entra ID and Okta send, and RFC
// 7644's others, on the attributes Gatehouse keeps.
func TestApplySCIMPatch(t *testing.T) {
	base := grants.SCIMUser{ID: "u1", UserName: "alice@example.com", ExternalID: "x1", Active: true,
		Emails: []grants.SCIMEmail{{Value: "alice@example.com", Type: "work", Primary: true}, {Value: "a@home.example", Type: "home"}}}
	patch := func(ops string) string {
		return `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":` + ops + `}`
	}
	emails := func(u grants.SCIMUser) string {
		var out []string
		for _, e := range u.Emails {
			s := e.Type + ":" + e.Value
			if e.Primary {
				s += "*"
			}
			out = append(out, s)
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct {
		name, ops string
		check     func(grants.SCIMUser) bool
	}{
		{"Entra ID: disable", `[{"op":"Replace","path":"active","value":false}]`, func(u grants.SCIMUser) bool { return !u.Active }},
		{"Entra ID: string boolean", `[{"op":"Replace","path":"active","value":"False"}]`, func(u grants.SCIMUser) bool { return !u.Active }},
		{"Okta: value object", `[{"op":"replace","value":{"active":false}}]`, func(u grants.SCIMUser) bool { return !u.Active }},
		{"value object, string, other case", `[{"op":"REPLACE","value":{"Active":"FALSE"}}]`, func(u grants.SCIMUser) bool { return !u.Active }},
		{"Entra ID: work email and family name", `[{"op":"Replace","path":"emails[type eq \"work\"].value","value":"updatedEmail@microsoft.com"},
			{"op":"Replace","path":"name.familyName","value":"updatedFamilyName"}]`,
			func(u grants.SCIMUser) bool {
				return emails(u) == "work:updatedEmail@microsoft.com* home:a@home.example" && u.PrimaryEmail() == "updatedEmail@microsoft.com"
			}},
		{"Entra ID: userName", `[{"op":"Replace","path":"userName","value":"5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"}]`,
			func(u grants.SCIMUser) bool { return u.UserName == "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com" }},
		{"a work email added where none was", `[{"op":"remove","path":"emails[type eq \"work\"]"},{"op":"Add","path":"emails[type eq \"Work\"].value","value":"n@x"}]`,
			func(u grants.SCIMUser) bool { return emails(u) == "home:a@home.example Work:n@x" }},
		{"the URN of the User schema", `[{"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User:externalId","value":"x2"}]`,
			func(u grants.SCIMUser) bool { return u.ExternalID == "x2" }},
		{"externalId removed", `[{"op":"remove","path":"externalId"}]`, func(u grants.SCIMUser) bool { return u.ExternalID == "" }},
		{"a primary email added", `[{"op":"add","path":"emails","value":[{"value":"new@x","type":"work","primary":true}]}]`,
			func(u grants.SCIMUser) bool {
				return emails(u) == "work:alice@example.com home:a@home.example work:new@x*" && u.PrimaryEmail() == "new@x"
			}},
		{"emails replaced", `[{"op":"replace","path":"emails","value":[{"value":"only@x"}]}]`, func(u grants.SCIMUser) bool { return emails(u) == ":only@x" }},
		{"emails removed", `[{"op":"remove","path":"emails"}]`, func(u grants.SCIMUser) bool { return len(u.Emails) == 0 }},
		{"one email removed by value", `[{"op":"remove","path":"emails[value eq \"A@HOME.example\"]"}]`,
			func(u grants.SCIMUser) bool { return emails(u) == "work:alice@example.com*" }},
		{"primary moved", `[{"op":"replace","path":"emails[primary eq true].primary","value":false},{"op":"replace","path":"emails[type eq \"home\"].primary","value":"True"}]`,
			func(u grants.SCIMUser) bool { return u.PrimaryEmail() == "a@home.example" }},
		{"the enterprise extension, ignored", `[{"op":"Add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":"m1"},
			{"op":"Add","value":{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber":"7","name.givenName":"A","displayName":"A"}}]`,
			func(u grants.SCIMUser) bool {
				return u.Active && emails(u) == emails(base) && u.UserName == base.UserName
			}},
		{"other attributes, ignored", `[{"op":"replace","path":"phoneNumbers[type eq \"work\"].value","value":"1"},{"op":"remove","path":"title"},
			{"op":"add","path":"emails[type eq \"work\"].display","value":"x"}]`,
			func(u grants.SCIMUser) bool { return emails(u) == emails(base) }},
		{"the same id", `[{"op":"replace","path":"id","value":"u1"}]`, func(u grants.SCIMUser) bool { return u.ID == "u1" }},
	} {
		u, err := applySCIMPatch(base, []byte(patch(c.ops)))
		if err != nil || !c.check(u) {
			t.Errorf("%s: %+v %v", c.name, u, err)
		}
	}
	if emails(base) != "work:alice@example.com* home:a@home.example" {
		t.Errorf("the user patched was changed: %s", emails(base))
	}
	for _, c := range []struct{ name, body, scimType string }{
		{"not JSON", `{`, "invalidSyntax"},
		{"no PatchOp schema", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"Operations":[{"op":"add","path":"active","value":true}]}`, "invalidSyntax"},
		{"Operations not a list", patch(`{"op":"add"}`), "invalidSyntax"},
		{"too many operations", patch(`[` + strings.TrimSuffix(strings.Repeat(`{"op":"add","path":"active","value":true},`, 101), ",") + `]`), "invalidSyntax"},
		{"op not a string", patch(`[{"op":1,"path":"active","value":true}]`), "invalidSyntax"},
		{"op twice", patch(`[{"op":"add","OP":"remove","path":"active","value":true}]`), "invalidSyntax"},
		{"a path not a string", patch(`[{"op":"add","path":1,"value":true}]`), "invalidPath"},
		{"a value missing", patch(`[{"op":"replace","path":"active"}]`), "invalidValue"},
		{"a value object not an object", patch(`[{"op":"replace","value":false}]`), "invalidValue"},
		{"an empty userName", patch(`[{"op":"replace","path":"userName","value":""}]`), "invalidValue"},
		{"userName removed", patch(`[{"op":"remove","path":"userName"}]`), "invalidValue"},
		{"a sub-attribute of active", patch(`[{"op":"replace","path":"active.value","value":true}]`), "invalidPath"},
		{"a path with a space", patch(`[{"op":"replace","path":"user name","value":"x"}]`), "invalidPath"},
		{"a path after ]", patch(`[{"op":"replace","path":"emails[type eq \"work\"]value","value":"x"}]`), "invalidPath"},
		{"a filter with or", patch(`[{"op":"replace","path":"emails[type eq \"work\" or type eq \"home\"].value","value":"x"}]`), "invalidFilter"},
		{"a filter on display", patch(`[{"op":"replace","path":"emails[display eq \"x\"].value","value":"x"}]`), "invalidFilter"},
		{"no email matches", patch(`[{"op":"replace","path":"emails[value eq \"none@x\"].value","value":"x"}]`), "noTarget"},
		{"meta", patch(`[{"op":"replace","path":"meta.version","value":"x"}]`), "mutability"},
		{"two primary emails", patch(`[{"op":"replace","path":"emails[type eq \"home\"].primary","value":true}]`), "invalidValue"},
		{"an email without value", patch(`[{"op":"add","path":"emails","value":[{"type":"work"}]}]`), "invalidValue"},
		{"a control character", patch(`[{"op":"replace","path":"externalId","value":"a\u0007"}]`), "invalidValue"},
	} {
		_, err := applySCIMPatch(base, []byte(c.body))
		var p *scimProblem
		if !errors.As(err, &p) || p.Status != 400 || p.SCIMType != c.scimType {
			t.Errorf("%s: %v, want 400 %s", c.name, err, c.scimType)
		}
	}
}

// FuzzSCIMFilter: any filter is a search of userName or externalId, or
// a 400 invalidFilter; never a search of everything.
func FuzzSCIMFilter(f *testing.F) {
	for _, s := range []string{`userName eq "alice@example.com"`, `externalId eq "x"`, `userName eq "a" and b eq "c"`,
		`urn:ietf:params:scim:schemas:core:2.0:User:userName eq "\u0000"`, `userName eq ""`, `emails[type eq "work"].value eq "a"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pf, err := parseSCIMFilter(s)
		if err != nil {
			var p *scimProblem
			if !errors.As(err, &p) || p.Status != 400 || p.SCIMType != "invalidFilter" {
				t.Fatalf("%q: %v", s, err)
			}
			return
		}
		if pf.attr != "userName" && pf.attr != "externalId" {
			t.Fatalf("%q: searches %q", s, pf.attr)
		}
	})
}

// FuzzSCIMPatch: any PATCH body (and any User body) either is refused
// with a SCIM 400 or leaves a user the store accepts; the user patched
// is never changed in place.
func FuzzSCIMPatch(f *testing.F) {
	for _, s := range []string{
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":false}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":"False","userName":"b"}}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"emails[type eq \"work\"].value","value":"x@y"}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"emails","value":[{"value":"n@x","primary":true}]}]}`,
		`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove","path":"emails[primary eq true]"}]}`,
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a","emails":[{"value":"a@x","primary":"True"}],"active":false}`,
	} {
		f.Add(s)
	}
	base := grants.SCIMUser{ID: "u1", UserName: "alice", Active: true, Emails: []grants.SCIMEmail{{Value: "a@x", Type: "work", Primary: true}}}
	f.Fuzz(func(t *testing.T, body string) {
		check := func(what string, u grants.SCIMUser, err error) {
			if err != nil {
				var p *scimProblem
				if !errors.As(err, &p) || p.Status != 400 || p.SCIMType == "" || p.Reason != ReasonSCIMInvalid {
					t.Fatalf("%s %q: %v", what, body, err)
				}
				return
			}
			if err := grants.CheckSCIMUser(&u); err != nil {
				t.Fatalf("%s %q: a user the store refuses: %v", what, body, err)
			}
		}
		u, err := applySCIMPatch(base, []byte(body))
		check("PATCH", u, err)
		if base.UserName != "alice" || len(base.Emails) != 1 || base.Emails[0] != (grants.SCIMEmail{Value: "a@x", Type: "work", Primary: true}) {
			t.Fatalf("%q changed the user patched: %+v", body, base)
		}
		u, err = parseSCIMUser([]byte(body), true)
		check("POST", u, err)
	})
}
