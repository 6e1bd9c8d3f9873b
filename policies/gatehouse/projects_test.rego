package gatehouse_test

import data.gatehouse

# The shipped data for the contractor-jit example (app "projects").

projects_req(user, groups, method, path, grants) := {
	"app": "projects",
	"version": 2,
	"user": {"sub": user, "iss": "https://idp", "groups": groups},
	"request": {"method": method, "path": path, "path_lower": lower(path)},
	"grants": grants,
	"grant_resources": sort({g.resource | some g in grants}),
	"grants_error": false,
	"now": wednesday_10,
	"now_minute": wednesday_10,
}

projects_grant := [{"resource": "projects-app", "expires_at": wednesday_10 + 600, "approved_by": "alice@example.com"}]

projects_cases := [
	{
		"note": "staff work with standing access",
		"input": projects_req("alice", ["staff"], "GET", "/work/42", []),
		"want": {"allow": true, "headers": {"X-Projects-Role": "member"}, "resource": "projects-app"},
	},
	{
		"note": "a contractor is offered the app",
		"input": projects_req("bob", ["contractors"], "GET", "/work/42", []),
		"want": {"allow": false, "reason": "projects-app needs a temporary grant", "request_grant": {"resource": "projects-app", "max_duration": "8h"}},
	},
	{
		"note": "a contractor with a grant",
		"input": projects_req("bob", ["contractors"], "POST", "/work/42", projects_grant),
		"want": {"allow": true, "headers": {"X-Projects-Role": "contractor"}, "resource": "projects-app"},
	},
	{
		"note": "the grant does not open admin",
		"input": projects_req("bob", ["contractors"], "GET", "/admin", projects_grant),
		"want": {"allow": false, "reason": "your groups give no access to this page"},
	},
	{
		"note": "staff are offered admin",
		"input": projects_req("alice", ["staff"], "GET", "/admin/", []),
		"want": {"allow": false, "reason": "projects-admin needs a temporary grant", "request_grant": {"resource": "projects-admin", "max_duration": "4h"}},
	},
]

test_projects[tc.note] if {
	some tc in projects_cases
	got := gatehouse.decision with input as tc.input
	got == tc.want
}

test_projects_staff_approve_contractors if {
	inp := object.union(projects_req("alice", ["staff"], "GET", "/.gatehouse/approvals", []), {"access_request": {
		"requester": {"sub": "bob", "iss": "https://idp", "email": "bob@example.com"},
		"resource": "projects-app", "reason": "sprint", "duration": "4h",
	}})
	gatehouse.approval with input as inp == {"may_approve": true, "auto_approve": false, "max_duration": "8h"}
}

test_projects_trusted_contractors_auto_approved if {
	inp := object.union(projects_req("dan", ["contractors", "trusted-contractors"], "GET", "/", []), {"access_request": {
		"requester": {"sub": "dan", "iss": "https://idp", "email": "dan@example.com"},
		"resource": "projects-app", "reason": "hotfix", "duration": "1h",
	}})
	gatehouse.approval with input as inp == {"may_approve": false, "auto_approve": true, "max_duration": "8h"}
}
