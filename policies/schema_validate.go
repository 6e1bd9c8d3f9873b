package policies

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrInput marks an input document that is not the documented input: a
// field it does not have, a value of the wrong type, or (unless partial
// inputs are allowed) a field missing.
var ErrInput = errors.New("policies: not a valid input")

// maxInputProblems bounds how many problems an error lists.
const maxInputProblems = 10

// ValidateInput checks doc (decoded with json.Decoder.UseNumber) against
// the input schema, the one policies are type-checked with: no field the
// schema does not know, and every value of its type. It returns the
// required fields doc lacks: a hand-written what-if input may leave
// fields out, knowing that rules reading them see undefined.
func ValidateInput(doc any) (missing []string, err error) {
	v := inputValidator{}
	v.check("input", doc, inputSchema().(map[string]any))
	sort.Strings(v.missing)
	if len(v.problems) > 0 {
		return v.missing, inputError(v.problems)
	}
	return v.missing, nil
}

// inputError lists the problems of an input, at most maxInputProblems.
func inputError(problems []string) error {
	if len(problems) > maxInputProblems {
		problems = append(problems[:maxInputProblems:maxInputProblems], fmt.Sprintf("… and %d more", len(problems)-maxInputProblems))
	}
	return fmt.Errorf("%w:\n  %s", ErrInput, strings.Join(problems, "\n  "))
}

type inputValidator struct {
	problems []string
	missing  []string
}

func (v *inputValidator) check(path string, val any, schema map[string]any) {
	switch want, _ := schema["type"].(string); want {
	case "object":
		obj, ok := val.(map[string]any)
		if !ok {
			v.wrongType(path, "an object", val)
			return
		}
		props, _ := schema["properties"].(map[string]any)
		for _, k := range sortedKeys(obj) {
			if s, ok := props[k].(map[string]any); ok {
				v.check(fieldPath(path, k), obj[k], s)
				continue
			}
			switch extra := schema["additionalProperties"].(type) {
			case map[string]any:
				v.check(fieldPath(path, k), obj[k], extra)
			case bool:
				if !extra {
					v.problems = append(v.problems, fmt.Sprintf("%s: unknown field (%s has %s)", fieldPath(path, k), path, strings.Join(sortedKeys(props), ", ")))
				}
			}
		}
		req, _ := schema["required"].([]any)
		for _, r := range req {
			if k, _ := r.(string); obj[k] == nil {
				if _, present := obj[k]; present {
					v.problems = append(v.problems, fieldPath(path, k)+": null")
				} else {
					v.missing = append(v.missing, fieldPath(path, k))
				}
			}
		}
	case "array":
		arr, ok := val.([]any)
		if !ok {
			v.wrongType(path, "an array", val)
			return
		}
		items, _ := schema["items"].(map[string]any)
		for i, item := range arr {
			v.check(fmt.Sprintf("%s[%d]", path, i), item, items)
		}
	case "string":
		if _, ok := val.(string); !ok {
			v.wrongType(path, "a string", val)
		}
	case "boolean":
		if _, ok := val.(bool); !ok {
			v.wrongType(path, "a boolean", val)
		}
	case "integer":
		n, ok := val.(json.Number)
		if _, err := n.Int64(); !ok || err != nil {
			v.wrongType(path, "an integer", val)
		}
	}
}

func (v *inputValidator) wrongType(path, want string, val any) {
	b, _ := json.Marshal(val)
	if len(b) > 40 {
		b = append(b[:37], "..."...)
	}
	v.problems = append(v.problems, fmt.Sprintf("%s: want %s, got %s", path, want, b))
}

// fieldPath names a field the way a policy reads it: input.user.groups, or
// input.request.headers["user-agent"] when the name is no identifier.
func fieldPath(path, k string) string {
	for _, c := range k {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return fmt.Sprintf("%s[%q]", path, k)
		}
	}
	if k == "" || k[0] >= '0' && k[0] <= '9' {
		return fmt.Sprintf("%s[%q]", path, k)
	}
	return path + "." + k
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
