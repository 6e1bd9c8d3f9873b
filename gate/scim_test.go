package gate

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-proxy/gatehouse/grants"
)

const (
	scimTestToken = "scim-token-0123456789abcdef0123456789abcdef"
	scimOldToken  = "scim-token-old-0123456789abcdef0123456789ab"
)

// newSCIMGate is the payroll gate with the SCIM service, linked by link.
func newSCIMGate(t *testing.T, link string, change func(*Config)) *testGate {
	return newTestGate(t, func(c *Config) {
		c.SCIM = &SCIMConfig{Tokens: []string{scimTestToken, scimOldToken}, Link: link}
		if change != nil {
			change(c)
		}
	})
}

// scimRequest is a provisioning system's request.
func scimRequest(method, path, body string) *http.Request {
	r := httptest.NewRequest(method, "https://app.example.com"+PathSCIM+path, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+scimTestToken)
	r.Header.Set("Accept", "application/scim+json")
	if body != "" {
		r.Header.Set("Content-Type", "application/scim+json; charset=utf-8")
	}
	return r
}

// scimDoc decodes a SCIM answer, checking its content type.
func scimDoc(t *testing.T, o Outcome) map[string]any {
	t.Helper()
	if ct := o.Header.Get("Content-Type"); ct != "application/scim+json" {
		t.Errorf("Content-Type %q", ct)
	}
	var m map[string]any
	if err := json.Unmarshal(o.Body, &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, o.Body)
	}
	return m
}

