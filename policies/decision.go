package policies

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// ErrPolicy marks every way a policy can fail to give a usable answer:
// an evaluation error, an undefined or ambiguous result, a timeout, or a
// value of the wrong shape. The pipeline denies with reason policy_error.
var ErrPolicy = errors.New("policies: policy error")

// Decision is the value of the decision query, as the README documents.
// A boolean result is read as {"allow": <bool>}.
type Decision struct {
	Allow        bool
	Reason       string
	RequestGrant *GrantOffer
	StepUp       *StepUp
	Headers      map[string]string
	// Resource names what an allowed request uses, for usage records and
	// access reviews; "" lets Gatehouse name it by the path's first
	// segment.
	Resource string
}

// GrantOffer says which resource the user may ask temporary access to,
// and for how long at most.
type GrantOffer struct {
	Resource    string
	MaxDuration time.Duration
}

// StepUp is an obligation: the request is allowed only once the session
// carries one of ACR (and all of AMR) from an authentication no older
// than MaxAge (0: any age).
type StepUp struct {
	ACR    []string
	AMR    []string
	MaxAge time.Duration
}

// Approval is the value of the approval query for one access request and
// one user.
type Approval struct {
	MayApprove  bool
	AutoApprove bool
	MaxDuration time.Duration
}

// shapeError is a decision of the wrong shape.
func shapeError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrPolicy}, args...)...)
}

// parseDecision reads a decision from the Go form of an OPA result. Every
// field is checked; an unknown one is an error, not ignored, because a
// misspelt obligation ("step-up") silently dropped would weaken access.
func parseDecision(v any) (Decision, error) {
	switch t := v.(type) {
	case bool:
		return Decision{Allow: t}, nil
	case map[string]any:
		var d Decision
		allow, ok := t["allow"]
		if !ok {
			return d, shapeError("decision has no allow field")
		}
		if d.Allow, ok = allow.(bool); !ok {
			return d, shapeError("decision.allow is %s, want a boolean", kind(allow))
		}
		for k, fv := range t {
			var err error
			switch k {
			case "allow":
			case "reason":
				d.Reason, err = asString("decision.reason", fv)
			case "request_grant":
				d.RequestGrant, err = parseGrantOffer(fv)
			case "step_up":
				d.StepUp, err = parseStepUp(fv)
			case "headers":
				d.Headers, err = parseHeaders(fv)
			case "resource":
				d.Resource, err = asString("decision.resource", fv)
			default:
				err = shapeError("decision has an unknown field %q (known: allow, reason, request_grant, step_up, headers, resource)", k)
			}
			if err != nil {
				return Decision{}, err
			}
		}
		return d, nil
	default:
		return Decision{}, shapeError("decision is %s, want a boolean or an object", kind(v))
	}
}

func parseGrantOffer(v any) (*GrantOffer, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, shapeError("decision.request_grant is %s, want an object", kind(v))
	}
	var g GrantOffer
	for k, fv := range m {
		var err error
		switch k {
		case "resource":
			g.Resource, err = asString("decision.request_grant.resource", fv)
		case "max_duration":
			g.MaxDuration, err = asDuration("decision.request_grant.max_duration", fv)
		default:
			err = shapeError("decision.request_grant has an unknown field %q (known: resource, max_duration)", k)
		}
		if err != nil {
			return nil, err
		}
	}
	if g.Resource == "" || g.MaxDuration <= 0 {
		return nil, shapeError("decision.request_grant needs a resource and a positive max_duration")
	}
	return &g, nil
}

func parseStepUp(v any) (*StepUp, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, shapeError("decision.step_up is %s, want an object", kind(v))
	}
	var s StepUp
	for k, fv := range m {
		var err error
		switch k {
		case "acr":
			s.ACR, err = asStrings("decision.step_up.acr", fv)
		case "amr":
			s.AMR, err = asStrings("decision.step_up.amr", fv)
		case "max_age":
			s.MaxAge, err = asDuration("decision.step_up.max_age", fv)
		default:
			err = shapeError("decision.step_up has an unknown field %q (known: acr, amr, max_age)", k)
		}
		if err != nil {
			return nil, err
		}
	}
	if len(s.ACR) == 0 && len(s.AMR) == 0 && s.MaxAge == 0 {
		return nil, shapeError("decision.step_up asks for nothing: give acr, amr or max_age")
	}
	return &s, nil
}

func parseHeaders(v any) (map[string]string, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, shapeError("decision.headers is %s, want an object of strings", kind(v))
	}
	out := make(map[string]string, len(m))
	for k, fv := range m {
		s, ok := fv.(string)
		if !ok {
			return nil, shapeError("decision.headers[%q] is %s, want a string", k, kind(fv))
		}
		if strings.ContainsAny(s, "\r\n\x00") {
			return nil, shapeError("decision.headers[%q] contains a control character", k)
		}
		out[k] = s
	}
	return out, nil
}

// parseApproval reads the approval query's value.
func parseApproval(v any) (Approval, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Approval{}, shapeError("approval is %s, want an object", kind(v))
	}
	var a Approval
	for k, fv := range m {
		var err error
		var isBool bool
		switch k {
		case "may_approve":
			a.MayApprove, isBool = fv.(bool)
		case "auto_approve":
			a.AutoApprove, isBool = fv.(bool)
		case "max_duration":
			isBool = true
			a.MaxDuration, err = asDuration("approval.max_duration", fv)
		default:
			err = shapeError("approval has an unknown field %q (known: may_approve, auto_approve, max_duration)", k)
		}
		if err == nil && !isBool {
			err = shapeError("approval.%s is %s, want a boolean", k, kind(fv))
		}
		if err != nil {
			return Approval{}, err
		}
	}
	return a, nil
}

func asString(field string, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", shapeError("%s is %s, want a string", field, kind(v))
	}
	return s, nil
}

func asStrings(field string, v any) ([]string, error) {
	switch t := v.(type) {
	case string:
		return []string{t}, nil
	case []any:
		out := make([]string, 0, len(t))
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return nil, shapeError("%s holds %s, want strings", field, kind(e))
			}
			out = append(out, s)
		}
		sort.Strings(out)
		return out, nil
	}
	return nil, shapeError("%s is %s, want a list of strings", field, kind(v))
}

func asDuration(field string, v any) (time.Duration, error) {
	s, ok := v.(string)
	if !ok {
		return 0, shapeError("%s is %s, want a duration such as \"4h\"", field, kind(v))
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, shapeError("%s is %q, want a duration such as \"4h\"", field, s)
	}
	return d, nil
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return "a number"
	}
}
