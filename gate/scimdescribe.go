package gate

import (
	"net/http"
	"strings"
)

// describe answers the service's description: ServiceProviderConfig,
// Schemas and ResourceTypes (RFC 7644 section 4).
func (s *scimCall) describe(out Outcome, resource string, rest []string) Outcome {
	schema := s.userSchema()
	rt := map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:ResourceType"}, "id": "User", "name": "User",
		"endpoint": "/Users", "description": "People of the provisioning system, and whether they may sign in", "schema": scimUserSchema,
		"meta": scimMeta{ResourceType: "ResourceType", Location: s.base + "/ResourceTypes/User"}}
	var doc any
	switch {
	case resource == "serviceproviderconfig":
		doc = map[string]any{
			"schemas":          []string{"urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"},
			"documentationUri": "https://github.com/gatehouse-proxy/gatehouse/blob/main/docs/scim.md",
			"patch":            map[string]bool{"supported": true},
			"bulk":             map[string]any{"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
			"filter":           map[string]any{"supported": true, "maxResults": scimMaxResults},
			"changePassword":   map[string]bool{"supported": false},
			"sort":             map[string]bool{"supported": false},
			"etag":             map[string]bool{"supported": true},
			"authenticationSchemes": []map[string]any{{"type": "oauthbearertoken", "name": "Bearer token", "primary": true,
				"description": "A static token from the site's scim block, sent as Authorization: Bearer"}},
			"meta": scimMeta{ResourceType: "ServiceProviderConfig", Location: s.base + "/ServiceProviderConfig"},
		}
	case len(rest) == 0 && resource == "schemas":
		doc = scimList{Schemas: []string{scimListResponse}, TotalResults: 1, StartIndex: 1, ItemsPerPage: 1, Resources: []any{schema}}
	case len(rest) == 0:
		doc = scimList{Schemas: []string{scimListResponse}, TotalResults: 1, StartIndex: 1, ItemsPerPage: 1, Resources: []any{rt}}
	case resource == "schemas" && strings.EqualFold(rest[0], scimUserSchema):
		doc = schema
	case resource == "resourcetypes" && strings.EqualFold(rest[0], "User"):
		doc = rt
	default:
		return scimRefused(out, &scimProblem{Status: http.StatusNotFound, Detail: "there is no such " + strings.TrimSuffix(resource, "s"), Reason: ReasonSCIMNotFound})
	}
	return scimAnswer(out, http.StatusOK, ReasonSCIM, doc)
}

// userSchema describes the User attributes Gatehouse keeps.
func (s *scimCall) userSchema() map[string]any {
	attr := func(name, typ string, required, caseExact bool, uniqueness, desc string) map[string]any {
		return map[string]any{"name": name, "type": typ, "multiValued": false, "description": desc, "required": required,
			"caseExact": caseExact, "mutability": "readWrite", "returned": "default", "uniqueness": uniqueness}
	}
	emails := attr("emails", "complex", false, false, "none", "Email addresses; the primary one (or the only one) links sign-ins with link email")
	emails["multiValued"] = true
	emails["subAttributes"] = []map[string]any{
		attr("value", "string", true, false, "none", "The address"),
		attr("type", "string", false, false, "none", "work, home or other"),
		attr("primary", "boolean", false, false, "none", "The primary address"),
	}
	return map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Schema"},
		"id":      scimUserSchema, "name": "User", "description": "The attributes Gatehouse keeps; others are accepted and dropped",
		"attributes": []map[string]any{
			attr("userName", "string", true, false, "server", "Unique, ignoring case; links sign-ins with link email"),
			attr("externalId", "string", false, true, "none", "The provisioning system's id; links sign-ins with link sub"),
			emails,
			attr("active", "boolean", false, false, "none", "false refuses sign-ins and de-provisions the user's sessions, tokens and grants"),
		},
		"meta": scimMeta{ResourceType: "Schema", Location: s.base + "/Schemas/" + scimUserSchema},
	}
}
