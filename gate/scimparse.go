package gate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/gatehouse-proxy/gatehouse/grants"
)

// Reading what a SCIM 2.0 client sends (RFC 7643, RFC 7644): a User
// resource, a PatchOp, the filter of a search. Gatehouse keeps userName,
// externalId, emails and active; any other attribute is accepted and
// dropped, in a resource and in a PATCH alike. Attribute names compare
// ignoring case, as RFC 7643 section 2.1 says; an object naming one
// attribute twice (in any case) is refused.

// The SCIM schema and message URNs.
const (
	scimUserSchema         = "urn:ietf:params:scim:schemas:core:2.0:User"
	scimPatchOp            = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	scimListResponse       = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	scimErrorSchema        = "urn:ietf:params:scim:api:messages:2.0:Error"
	scimMaxFilter          = 1024 // bytes of a filter
	scimMaxOperations      = 100  // operations in one PATCH
	scimMaxAttributeLength = 256  // bytes of an attribute path
)

// scimProblem is a SCIM error answer (RFC 7644 section 3.12): its
// status, scimType (for a 400) and detail, and the audit reason.
type scimProblem struct {
	Status   int
	SCIMType string
	Detail   string
	Reason   Reason
}

func (p *scimProblem) Error() string { return p.SCIMType + ": " + p.Detail }

// badSCIM is a 400 with a scimType.
func badSCIM(scimType, format string, args ...any) *scimProblem {
	return &scimProblem{Status: http.StatusBadRequest, SCIMType: scimType, Detail: fmt.Sprintf(format, args...), Reason: ReasonSCIMInvalid}
}

// scimFilter is a search's filter: attribute eq "value".
type scimFilter struct {
	attr  string // userName or externalId
	value string
}

// parseSCIMFilter reads the filter of GET /Users: `userName eq "…"` or
// `externalId eq "…"` (attribute names ignoring case, optionally with
// the User schema's URN before them; the value a JSON string). Anything
// else is 400 invalidFilter: Gatehouse answers the searches provisioning
// systems make before they create a user, nothing more.
func parseSCIMFilter(s string) (scimFilter, error) {
	if len(s) > scimMaxFilter {
		return scimFilter{}, badSCIM("invalidFilter", "the filter is longer than %d bytes", scimMaxFilter)
	}
	attr, rest, ok := strings.Cut(strings.TrimSpace(s), " ")
	op, value, ok2 := strings.Cut(strings.TrimLeft(rest, " "), " ")
	if !ok || !ok2 || !strings.EqualFold(op, "eq") {
		return scimFilter{}, badSCIM("invalidFilter", `the filter must be userName eq "…" or externalId eq "…"`)
	}
	attr = stripUserSchema(attr)
	var f scimFilter
	switch strings.ToLower(attr) {
	case "username":
		f.attr = "userName"
	case "externalid":
		f.attr = "externalId"
	default:
		return scimFilter{}, badSCIM("invalidFilter", `only userName and externalId can be searched (eq "…")`)
	}
	value = strings.TrimSpace(value)
	if !strings.HasPrefix(value, `"`) || json.Unmarshal([]byte(value), &f.value) != nil {
		return scimFilter{}, badSCIM("invalidFilter", `the value compared must be one JSON string, such as "alice@example.com"`)
	}
	return f, nil
}

// stripUserSchema removes the User schema's URN before an attribute
// name (urn:…:User:userName is userName).
func stripUserSchema(attr string) string {
	if len(attr) > len(scimUserSchema) && strings.EqualFold(attr[:len(scimUserSchema)], scimUserSchema) && attr[len(scimUserSchema)] == ':' {
		return attr[len(scimUserSchema)+1:]
	}
	return attr
}

// scimObject decodes a JSON object, its member names in lowercase: one
// named twice (in any case), or anything after the object, is
// invalidSyntax.
func scimObject(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, badSCIM("invalidSyntax", "a JSON object is expected")
	}
	m := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, badSCIM("invalidSyntax", "the JSON is malformed")
		}
		name, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, badSCIM("invalidSyntax", "the JSON is malformed")
		}
		k := strings.ToLower(name)
		if _, dup := m[k]; dup {
			return nil, badSCIM("invalidSyntax", "the attribute %q is given twice", truncate(name, 64))
		}
		m[k] = v
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, badSCIM("invalidSyntax", "the JSON is malformed")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, badSCIM("invalidSyntax", "there is more after the JSON object")
	}
	return m, nil
}

