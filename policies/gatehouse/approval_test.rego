package gatehouse_test

import data.gatehouse

access_request(resource, duration, requester) := {
	"requester": {"sub": requester, "iss": "https://idp", "email": concat("", [requester, "@example.com"])},
	"resource": resource,
	"reason": "quarter close",
	"duration": duration,
}

approval_input(user, user_groups, ar) := object.union(
	req(user_groups, "GET", "/.gatehouse/approvals", [], wednesday_10),
	{"user": {"sub": user, "iss": "https://idp", "groups": user_groups}, "access_request": ar},
)

approval_cases := [
	{
		"note": "a manager may approve staff's admin request",
		"input": approval_input("carol", ["managers"], access_request("payroll-admin", "2h", "alice")),
		"want": {"may_approve": true, "auto_approve": false, "max_duration": "4h"},
	},
	{
		"note": "never the requester, even a manager",
		"input": approval_input("carol", ["managers"], access_request("payroll-admin", "2h", "carol")),
		"want": {"may_approve": false, "auto_approve": false, "max_duration": "4h"},
	},
	{
		"note": "the same sub at another issuer is another user",
		"input": object.union(
			approval_input("carol", ["managers"], access_request("payroll-admin", "2h", "carol")),
			{"user": {"iss": "https://other-idp"}},
		),
		"want": {"may_approve": true, "auto_approve": false, "max_duration": "4h"},
	},
	{
		"note": "staff may not approve",
		"input": approval_input("bob", ["staff"], access_request("payroll-admin", "2h", "alice")),
		"want": {"may_approve": false, "auto_approve": false, "max_duration": "4h"},
	},
	{
		"note": "trusted contractors get short report access at once",
		"input": approval_input("dan", ["contractors", "trusted-contractors"], access_request("payroll-reports", "90m", "dan")),
		"want": {"may_approve": false, "auto_approve": true, "max_duration": "8h"},
	},
	{
		"note": "but not for longer than the auto-approval cap",
		"input": approval_input("dan", ["contractors", "trusted-contractors"], access_request("payroll-reports", "3h", "dan")),
		"want": {"may_approve": false, "auto_approve": false, "max_duration": "8h"},
	},
	{
		"note": "other contractors wait for a manager",
		"input": approval_input("eve", ["contractors"], access_request("payroll-reports", "1h", "eve")),
		"want": {"may_approve": false, "auto_approve": false, "max_duration": "8h"},
	},
	{
		"note": "a resource the app does not have",
		"input": approval_input("carol", ["managers"], access_request("root", "1h", "alice")),
		"want": {"may_approve": false, "auto_approve": false, "max_duration": "0s"},
	},
]

test_approval[tc.note] if {
	some tc in approval_cases
	got := gatehouse.approval with input as tc.input with data.entitlements as fixture
	got == tc.want
}