// scimError checks a SCIM error answer.
func scimError(t *testing.T, what string, o Outcome, status int, scimType string, reason Reason) {
	t.Helper()
	if o.Status != status || o.Reason != reason {
		t.Errorf("%s: %d %q, want %d %q\n%s", what, o.Status, o.Reason, status, reason, o.Body)
		return
	}
	m := scimDoc(t, o)
	schemas, _ := m["schemas"].([]any)
	if len(schemas) != 1 || schemas[0] != scimErrorSchema || m["status"] != http.StatusText(status) && m["status"] != itoa(status) ||
		m["detail"] == "" || scimType != "" && m["scimType"] != scimType || scimType == "" && m["scimType"] != nil {
		t.Errorf("%s: error body %s, want scimType %q", what, o.Body, scimType)
	}
	if strings.Contains(string(o.Body), scimTestToken) {
		t.Errorf("%s: the answer repeats the token", what)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// entraCreate is Entra ID's create request (docs/scim.md's source).
const entraCreate = `{
	"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
	"externalId": "alice",
	"userName": "Alice@example.com",
	"active": true,
	"emails": [{"primary": true, "type": "work", "value": "alice@example.com"}],
	"meta": {"resourceType": "User"},
	"name": {"formatted": "Alice Employee", "familyName": "Employee", "givenName": "Alice"},
	"roles": [],
	"password": "never-kept"
}`

// TestSCIMDeprovisionsAndRefusesSignIn follows a leaver: created as
// Entra ID creates users, found as it searches, deactivated with its
// PATCH: alice's session, grant and pending request end at once, and
// she cannot sign in again until she is reactivated; deleted, the
// same; created again (a rehire), she can.
func TestSCIMDeprovisionsAndRefusesSignIn(t *testing.T) {
	tg := newSCIMGate(t, SCIMLinkEmail, nil)
	ctx := context.Background()
	out, jar := tg.signIn(t, "/payroll", nil)
	want(t, "alice signs in", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
	alice := grants.User{Iss: tg.idp.URL, Sub: "alice"}
	now := tg.clock.now()
	if _, err := tg.store.AddGrant(ctx, grants.Grant{User: alice, Email: "alice@example.com", Resource: "payroll-admin",
		CreatedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()}); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.store.CreateRequest(ctx, grants.Request{User: alice, Resource: "db", Reason: "x", Duration: 60, MaxDuration: 60}); err != nil {
		t.Fatal(err)
	}
	tg.clock.add(time.Second)
	want(t, "alice's session", tg.handle(request(http.MethodGet, "/payroll", false, jar...)), Allow, 0, ResultAllow, ReasonNone)

	// Created, with the attributes Gatehouse keeps.
	out = tg.handle(scimRequest(http.MethodPost, "/Users", entraCreate))
	want(t, "POST /Users", out, Page, http.StatusCreated, ResultInternal, ReasonSCIMCreated)
	var u scimUserJSON
	if err := json.Unmarshal(out.Body, &u); err != nil {
		t.Fatal(err)
	}
	if u.ID == "" || u.UserName != "Alice@example.com" || u.ExternalID != "alice" || !u.Active || len(u.Emails) != 1 ||
		u.Meta.ResourceType != "User" || u.Meta.Version != `W/"1"` || u.Meta.Created == "" || u.Meta.LastModified == "" ||
		u.Meta.Location != "https://app.example.com/.gatehouse/scim/v2/Users/"+u.ID || len(u.Schemas) != 1 {
		t.Errorf("created: %s", out.Body)
	}
	if out.Header.Get("Location") != u.Meta.Location || out.Header.Get("ETag") != `W/"1"` {
		t.Errorf("headers: %v", out.Header)
	}
	for _, dropped := range []string{"never-kept", "password", "givenName", "enterprise"} {
		if strings.Contains(string(out.Body), dropped) {
			t.Errorf("the answer holds %q: %s", dropped, out.Body)
		}
	}
	if len(out.Events) != 1 || out.Events[0].Msg != EventSCIMUserCreated {
		t.Errorf("events: %+v", out.Events)
	}
	want(t, "a second user with her userName", tg.handle(scimRequest(http.MethodPost, "/Users",
		strings.Replace(entraCreate, "Alice@example.com", "alice@EXAMPLE.com", 1))), BadRequest, http.StatusConflict, ResultReject, ReasonSCIMConflict)

	// Found as Entra ID and Okta look for users.
	for _, q := range []string{`filter=userName+eq+%22alice%40example.com%22`, `filter=externalId%20eq%20%22alice%22`,
		`filter=userName%20eq%20%22Alice@example.com%22&startIndex=1&count=100`, `startIndex=1&count=2`} {
		out = tg.handle(scimRequest(http.MethodGet, "/Users?"+q, ""))
		want(t, q, out, Page, http.StatusOK, ResultInternal, ReasonSCIM)
		m := scimDoc(t, out)
		if res, _ := m["Resources"].([]any); m["totalResults"] != 1.0 || m["startIndex"] != 1.0 || m["itemsPerPage"] != 1.0 || len(res) != 1 ||
			res[0].(map[string]any)["id"] != u.ID {
			t.Errorf("%s: %s", q, out.Body)
		}
	}
	for _, q := range []string{`filter=userName%20eq%20%22bob%22`, `filter=externalId%20eq%20%22ALICE%22`, `filter=userName%20eq%20%22%22`, `startIndex=2`} {
		out = tg.handle(scimRequest(http.MethodGet, "/Users?"+q, ""))
		if m := scimDoc(t, out); out.Status != http.StatusOK || m["itemsPerPage"] != 0.0 || m["Resources"] == nil {
			t.Errorf("%s: %d %s", q, out.Status, out.Body)
		}
	}
	out = tg.handle(scimRequest(http.MethodGet, "/Users/"+u.ID, ""))
	want(t, "GET /Users/{id}", out, Page, http.StatusOK, ResultInternal, ReasonSCIM)
	if out.Header.Get("ETag") != `W/"1"` {
		t.Errorf("ETag %q", out.Header.Get("ETag"))
	}

	// Entra ID's "disable user".
	tg.clock.add(time.Second)
	out = tg.handle(scimRequest(http.MethodPatch, "/Users/"+u.ID, `{"Operations":[{"op":"Replace","path":"active","value":false}],
		"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}`))
	want(t, "PATCH active false", out, Page, http.StatusOK, ResultInternal, ReasonSCIMDeactivated)
	if m := scimDoc(t, out); m["active"] != false || m["meta"].(map[string]any)["version"] != `W/"2"` {
		t.Errorf("deactivated: %s", out.Body)
	}
	var msgs []string
	for _, e := range out.Events {
		msgs = append(msgs, e.Msg)
	}
	if got := strings.Join(msgs, "|"); got != "scim user deactivated|user logged out everywhere|grant revoked|grant rejected|user de-provisioned" {
		t.Errorf("events: %s", got)
	}
	want(t, "alice's session after", tg.handle(request(http.MethodGet, "/payroll", false, jar...)), Login, http.StatusUnauthorized, ResultUnauthenticated, "revoked")
	if gs, _ := tg.store.Grants(ctx, grants.GrantFilter{User: &alice, Now: tg.clock.now()}); len(gs) != 0 {
		t.Errorf("grants after: %+v", gs)
	}
	if rs, _ := tg.store.Requests(ctx, grants.RequestFilter{User: &alice, Status: grants.Pending}); len(rs) != 0 {
		t.Errorf("pending requests after: %+v", rs)
	}
	tg.clock.add(time.Second)
	out, _ = tg.signIn(t, "/payroll", nil)
	want(t, "signing in while inactive", out, Deny, http.StatusForbidden, ResultLoginFailed, ReasonDeprovisioned)
	if out.cookie("__Host-gatehouse") != nil {
		t.Error("a refused sign-in set a session")
	}
	// Another address signs in as before.
	out, _ = tg.signIn(t, "/payroll", map[string]any{"sub": "bob", "email": "bob@example.com"})
	want(t, "bob signs in", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)

	// Okta's reactivation, with Entra ID's string boolean.
	out = tg.handle(scimRequest(http.MethodPatch, "/Users/"+u.ID, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
		"Operations":[{"op":"replace","value":{"active":"True"}}]}`))
	want(t, "PATCH active true", out, Page, http.StatusOK, ResultInternal, ReasonSCIMReactivated)
	tg.clock.add(time.Second)
	out, jar = tg.signIn(t, "/payroll", nil)
	want(t, "signing in when active again", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
	want(t, "her new session", tg.handle(request(http.MethodGet, "/payroll", false, jar...)), Allow, 0, ResultAllow, ReasonNone)

	// Deleted: de-provisioned, gone from SCIM, and still refused.
	tg.clock.add(time.Second)
	out = tg.handle(scimRequest(http.MethodDelete, "/Users/"+u.ID, ""))
	want(t, "DELETE", out, Page, http.StatusNoContent, ResultInternal, ReasonSCIMDeleted)
	if len(out.Body) != 0 || len(out.Events) < 2 || out.Events[0].Msg != EventSCIMUserDeleted {
		t.Errorf("DELETE: %s %+v", out.Body, out.Events)
	}
	want(t, "her session after DELETE", tg.handle(request(http.MethodGet, "/payroll", false, jar...)), Login, http.StatusUnauthorized, ResultUnauthenticated, "revoked")
	scimError(t, "GET a deleted user", tg.handle(scimRequest(http.MethodGet, "/Users/"+u.ID, "")), http.StatusNotFound, "", ReasonSCIMNotFound)
	scimError(t, "DELETE again", tg.handle(scimRequest(http.MethodDelete, "/Users/"+u.ID, "")), http.StatusNotFound, "", ReasonSCIMNotFound)
	if m := scimDoc(t, tg.handle(scimRequest(http.MethodGet, "/Users", ""))); m["totalResults"] != 0.0 {
		t.Errorf("listed after DELETE: %v", m)
	}
	tg.clock.add(time.Second)
	out, _ = tg.signIn(t, "/payroll", nil)
	want(t, "signing in after DELETE", out, Deny, http.StatusForbidden, ResultLoginFailed, ReasonDeprovisioned)

	// A rehire: created again, active.
	out = tg.handle(scimRequest(http.MethodPost, "/Users", entraCreate))
	want(t, "POST again", out, Page, http.StatusCreated, ResultInternal, ReasonSCIMCreated)
	tg.clock.add(time.Second)
	out, _ = tg.signIn(t, "/payroll", nil)
	want(t, "signing in after the rehire", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
}

// TestSCIMLinkSub: with link sub, the externalId names the primary IdP's
// user; the email does not.
func TestSCIMLinkSub(t *testing.T) {
	tg := newSCIMGate(t, SCIMLinkSub, nil)
	_, jar := tg.signIn(t, "/payroll", nil)
	tg.clock.add(time.Second)
	out := tg.handle(scimRequest(http.MethodPost, "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
		"userName":"alice@example.com","externalId":"someone-else","active":false}`))
	want(t, "an inactive user with another externalId", out, Page, http.StatusCreated, ResultInternal, ReasonSCIMCreated)
	want(t, "alice's session", tg.handle(request(http.MethodGet, "/payroll", false, jar...)), Allow, 0, ResultAllow, ReasonNone)
	out, jar = tg.signIn(t, "/payroll", nil)
	want(t, "alice signs in", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)

	tg.clock.add(time.Second)
	out = tg.handle(scimRequest(http.MethodPost, "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
		"userName":"a.employee","externalId":"alice","active":true}`))
	var u scimUserJSON
	_ = json.Unmarshal(out.Body, &u)
	out = tg.handle(scimRequest(http.MethodPut, "/Users/"+u.ID, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
		"id":"`+u.ID+`","userName":"a.employee","externalId":"alice","active":false}`))
	want(t, "PUT active false", out, Page, http.StatusOK, ResultInternal, ReasonSCIMDeactivated)
	want(t, "alice's session after", tg.handle(request(http.MethodGet, "/payroll", false, jar...)), Login, http.StatusUnauthorized, ResultUnauthenticated, "revoked")
	// A replacement that leaves active out keeps it as it was: only an
	// explicit true lets her in again.
	out = tg.handle(scimRequest(http.MethodPut, "/Users/"+u.ID, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
		"userName":"a.employee","externalId":"alice","displayName":"Alice"}`))
	want(t, "PUT without active", out, Page, http.StatusOK, ResultInternal, ReasonSCIMUpdated)
	if m := scimDoc(t, out); m["active"] != false {
		t.Errorf("PUT without active: %s", out.Body)
	}
	tg.clock.add(time.Second)
	out, _ = tg.signIn(t, "/payroll", nil)
	want(t, "alice signing in", out, Deny, http.StatusForbidden, ResultLoginFailed, ReasonDeprovisioned)
	out, _ = tg.signIn(t, "/payroll", map[string]any{"sub": "bob"})
	want(t, "bob, with alice's email", out, Redirect, http.StatusFound, ResultLoginOK, ReasonNone)
}

// TestSCIMAuthorization: the token, and nothing else, opens the
// service; it is never repeated.
func TestSCIMAuthorization(t *testing.T) {
	tg := newSCIMGate(t, SCIMLinkEmail, nil)
	for _, c := range []struct {
		name   string
		header []string
	}{
		{"no token", nil},
		{"another token", []string{"Bearer " + strings.Repeat("x", len(scimTestToken))}},
		{"a prefix of the token", []string{"Bearer " + scimTestToken[:len(scimTestToken)-1]}},
		{"the token and more", []string{"Bearer " + scimTestToken + "x"}},
		{"Basic", []string{"Basic " + scimTestToken}},
		{"the scheme alone", []string{"Bearer"}},
		{"two headers", []string{"Bearer " + scimTestToken, "Bearer " + scimTestToken}},
		{"the token without a scheme", []string{scimTestToken}},
	} {
		for _, path := range []string{"/Users", "/ServiceProviderConfig", "/nothing"} {
			r := scimRequest(http.MethodGet, path, "")
			r.Header.Del("Authorization")
			for _, h := range c.header {
				r.Header.Add("Authorization", h)
			}
			out := tg.handle(r)
			scimError(t, c.name+" "+path, out, http.StatusUnauthorized, "", ReasonSCIMUnauthorized)
			if out.Result != ResultDeny || out.Header.Get("WWW-Authenticate") != `Bearer realm="gatehouse-scim"` || len(out.Cookies) != 0 {
				t.Errorf("%s: %s %v %v", c.name, out.Result, out.Header, out.Cookies)
			}
		}
	}
	for _, tok := range []string{scimTestToken, scimOldToken} {
		r := scimRequest(http.MethodGet, "/Users", "")
		r.Header.Set("Authorization", "bearer  "+tok+" ")
		if out := tg.handle(r); out.Status != http.StatusOK {
			t.Errorf("token %s…: %d %s", tok[:14], out.Status, out.Body)
		}
	}
	// Plain HTTP, off loopback: the token would travel in clear.
	r := httptest.NewRequest(http.MethodGet, "http://app.example.com"+PathSCIM+"/Users", nil)
	r.Header.Set("Authorization", "Bearer "+scimTestToken)
	scimError(t, "plain HTTP", tg.handle(r), http.StatusForbidden, "", ReasonHTTPSRequired)
	// Without a scim block there is no SCIM service.
	plain := newTestGate(t, nil)
	out := plain.handle(scimRequest(http.MethodGet, "/Users", ""))
	want(t, "no scim block", out, BadRequest, http.StatusNotFound, ResultInternal, ReasonNotFound)
}

// TestSCIMHostileRequests: what a client may get wrong, and what it
// gets back. Attributes Gatehouse does not keep are accepted and
// dropped (a 201 or 200, not a 400).
func TestSCIMHostileRequests(t *testing.T) {
	tg := newSCIMGate(t, SCIMLinkEmail, nil)
	out := tg.handle(scimRequest(http.MethodPost, "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"carol","active":true}`))
	var carol scimUserJSON
	if err := json.Unmarshal(out.Body, &carol); err != nil || carol.ID == "" {
		t.Fatalf("carol: %s", out.Body)
	}
	patch := func(ops string) string {
		return `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":` + ops + `}`
	}
	user := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"dave"`
	for _, c := range []struct {
		name, method, path, contentType, body string
		status                                int
		scimType                              string
		reason                                Reason
	}{
		{"a body over 64 KiB", "POST", "/Users", "", user + `,"x":"` + strings.Repeat("a", 64<<10) + `"}`, 413, "", ReasonSCIMTooLarge},
		{"malformed JSON", "POST", "/Users", "", user + `,`, 400, "invalidSyntax", ReasonSCIMInvalid},
		{"an array", "POST", "/Users", "", `[` + user + `}]`, 400, "invalidSyntax", ReasonSCIMInvalid},
		{"JSON and more", "POST", "/Users", "", user + `}{}`, 400, "invalidSyntax", ReasonSCIMInvalid},
		{"an attribute twice", "POST", "/Users", "", user + `,"UserName":"mallory"}`, 400, "invalidSyntax", ReasonSCIMInvalid},
		{"no schemas", "POST", "/Users", "", `{"userName":"dave"}`, 400, "invalidSyntax", ReasonSCIMInvalid},
		{"the Group schema", "POST", "/Users", "", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"userName":"dave"}`, 400, "invalidSyntax", ReasonSCIMInvalid},
		{"no userName", "POST", "/Users", "", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]}`, 400, "invalidValue", ReasonSCIMInvalid},
		{"a userName that is a number", "POST", "/Users", "", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":7}`, 400, "invalidValue", ReasonSCIMInvalid},
		{"a control character", "POST", "/Users", "", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"da\u0000ve"}`, 400, "invalidValue", ReasonSCIMInvalid},
		{"active is 0", "POST", "/Users", "", user + `,"active":0}`, 400, "invalidValue", ReasonSCIMInvalid},
		{"active is maybe", "POST", "/Users", "", user + `,"active":"maybe"}`, 400, "invalidValue", ReasonSCIMInvalid},
		{"emails not objects", "POST", "/Users", "", user + `,"emails":["dave@example.com"]}`, 400, "invalidValue", ReasonSCIMInvalid},
		{"two primary emails", "POST", "/Users", "", user + `,"emails":[{"value":"a@x","primary":true},{"value":"b@x","primary":true}]}`, 400, "invalidValue", ReasonSCIMInvalid},
		{"text/plain", "POST", "/Users", "text/plain", user + `}`, 415, "", ReasonSCIMContentType},
		{"no content type", "POST", "/Users", "-", user + `}`, 415, "", ReasonSCIMContentType},
		{"a form", "PATCH", "/Users/" + carol.ID, "application/x-www-form-urlencoded", "active=false", 415, "", ReasonSCIMContentType},
		{"a taken userName", "POST", "/Users", "application/json", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"CAROL"}`, 409, "uniqueness", ReasonSCIMConflict},
		{"an unknown user", "GET", "/Users/nobody", "", "", 404, "", ReasonSCIMNotFound},
		{"PATCH of an unknown user", "PATCH", "/Users/nobody", "", patch(`[{"op":"replace","path":"active","value":false}]`), 404, "", ReasonSCIMNotFound},
		{"PUT of an unknown user", "PUT", "/Users/nobody", "", user + `}`, 404, "", ReasonSCIMNotFound},
		{"DELETE of an unknown user", "DELETE", "/Users/nobody", "", "", 404, "", ReasonSCIMNotFound},
		{"an unknown endpoint", "GET", "/Groups", "", "", 404, "", ReasonSCIMNotFound},
		{"a path below a user", "GET", "/Users/" + carol.ID + "/x", "", "", 404, "", ReasonSCIMNotFound},
		{"an unknown schema", "GET", "/Schemas/urn:x", "", "", 404, "", ReasonSCIMNotFound},
		{"POST to a user", "POST", "/Users/" + carol.ID, "", user + `}`, 405, "", ReasonMethodNotAllowed},
		{"DELETE of all users", "DELETE", "/Users", "", "", 405, "", ReasonMethodNotAllowed},
		{"PUT of the configuration", "PUT", "/ServiceProviderConfig", "", "{}", 405, "", ReasonMethodNotAllowed},
		{"a filter on another attribute", "GET", `/Users?filter=emails%20eq%20%22a%40x%22`, "", "", 400, "invalidFilter", ReasonSCIMInvalid},
		{"a filter with and", "GET", `/Users?filter=userName%20eq%20%22a%22%20and%20active%20eq%20true`, "", "", 400, "invalidFilter", ReasonSCIMInvalid},
		{"a filter with co", "GET", `/Users?filter=userName%20co%20%22a%22`, "", "", 400, "invalidFilter", ReasonSCIMInvalid},
		{"a filter value not quoted", "GET", `/Users?filter=userName%20eq%20carol`, "", "", 400, "invalidFilter", ReasonSCIMInvalid},
		{"two filters", "GET", `/Users?filter=userName%20eq%20%22a%22&filter=userName%20eq%20%22b%22`, "", "", 400, "invalidFilter", ReasonSCIMInvalid},
		{"a count that is not a number", "GET", `/Users?count=many`, "", "", 400, "invalidValue", ReasonSCIMInvalid},
		{"PATCH without PatchOp", "PATCH", "/Users/" + carol.ID, "", `{"Operations":[{"op":"replace","path":"active","value":false}]}`, 400, "invalidSyntax", ReasonSCIMInvalid},
		{"PATCH without operations", "PATCH", "/Users/" + carol.ID, "", patch(`[]`), 400, "invalidSyntax", ReasonSCIMInvalid},
		{"PATCH op move", "PATCH", "/Users/" + carol.ID, "", patch(`[{"op":"move","path":"active","value":false}]`), 400, "invalidSyntax", ReasonSCIMInvalid},
		{"PATCH remove active", "PATCH", "/Users/" + carol.ID, "", patch(`[{"op":"remove","path":"active"}]`), 400, "invalidValue", ReasonSCIMInvalid},
		{"PATCH remove without a path", "PATCH", "/Users/" + carol.ID, "", patch(`[{"op":"remove"}]`), 400, "noTarget", ReasonSCIMInvalid},
		{"PATCH a bad path", "PATCH", "/Users/" + carol.ID, "", patch(`[{"op":"replace","path":"emails[type eq \"work\"","value":"x"}]`), 400, "invalidPath", ReasonSCIMInvalid},
		{"PATCH the id", "PATCH", "/Users/" + carol.ID, "", patch(`[{"op":"replace","path":"id","value":"mine"}]`), 400, "mutability", ReasonSCIMInvalid},
		{"PATCH active to a number", "PATCH", "/Users/" + carol.ID, "", patch(`[{"op":"replace","path":"active","value":1}]`), 400, "invalidValue", ReasonSCIMInvalid},
		{"If-Match of another version", "PATCH", "/Users/" + carol.ID, "if-match", patch(`[{"op":"replace","path":"active","value":false}]`), 412, "", ReasonSCIMPrecondition},
	} {
		r := scimRequest(c.method, c.path, c.body)
		switch c.contentType {
		case "":
		case "-":
			r.Header.Del("Content-Type")
		case "if-match":
			r.Header.Set("If-Match", `W/"7"`)
		default:
			r.Header.Set("Content-Type", c.contentType)
		}
		out := tg.handle(r)
		scimError(t, c.name, out, c.status, c.scimType, c.reason)
		if c.status == http.StatusMethodNotAllowed && out.Header.Get("Allow") == "" {
			t.Errorf("%s: no Allow", c.name)
		}
	}
	// Nothing of the above changed carol.
	if u, err := tg.store.SCIMUser(context.Background(), carol.ID); err != nil || !u.Active || u.Version != 1 {
		t.Errorf("carol after: %+v %v", u, err)
	}
	// Unknown attributes are dropped, in a resource and in a PATCH.
	out = tg.handle(scimRequest(http.MethodPatch, "/Users/"+carol.ID, patch(`[{"op":"Add","path":"name.givenName","value":"Carol"},
		{"op":"replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department","value":"HR"},
		{"op":"replace","value":{"displayName":"Carol","nickName":"C","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber":"7"}}]`)))
	want(t, "PATCH of attributes not kept", out, Page, http.StatusOK, ResultInternal, ReasonSCIMUpdated)
	if strings.Contains(string(out.Body), "Carol") || strings.Contains(string(out.Body), "HR") {
		t.Errorf("kept: %s", out.Body)
	}
	r := scimRequest(http.MethodPatch, "/Users/"+carol.ID, patch(`[{"op":"replace","path":"active","value":true}]`))
	r.Header.Set("If-Match", `W/"2"`)
	want(t, "If-Match of the version", tg.handle(r), Page, http.StatusOK, ResultInternal, ReasonSCIMUpdated)
}

