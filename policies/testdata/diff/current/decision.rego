# The serving policy of policy diff's tests: staff may use the app, and
# /admin with a step-up.
package diff_current

staff if "staff" in input.user.groups

admin_path if startswith(input.request.path_lower, "/admin")

default decision := {"allow": false, "reason": "no rule grants access"}

decision := {"allow": true} if {
	staff
	not admin_path
}

decision := {"allow": true, "step_up": {"acr": ["mfa"]}} if {
	staff
	admin_path
}