// hasSchema reports whether the schemas member lists urn; a schemas
// member that is not a list of strings is invalidSyntax.
func hasSchema(m map[string]json.RawMessage, urn string) (bool, error) {
	var schemas []string
	if raw, ok := m["schemas"]; !ok || json.Unmarshal(raw, &schemas) != nil {
		return false, badSCIM("invalidSyntax", "schemas must be a list naming %s", urn)
	}
	for _, s := range schemas {
		if strings.EqualFold(s, urn) {
			return true, nil
		}
	}
	return false, badSCIM("invalidSyntax", "schemas must name %s", urn)
}

// parseSCIMUser reads a User resource (the body of POST and PUT):
// userName (required), externalId, emails and active (active when left
// out: true for a new user; for a replacement, as it was, so that only
// an explicit active: true lets a deactivated user in again). id and
// meta are the service's, and ignored (RFC 7644 section 3.3); every
// other attribute (name, displayName, password, the enterprise
// extension, …) is dropped.
func parseSCIMUser(body []byte, active bool) (grants.SCIMUser, error) {
	u := grants.SCIMUser{Active: active}
	m, err := scimObject(body)
	if err != nil {
		return u, err
	}
	if _, err := hasSchema(m, scimUserSchema); err != nil {
		return u, err
	}
	if _, ok := m["username"]; !ok {
		return u, badSCIM("invalidValue", "userName is required")
	}
	for _, attr := range []string{"username", "externalid", "emails", "active"} {
		raw, ok := m[attr]
		if !ok {
			continue
		}
		if err := setSCIMAttr(&u, "replace", scimPath{attr: attr}, raw); err != nil {
			return u, err
		}
	}
	return u, checkSCIMUser(&u)
}

// checkSCIMUser applies the store's rules, as a SCIM error.
func checkSCIMUser(u *grants.SCIMUser) error {
	if err := grants.CheckSCIMUser(u); err != nil {
		return badSCIM("invalidValue", "%s", strings.TrimPrefix(err.Error(), grants.ErrInvalid.Error()+": "))
	}
	return nil
}

// scimPath is a PATCH operation's target: attr[filter].sub, the names
// in lowercase. ignored: an attribute Gatehouse does not keep (of
// another schema, or one it drops).
type scimPath struct {
	attr    string
	filter  *scimValueFilter
	sub     string
	ignored bool
}

// scimValueFilter selects values of a multi-valued attribute: attr eq
// value.
type scimValueFilter struct {
	attr  string
	value json.RawMessage
}

// keptAttrs are the attributes of the User schema Gatehouse keeps;
// readOnly are those a client may not change.
var (
	keptAttrs     = map[string]bool{"username": true, "externalid": true, "emails": true, "active": true}
	readOnlyAttrs = map[string]bool{"id": true, "meta": true, "schemas": true}
)

// parseSCIMPath reads a PATCH path (RFC 7644 section 3.5.2):
// [URN:]attr[[subAttr eq value]][.subAttr].
func parseSCIMPath(s string) (scimPath, error) {
	if s == "" || len(s) > scimMaxAttributeLength {
		return scimPath{}, badSCIM("invalidPath", "a path is 1 to %d bytes", scimMaxAttributeLength)
	}
	var p scimPath
	head, filter, hasFilter := strings.Cut(s, "[")
	sub := ""
	if hasFilter {
		var ok bool
		filter, sub, ok = strings.Cut(filter, "]")
		if !ok {
			return p, badSCIM("invalidPath", "the path %q has a [ without ]", truncate(s, 64))
		}
		if sub != "" && !strings.HasPrefix(sub, ".") {
			return p, badSCIM("invalidPath", "the path %q has something after ] other than .subAttribute", truncate(s, 64))
		}
		sub = strings.TrimPrefix(sub, ".")
	}
	// A schema URN before the name: the User schema's is the default;
	// another (the enterprise extension's) names attributes Gatehouse
	// does not keep.
	if strings.HasPrefix(strings.ToLower(head), "urn:") {
		stripped := stripUserSchema(head)
		if stripped == head {
			name, _, _ := strings.Cut(head[strings.LastIndexByte(head, ':')+1:], ".")
			if !validAttrName(name) {
				return p, badSCIM("invalidPath", "the path %q does not name an attribute", truncate(s, 64))
			}
			return scimPath{attr: strings.ToLower(name), ignored: true}, nil
		}
		head = stripped
	}
	if !hasFilter {
		head, sub, _ = strings.Cut(head, ".")
	}
	if !validAttrName(head) || (sub != "" && !validAttrName(sub)) {
		return p, badSCIM("invalidPath", "the path %q does not name an attribute", truncate(s, 64))
	}
	p.attr, p.sub = strings.ToLower(head), strings.ToLower(sub)
	if hasFilter {
		f, err := parseValueFilter(filter)
		if err != nil {
			return p, err
		}
		p.filter = &f
	}
	p.ignored = !keptAttrs[p.attr] && !readOnlyAttrs[p.attr]
	return p, nil
}