// TestSCIMDescribesItself: the discovery documents provisioning systems
// read.
func TestSCIMDescribesItself(t *testing.T) {
	tg := newSCIMGate(t, SCIMLinkEmail, nil)
	m := scimDoc(t, tg.handle(scimRequest(http.MethodGet, "/ServiceProviderConfig", "")))
	if m["patch"].(map[string]any)["supported"] != true || m["bulk"].(map[string]any)["supported"] != false ||
		m["filter"].(map[string]any)["maxResults"] != 100.0 || m["etag"].(map[string]any)["supported"] != true {
		t.Errorf("ServiceProviderConfig: %v", m)
	}
	for _, p := range []string{"/Schemas", "/ResourceTypes"} {
		if m := scimDoc(t, tg.handle(scimRequest(http.MethodGet, p, ""))); m["totalResults"] != 1.0 {
			t.Errorf("%s: %v", p, m)
		}
	}
	if m := scimDoc(t, tg.handle(scimRequest(http.MethodGet, "/Schemas/"+scimUserSchema, ""))); m["id"] != scimUserSchema || len(m["attributes"].([]any)) != 4 {
		t.Errorf("the User schema: %v", m)
	}
	if m := scimDoc(t, tg.handle(scimRequest(http.MethodGet, "/ResourceTypes/User", ""))); m["endpoint"] != "/Users" {
		t.Errorf("the User resource type: %v", m)
	}
}

