package module

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testPolicy = `package gatehouse

default decision := {"allow": false, "reason": "nobody else"}

decision := {"allow": true, "headers": {"X-Role": "admin"}} if {
	"admins" in input.user.groups
	input.request.path_lower == "/"
}

decision := {"allow": true, "headers": {"X-Undeclared": "x"}} if input.request.path_lower == "/undeclared"

decision := {"allow": true, "step_up": {"acr": ["urn:mfa"], "max_age": "5m"}} if input.request.path_lower == "/stepup"

decision := {"allow": false, "reason": "ask for it", "request_grant": {"resource": "db", "max_duration": "1h"}} if input.request.path_lower == "/grant"

decision := {"allow": true, "reason": input.request.headers["user-agent"]} if input.request.path_lower == "/echo"
`

func TestPolicyRefusesBadConfig(t *testing.T) {
	for name, c := range map[string]struct {
		change func(h *Handler)
		want   string
	}{
		"invalid policy":          {func(h *Handler) {}, "gatehouse: policy"},
		"header collision":        {func(h *Handler) { h.PolicyHeaders = []string{"x_remote_user"} }, "policy_headers: x_remote_user is already"},
		"bad query":               {func(h *Handler) { h.PolicyQuery = "data..x" }, "policy_query"},
		"cookie as input":         {func(h *Handler) { h.InputHeaders = []string{"Cookie"} }, "input_headers: \"Cookie\" cannot be copied"},
		"managed header as input": {func(h *Handler) { h.InputHeaders = []string{"X-Role"} }, "input_headers: \"X-Role\" is a managed header"},
		"bad decision_log":        {func(h *Handler) { h.DecisionLog = "some" }, "decision_log"},
	} {
		h := validHandler()
		dir := t.TempDir()
		policy := testPolicy
		if name == "invalid policy" {
			policy = "package gatehouse\n\ndecision := \"yes\"\n"
		}
		_ = os.WriteFile(filepath.Join(dir, "p.rego"), []byte(policy), 0o644)
		h.Policy = dir
		h.PolicyHeaders = []string{"X-Role"}
		c.change(h)
		err := tryProvision(h)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}
