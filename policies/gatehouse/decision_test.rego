package gatehouse_test

import data.gatehouse

# Wednesday 2026-11-25, 10:00 in Berlin.
wednesday_10 := 1795597200

# Saturday 2026-11-28, 10:00 in Berlin.
saturday_10 := 1795856400

# Wednesday 2026-11-25, 22:00 in Berlin.
wednesday_22 := 1795640400

fixture := {"apps": {"payroll": {
	"external_groups": ["contractors", "partners"],
	"access": [
		{"groups": ["payroll-users", "managers"], "paths": ["/", "/reports", "/reports/*"]},
		{"groups": ["staff"], "paths": ["/", "/payslips/*"], "methods": ["GET", "HEAD"]},
	],
	"resources": {
		"payroll-admin": {
			"paths": ["/admin", "/admin/*"], "max_duration": "4h",
			"requestable_by": ["staff", "payroll-users"], "approver_groups": ["managers"],
			"auto_approve_groups": [], "auto_approve_max": "0s",
		},
		"payroll-reports": {
			"paths": ["/", "/reports", "/reports/*"], "max_duration": "8h",
			"requestable_by": ["contractors", "partners"], "approver_groups": ["managers"],
			"auto_approve_groups": ["trusted-contractors"], "auto_approve_max": "2h",
		},
	},
	"sensitive": [
		{"paths": ["/admin", "/admin/*"], "acr": ["urn:gatehouse:loa:mfa"], "max_age": "5m"},
		{"paths": ["/admin/*"], "acr": ["urn:never"], "max_age": "1m"},
	],
	"hours": {
		"groups": ["contractors"], "days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
		"from_hour": 7, "to_hour": 20, "timezone": "Europe/Berlin",
	},
	"headers": {"X-Payroll-Role": [
		{"group": "managers", "value": "manager"},
		{"group": "payroll-users", "value": "clerk"},
	]},
}}}

req(user_groups, method, path, grants, now) := {
	"app": "payroll",
	"version": 2,
	"user": {"sub": "u1", "iss": "https://idp", "email": "u1@example.com", "groups": user_groups},
	"request": {"method": method, "path": path, "path_lower": lower(path)},
	"grants": grants,
	"grant_resources": sort({g.resource | some g in grants}),
	"grants_error": false,
	"now": now,
	"now_minute": now - (now % 60),
}

admin_grant := [{"resource": "payroll-admin", "expires_at": wednesday_10 + 3600, "approved_by": "m@example.com"}]

reports_grant := [{"resource": "payroll-reports", "expires_at": saturday_10 + 3600, "approved_by": "m@example.com"}]

admin_offer := {"resource": "payroll-admin", "max_duration": "4h"}

reports_offer := {"resource": "payroll-reports", "max_duration": "8h"}

mfa := {"acr": ["urn:gatehouse:loa:mfa"], "max_age": "5m"}