// validAttrName is RFC 7643's ATTRNAME: a letter, then letters, digits,
// "-" and "_" ("$ref" too).
func validAttrName(s string) bool {
	if s == "$ref" {
		return true
	}
	if s == "" || !isLetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isLetter(c) && !('0' <= c && c <= '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// parseValueFilter reads the filter in a path's brackets: subAttr eq
// value, the value a JSON string or boolean.
func parseValueFilter(s string) (scimValueFilter, error) {
	attr, rest, ok := strings.Cut(strings.TrimSpace(s), " ")
	op, value, ok2 := strings.Cut(strings.TrimLeft(rest, " "), " ")
	value = strings.TrimSpace(value)
	var v any
	if !ok || !ok2 || !strings.EqualFold(op, "eq") || !validAttrName(attr) || json.Unmarshal([]byte(value), &v) != nil {
		return scimValueFilter{}, badSCIM("invalidFilter", `a value filter must be subAttribute eq "value"`)
	}
	switch v.(type) {
	case string, bool:
	default:
		return scimValueFilter{}, badSCIM("invalidFilter", "a value filter compares with a string or a boolean")
	}
	return scimValueFilter{attr: strings.ToLower(attr), value: json.RawMessage(value)}, nil
}

// applySCIMPatch applies a PatchOp (the body of PATCH) to u: add,
// replace and remove (names ignoring case), each with a path, or add and
// replace with an object of attributes (Entra ID's and Okta's
// {"op":"replace","value":{"active":false}}). Operations on attributes
// Gatehouse does not keep are accepted and do nothing.
func applySCIMPatch(u grants.SCIMUser, body []byte) (grants.SCIMUser, error) {
	m, err := scimObject(body)
	if err != nil {
		return u, err
	}
	if _, err := hasSchema(m, scimPatchOp); err != nil {
		return u, err
	}
	var ops []json.RawMessage
	if json.Unmarshal(m["operations"], &ops) != nil || len(ops) == 0 {
		return u, badSCIM("invalidSyntax", "Operations must be a list of operations")
	}
	if len(ops) > scimMaxOperations {
		return u, badSCIM("invalidSyntax", "at most %d operations in one PATCH", scimMaxOperations)
	}
	u.Emails = append([]grants.SCIMEmail(nil), u.Emails...)
	for i, raw := range ops {
		if err := applySCIMOperation(&u, raw); err != nil {
			var p *scimProblem
			if errors.As(err, &p) {
				p.Detail = fmt.Sprintf("operation %d: %s", i+1, p.Detail)
			}
			return u, err
		}
	}
	return u, checkSCIMUser(&u)
}

func applySCIMOperation(u *grants.SCIMUser, raw json.RawMessage) error {
	op, err := scimObject(raw)
	if err != nil {
		return err
	}
	var name, path string
	if json.Unmarshal(op["op"], &name) != nil {
		return badSCIM("invalidSyntax", "op must be add, replace or remove")
	}
	name = strings.ToLower(name)
	if name != "add" && name != "replace" && name != "remove" {
		return badSCIM("invalidSyntax", "op must be add, replace or remove, not %q", truncate(name, 32))
	}
	if rawPath, ok := op["path"]; ok && json.Unmarshal(rawPath, &path) != nil {
		return badSCIM("invalidPath", "path must be a string")
	}
	value, hasValue := op["value"]
	if path == "" {
		if name == "remove" {
			return badSCIM("noTarget", "remove needs a path")
		}
		// An object of attributes, each name a path of its own.
		attrs, err := scimObject(value)
		if err != nil {
			return badSCIM("invalidValue", "without a path, value must be an object of attributes")
		}
		for _, k := range sortedKeys(attrs) {
			p, err := parseSCIMPath(k)
			if err != nil {
				return err
			}
			if err := setSCIMAttr(u, name, p, attrs[k]); err != nil {
				return err
			}
		}
		return nil
	}
	p, err := parseSCIMPath(path)
	if err != nil {
		return err
	}
	if name != "remove" && !hasValue {
		return badSCIM("invalidValue", "%s needs a value", name)
	}
	return setSCIMAttr(u, name, p, value)
}

// setSCIMAttr applies one operation (add, replace, remove) to the
// attribute p names.
func setSCIMAttr(u *grants.SCIMUser, op string, p scimPath, value json.RawMessage) error {
	if p.ignored {
		return nil
	}
	if readOnlyAttrs[p.attr] {
		if op == "replace" && p.attr != "schemas" && p.attr != "meta" && p.sub == "" && p.filter == nil {
			// Some clients send the id back; the same value changes
			// nothing.
			var id string
			if json.Unmarshal(value, &id) == nil && id == u.ID {
				return nil
			}
		}
		return &scimProblem{Status: http.StatusBadRequest, SCIMType: "mutability", Detail: p.attr + " is set by Gatehouse", Reason: ReasonSCIMInvalid}
	}
	if p.attr != "emails" && (p.sub != "" || p.filter != nil) {
		return badSCIM("invalidPath", "%s has no sub-attributes", p.attr)
	}
	switch p.attr {
	case "active":
		if op == "remove" {
			return badSCIM("invalidValue", "active cannot be removed: replace it with false")
		}
		b, err := scimBool(value)
		if err != nil {
			return badSCIM("invalidValue", "active must be true or false")
		}
		u.Active = b
	case "username":
		if op == "remove" {
			return badSCIM("invalidValue", "userName cannot be removed")
		}
		if json.Unmarshal(value, &u.UserName) != nil || u.UserName == "" {
			return badSCIM("invalidValue", "userName must be a non-empty string")
		}
	case "externalid":
		if op == "remove" || string(value) == "null" {
			u.ExternalID = ""
			return nil
		}
		if json.Unmarshal(value, &u.ExternalID) != nil {
			return badSCIM("invalidValue", "externalId must be a string")
		}
	case "emails":
		return setEmails(u, op, p, value)
	}
	return nil
}

// scimBool reads a boolean: true, false, or the strings "True" and
// "False" in any case (Entra ID sends those).
func scimBool(raw json.RawMessage) (bool, error) {
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return b, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch strings.ToLower(s) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	}
	return false, errors.New("not a boolean")
}

// parseEmails reads emails: a list of {value, type, primary} (one
// object alone is a list of one).
func parseEmails(raw json.RawMessage) ([]grants.SCIMEmail, error) {
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		items = []json.RawMessage{raw}
	}
	if len(items) > grants.MaxSCIMEmails {
		return nil, badSCIM("invalidValue", "at most %d emails", grants.MaxSCIMEmails)
	}
	out := make([]grants.SCIMEmail, 0, len(items))
	for _, it := range items {
		m, err := scimObject(it)
		if err != nil {
			return nil, badSCIM("invalidValue", "an email must be an object with a value")
		}
		var e grants.SCIMEmail
		if json.Unmarshal(m["value"], &e.Value) != nil || e.Value == "" {
			return nil, badSCIM("invalidValue", "an email needs a value (a string)")
		}
		if raw, ok := m["type"]; ok && json.Unmarshal(raw, &e.Type) != nil {
			return nil, badSCIM("invalidValue", "an email's type must be a string")
		}
		if raw, ok := m["primary"]; ok {
			if e.Primary, err = scimBool(raw); err != nil {
				return nil, badSCIM("invalidValue", "an email's primary must be true or false")
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// setEmails applies an operation to emails, all of them or those its
// filter selects, or to one sub-attribute of those (value, type,
// primary; others are not kept).
func setEmails(u *grants.SCIMUser, op string, p scimPath, value json.RawMessage) error {
	if p.sub != "" && p.sub != "value" && p.sub != "type" && p.sub != "primary" {
		return nil
	}
	if p.filter != nil && p.filter.attr != "value" && p.filter.attr != "type" && p.filter.attr != "primary" {
		return badSCIM("invalidFilter", "emails can be selected by value, type or primary")
	}
	selected := func(e *grants.SCIMEmail) bool { return p.filter == nil || emailMatches(e, p.filter) }
	if p.sub == "" {
		if op == "remove" {
			u.Emails = deleteEmails(u.Emails, selected)
			return nil
		}
		es, err := parseEmails(value)
		if err != nil {
			return err
		}
		switch {
		case p.filter != nil:
			if len(es) != 1 {
				return badSCIM("invalidValue", "one email replaces the emails a filter selects")
			}
			n := 0
			for i := range u.Emails {
				if selected(&u.Emails[i]) {
					u.Emails[i] = es[0]
					n++
				}
			}
			if n == 0 {
				return badSCIM("noTarget", "no email matches the filter")
			}
		case op == "replace":
			u.Emails = es
		default:
			for _, e := range es {
				if e.Primary {
					for i := range u.Emails {
						u.Emails[i].Primary = false
					}
				}
				u.Emails = deleteEmails(u.Emails, func(x *grants.SCIMEmail) bool { return strings.EqualFold(x.Value, e.Value) })
				u.Emails = append(u.Emails, e)
			}
		}
		return nil
	}
	// One sub-attribute of the selected emails.
	if op == "remove" {
		if p.sub == "value" {
			u.Emails = deleteEmails(u.Emails, selected)
			return nil
		}
		for i := range u.Emails {
			if selected(&u.Emails[i]) {
				setEmailSub(&u.Emails[i], p.sub, nil)
			}
		}
		return nil
	}
	n := 0
	for i := range u.Emails {
		if selected(&u.Emails[i]) {
			if err := setEmailSub(&u.Emails[i], p.sub, value); err != nil {
				return err
			}
			n++
		}
	}
	if n > 0 {
		return nil
	}
	// Nothing selected: emails[type eq "work"].value adds the work
	// address (Entra ID's mapping of a user's mail).
	var typ string
	if p.filter == nil || p.filter.attr != "type" || p.sub != "value" || json.Unmarshal(p.filter.value, &typ) != nil {
		return badSCIM("noTarget", "no email matches the filter")
	}
	e := grants.SCIMEmail{Type: typ}
	if err := setEmailSub(&e, "value", value); err != nil {
		return err
	}
	if len(u.Emails) >= grants.MaxSCIMEmails {
		return badSCIM("invalidValue", "at most %d emails", grants.MaxSCIMEmails)
	}
	u.Emails = append(u.Emails, e)
	return nil
}

// setEmailSub sets (value nil: clears) one sub-attribute of an email.
func setEmailSub(e *grants.SCIMEmail, sub string, value json.RawMessage) error {
	switch sub {
	case "value":
		if json.Unmarshal(value, &e.Value) != nil || e.Value == "" {
			return badSCIM("invalidValue", "an email's value must be a non-empty string")
		}
	case "type":
		e.Type = ""
		if value != nil && json.Unmarshal(value, &e.Type) != nil {
			return badSCIM("invalidValue", "an email's type must be a string")
		}
	case "primary":
		e.Primary = false
		if value != nil {
			b, err := scimBool(value)
			if err != nil {
				return badSCIM("invalidValue", "an email's primary must be true or false")
			}
			e.Primary = b
		}
	}
	return nil
}

// emailMatches applies a value filter to an email: type and value
// compare ignoring case (RFC 7643 makes neither case-exact).
func emailMatches(e *grants.SCIMEmail, f *scimValueFilter) bool {
	if f.attr == "primary" {
		b, err := scimBool(f.value)
		return err == nil && e.Primary == b
	}
	var s string
	if json.Unmarshal(f.value, &s) != nil {
		return false
	}
	if f.attr == "type" {
		return strings.EqualFold(e.Type, s)
	}
	return strings.EqualFold(e.Value, s)
}

func deleteEmails(es []grants.SCIMEmail, del func(*grants.SCIMEmail) bool) []grants.SCIMEmail {
	out := es[:0]
	for i := range es {
		if !del(&es[i]) {
			out = append(out, es[i])
		}
	}
	return out
}

// sortedKeys are an object's member names in order, so that operations
// apply the same way every time.
func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