// failingSCIM is a store whose SCIM records and revocations cannot be
// written or read.
type failingSCIM struct{ grants.Store }

func (failingSCIM) SCIMUsers(context.Context, grants.SCIMFilter) ([]grants.SCIMUser, error) {
	return nil, grants.ErrUnavailable
}

func (f failingSCIM) RevokeUser(context.Context, grants.User, time.Time) error {
	return grants.ErrUnavailable
}

// TestSCIMStoreDown: a store that cannot say whether a user is active
// refuses the sign-in; a de-provisioning that failed is a 503, and says
// so in the audit.
func TestSCIMStoreDown(t *testing.T) {
	mem := grants.NewMemory()
	tg := newSCIMGate(t, SCIMLinkEmail, func(c *Config) {
		_ = c.Grants.Close()
		c.Grants = grants.NewCache(failingSCIM{mem}, 50*time.Millisecond)
		t.Cleanup(func() { _ = c.Grants.Close() })
	})
	tg.store = mem
	out, _ := tg.signIn(t, "/payroll", nil)
	want(t, "signing in", out, Unavailable, http.StatusServiceUnavailable, ResultLoginFailed, ReasonDeprovisionUnsure)
	if err := mem.NoteEmail(context.Background(), grants.User{Iss: tg.idp.URL, Sub: "alice"}, "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	out = tg.handle(scimRequest(http.MethodPost, "/Users", strings.Replace(entraCreate, `"active": true`, `"active": false`, 1)))
	scimError(t, "creating an inactive user", out, http.StatusServiceUnavailable, "", ReasonSCIMUnavailable)
	var msgs []string
	for _, e := range out.Events {
		msgs = append(msgs, e.Msg)
	}
	if got := strings.Join(msgs, "|"); got != "scim user created|scim de-provisioning failed" || !out.Events[1].Failed {
		t.Errorf("events: %s", got)
	}
	if out.Header.Get("Retry-After") == "" || out.Result != ResultError {
		t.Errorf("503: %v %s", out.Header, out.Result)
	}
}

// TestSCIMRefusesAccessTokens: a person's access token issued before
// they were made inactive is refused, as their sessions are; and the
// SCIM service's own bearer token is never taken for an access token.
func TestSCIMRefusesAccessTokens(t *testing.T) {
	tg := bearerGate(t, func(c *Config) { c.SCIM = &SCIMConfig{Tokens: []string{scimTestToken}, Link: SCIMLinkSub} })
	tok := tg.accessToken(t, map[string]any{"sub": "alice", "client_id": "app"})
	want(t, "alice's token", tg.handle(bearerRequest(http.MethodGet, "/x", "Bearer "+tok)), Allow, 0, ResultAllow, ReasonNone)
	tg.clock.add(time.Second)
	out := tg.handle(scimRequest(http.MethodPost, "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
		"userName":"alice@example.com","externalId":"alice","active":false}`))
	want(t, "an inactive alice, with a bearer block", out, Page, http.StatusCreated, ResultInternal, ReasonSCIMCreated)
	out = tg.handle(bearerRequest(http.MethodGet, "/x", "Bearer "+tok))
	want(t, "alice's token after", out, Deny, http.StatusUnauthorized, ResultUnauthenticated, ReasonBearerRevoked)
}