cases := [
	{
		"note": "staff read their payslips",
		"input": req(["staff"], "GET", "/payslips/2026-11", [], wednesday_10),
		"want": {"allow": true, "headers": {}, "resource": "/payslips"},
	},
	{
		"note": "staff cannot write where they may only read",
		"input": req(["staff"], "POST", "/payslips/2026-11", [], wednesday_10),
		"want": {"allow": false, "reason": "your groups give no access to this page"},
	},
	{
		"note": "payroll clerks get reports and a role header",
		"input": req(["payroll-users"], "GET", "/reports/q3", [], wednesday_10),
		"want": {"allow": true, "headers": {"X-Payroll-Role": "clerk"}, "resource": "payroll-reports"},
	},
	{
		"note": "the first matching group sets the header",
		"input": req(["payroll-users", "managers"], "GET", "/reports", [], wednesday_10),
		"want": {"allow": true, "headers": {"X-Payroll-Role": "manager"}, "resource": "payroll-reports"},
	},
	{
		"note": "no rule for a path: least privilege",
		"input": req(["staff"], "GET", "/elsewhere", [], wednesday_10),
		"want": {"allow": false, "reason": "your groups give no access to this page"},
	},
	{
		"note": "a prefix is not a path: /administrator is not /admin",
		"input": req(["staff"], "GET", "/administrator", [], wednesday_10),
		"want": {"allow": false, "reason": "your groups give no access to this page"},
	},
	{
		"note": "admin needs a grant, and the deny offers one",
		"input": req(["staff"], "GET", "/admin/users", [], wednesday_10),
		"want": {"allow": false, "reason": "payroll-admin needs a temporary grant", "request_grant": admin_offer},
	},
	{
		"note": "paths compare in lowercase",
		"input": req(["staff"], "GET", "/ADMIN", [], wednesday_10),
		"want": {"allow": false, "reason": "payroll-admin needs a temporary grant", "request_grant": admin_offer},
	},
	{
		"note": "an active grant opens admin, behind a step-up",
		"input": req(["staff"], "GET", "/admin/users", admin_grant, wednesday_10),
		"want": {"allow": true, "headers": {}, "step_up": mfa, "resource": "payroll-admin"},
	},
	{
		"note": "an expired grant is no grant (Gatehouse leaves it out of input.grants)",
		"input": req(["staff"], "GET", "/admin", [], wednesday_10 + 3600),
		"want": {"allow": false, "reason": "payroll-admin needs a temporary grant", "request_grant": admin_offer},
	},
	{
		"note": "a grant for another resource does not count",
		"input": req(["staff"], "GET", "/admin", reports_grant, wednesday_10),
		"want": {"allow": false, "reason": "payroll-admin needs a temporary grant", "request_grant": admin_offer},
	},
	{
		"note": "contractors have no standing access, and are offered a grant",
		"input": req(["contractors"], "GET", "/reports", [], wednesday_10),
		"want": {"allow": false, "reason": "payroll-reports needs a temporary grant", "request_grant": reports_offer},
	},
	{
		"note": "external wins over internal groups",
		"input": req(["contractors", "payroll-users"], "GET", "/reports", [], wednesday_10),
		"want": {"allow": false, "reason": "payroll-reports needs a temporary grant", "request_grant": reports_offer},
	},
	{
		"note": "contractors with a grant, in working hours",
		"input": req(["contractors"], "GET", "/reports/q3", reports_grant, wednesday_10),
		"want": {"allow": true, "headers": {}, "resource": "payroll-reports"},
	},
	{
		"note": "contractors with a grant, on a Saturday",
		"input": req(["contractors"], "GET", "/reports/q3", reports_grant, saturday_10),
		"want": {"allow": false, "reason": "your access to this app is limited to working hours", "request_grant": reports_offer},
	},
	{
		"note": "contractors with a grant, at night",
		"input": req(["contractors"], "GET", "/reports/q3", reports_grant, wednesday_22),
		"want": {"allow": false, "reason": "your access to this app is limited to working hours", "request_grant": reports_offer},
	},
	{
		"note": "partners are not limited by the contractors' hours",
		"input": req(["partners"], "GET", "/reports/q3", reports_grant, saturday_10),
		"want": {"allow": true, "headers": {}, "resource": "payroll-reports"},
	},
	{
		"note": "the root names the root",
		"input": req(["payroll-users"], "GET", "/", [], wednesday_10),
		"want": {"allow": true, "headers": {"X-Payroll-Role": "clerk"}, "resource": "payroll-reports"},
	},
	{
		"note": "standing access an access review revoked",
		"input": object.union(req(["staff"], "GET", "/payslips/2026-11", [], wednesday_10), {"revoked_resources": ["/payslips"]}),
		"want": {"allow": false, "reason": "your access to /payslips was removed in an access review"},
	},
	{
		"note": "another resource's revocation does not count",
		"input": object.union(req(["staff"], "GET", "/payslips/2026-11", [], wednesday_10), {"revoked_resources": ["payroll-reports"]}),
		"want": {"allow": true, "headers": {}, "resource": "/payslips"},
	},
	{
		"note": "a revoked resource is offered again as a grant",
		"input": object.union(req(["contractors"], "GET", "/reports", reports_grant, wednesday_10), {"revoked_resources": ["payroll-reports"]}),
		"want": {"allow": false, "reason": "your access to payroll-reports was removed in an access review", "request_grant": reports_offer},
	},
	{
		"note": "a user with no groups",
		"input": req([], "GET", "/", [], wednesday_10),
		"want": {"allow": false, "reason": "your groups give no access to this page"},
	},
]

test_decision[tc.note] if {
	some tc in cases
	got := gatehouse.decision with input as tc.input with data.entitlements as fixture
	got == tc.want
}

test_unknown_app_is_denied if {
	got := gatehouse.decision with input as object.union(req(["staff"], "GET", "/", [], wednesday_10), {"app": "nope"})
		with data.entitlements as fixture
	got == {"allow": false, "reason": "no access rules are defined for this app"}
}

test_no_data_is_denied if {
	got := gatehouse.decision with input as req(["staff"], "GET", "/", [], wednesday_10) with data.entitlements as {}
	got.allow == false
}

# The shipped example data gives the documented answers too.
test_shipped_data_admin_offer if {
	got := gatehouse.decision with input as req(["staff"], "GET", "/admin", [], wednesday_10)
	got.request_grant == admin_offer
}

# grantable names every app's resources, and nothing else.
test_grantable if {
	got := gatehouse.grantable with data.entitlements as fixture
	got == {"payroll-admin", "payroll-reports"}
}

test_grantable_shipped if {
	"projects-app" in gatehouse.grantable
	"legacy-app" in gatehouse.grantable
	not "nonexistent" in gatehouse.grantable
}
