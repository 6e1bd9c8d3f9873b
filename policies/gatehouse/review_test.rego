package gatehouse_test

import data.gatehouse

review_item(user, resource, source) := {
	"review": "quarterly",
	"user": {"sub": user, "iss": "https://idp", "email": concat("", [user, "@example.com"])},
	"resource": resource,
	"source": source,
	"approved_by": "",
	"last_used": 0,
	"count": 0,
}

review_input(reviewer, reviewer_groups, item) := object.union(
	req(reviewer_groups, "GET", "/.gatehouse/reviews", [], wednesday_10),
	{"user": {"sub": reviewer, "iss": "https://idp", "groups": reviewer_groups}, "review_item": item},
)

review_cases := [
	{
		"note": "a manager reviews a contractor's report grant",
		"input": review_input("carol", ["managers"], review_item("bob", "payroll-reports", "grant")),
		"want": {"may_review": true},
	},
	{
		"note": "never their own access, even a manager",
		"input": review_input("carol", ["managers"], review_item("carol", "payroll-reports", "standing")),
		"want": {"may_review": false},
	},
	{
		"note": "the same sub at another issuer is another user",
		"input": object.union(
			review_input("carol", ["managers"], review_item("carol", "payroll-reports", "standing")),
			{"user": {"iss": "https://other-idp"}},
		),
		"want": {"may_review": true},
	},
	{
		"note": "a grantable resource is reviewed by its approvers only",
		"input": review_input("dave", ["auditors"], review_item("bob", "payroll-admin", "grant")),
		"want": {"may_review": false},
	},
	{
		"note": "standing access to paths no resource covers: any reviewer",
		"input": review_input("dave", ["auditors"], review_item("alice", "/payslips", "standing")),
		"want": {"may_review": true},
	},
]

test_review[tc.note] if {
	some tc in review_cases
	got := gatehouse.review with input as tc.input with data.entitlements as fixture
	got == tc.want
}

test_review_shipped_projects if {
	inp := object.union(projects_req("alice", ["staff"], "GET", "/.gatehouse/reviews", []), {"review_item": review_item("bob", "projects-app", "grant")})
	gatehouse.review with input as inp == {"may_review": true}
}
