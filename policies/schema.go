package policies

import (
	"encoding/json"
)

// inputSchemaJSON describes the input document for OPA's type checker, so
// a policy that reads a field the input does not have (input.usr,
// input.request.pth) is refused at load time with its file and line.
const inputSchemaJSON = `{
  "type": "object",
  "additionalProperties": false,
  "required": ["version", "app", "user", "session", "request", "grants", "grant_resources", "grants_error", "now", "now_minute", "principal", "token", "revoked_resources"],
  "properties": {
    "app": {"type": "string"},
    "principal": {
      "type": "object",
      "additionalProperties": false,
      "required": ["kind", "via"],
      "properties": {
        "kind": {"type": "string", "enum": ["user", "service"]},
        "via": {"type": "string", "enum": ["session", "token"]}
      }
    },
    "token": {
      "type": "object",
      "additionalProperties": false,
      "required": ["client_id", "scopes"],
      "properties": {
        "client_id": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}}
      }
    },
    "version": {"type": "integer"},
    "now": {"type": "integer"},
    "now_minute": {"type": "integer"},
    "grants_error": {"type": "boolean"},
    "user": {
      "type": "object",
      "additionalProperties": false,
      "required": ["sub", "iss", "idp", "email", "name", "groups", "acr", "amr", "auth_time", "verifications"],
      "properties": {
        "sub": {"type": "string"},
        "iss": {"type": "string"},
        "idp": {"type": "string"},
        "email": {"type": "string"},
        "name": {"type": "string"},
        "groups": {"type": "array", "items": {"type": "string"}},
        "acr": {"type": "string"},
        "amr": {"type": "array", "items": {"type": "string"}},
        "auth_time": {"type": "integer"},
        "verifications": {"type": "object", "additionalProperties": {"type": "object"}}
      }
    },
    "session": {
      "type": "object",
      "additionalProperties": false,
      "required": ["age_s", "idle_s"],
      "properties": {
        "age_s": {"type": "integer"},
        "idle_s": {"type": "integer"}
      }
    },
    "request": {
      "type": "object",
      "additionalProperties": false,
      "required": ["method", "host", "path", "path_lower", "raw_path", "query", "remote_ip", "headers"],
      "properties": {
        "method": {"type": "string"},
        "host": {"type": "string"},
        "path": {"type": "string"},
        "path_lower": {"type": "string"},
        "raw_path": {"type": "string"},
        "query": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "remote_ip": {"type": "string"},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}}
      }
    },
    "grants": {
      "type": "array",
      "items": {
        "type": "object",
        "additionalProperties": false,
        "required": ["resource", "expires_at", "approved_by"],
        "properties": {
          "resource": {"type": "string"},
          "expires_at": {"type": "integer"},
          "approved_by": {"type": "string"}
        }
      }
    },
    "grant_resources": {"type": "array", "items": {"type": "string"}},
    "revoked_resources": {"type": "array", "items": {"type": "string"}},
    "review_item": {
      "type": "object",
      "additionalProperties": false,
      "required": ["review", "user", "resource", "source", "approved_by", "last_used", "count"],
      "properties": {
        "review": {"type": "string"},
        "user": {
          "type": "object",
          "additionalProperties": false,
          "required": ["sub", "iss", "email"],
          "properties": {
            "sub": {"type": "string"},
            "iss": {"type": "string"},
            "email": {"type": "string"}
          }
        },
        "resource": {"type": "string"},
        "source": {"type": "string", "enum": ["standing", "grant"]},
        "approved_by": {"type": "string"},
        "last_used": {"type": "integer"},
        "count": {"type": "integer"}
      }
    },
    "access_request": {
      "type": "object",
      "additionalProperties": false,
      "required": ["requester", "resource", "reason", "duration"],
      "properties": {
        "requester": {
          "type": "object",
          "additionalProperties": false,
          "required": ["sub", "iss", "email"],
          "properties": {
            "sub": {"type": "string"},
            "iss": {"type": "string"},
            "email": {"type": "string"}
          }
        },
        "resource": {"type": "string"},
        "reason": {"type": "string"},
        "duration": {"type": "string"}
      }
    }
  }
}`

func inputSchema() any {
	var v any
	if err := json.Unmarshal([]byte(inputSchemaJSON), &v); err != nil {
		panic(err)
	}
	return v
}

// canonicalJSON encodes data documents deterministically (sorted keys),
// for the revision digest.
func canonicalJSON(v any) ([]byte, error) {
	return json.Marshal(v)
}
