# The candidate of policy diff's tests: /admin is for the admins group
# only (and without a step-up), and contractors may read /reports.
package diff_candidate

staff if "staff" in input.user.groups

admins if "admins" in input.user.groups

contractor if "contractors" in input.user.groups

admin_path if startswith(input.request.path_lower, "/admin")

reports_path if startswith(input.request.path_lower, "/reports")

default decision := {"allow": false, "reason": "no rule grants access"}

decision := {"allow": true} if {
	staff
	not admin_path
}

decision := {"allow": true} if {
	admins
	admin_path
}

decision := {"allow": false, "reason": "admin needs the admins group"} if {
	staff
	not admins
	admin_path
}

decision := {"allow": true} if {
	contractor
	reports_path
}
