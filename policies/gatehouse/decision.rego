# METADATA
# title: Gatehouse entitlements
# description: |
#   The decision for one request to one protected app, from the app's
#   rules in data.entitlements.apps[input.app]. Least privilege: a request
#   that no rule grants is denied.
#
#   Per app (see entitlements/data.json):
#     access          standing access: groups, paths (and methods) for staff
#     external_groups contractors, partners…: never standing access, only
#                     active just-in-time grants
#     resources       what can be granted just in time: paths, max_duration,
#                     requestable_by, approver_groups, auto_approve_groups,
#                     auto_approve_max
#     sensitive       paths that need a step-up (acr, max_age)
#     hours           groups limited to weekdays and hours in a time zone
#     headers         a header per app, its value from the user's first
#                     matching group
package gatehouse

# The protected app's rules.
app := data.entitlements.apps[input.app]

user_groups contains g if some g in input.user.groups

# Rules compare the canonical path in lowercase.
path := input.request.path_lower

# Path patterns in data are the subset of Caddy's path matcher that
# prefix rules need, written in lowercase: "*" matches every path, "/x/*"
# every path under /x/ (not /x itself), any other pattern exactly that
# path. path_keys holds every pattern that matches this path, so a rule
# matches when one of its patterns is in it: one set lookup per pattern
# instead of a function call.
path_keys contains path

path_keys contains "*"

path_keys contains concat("", [substring(path, 0, i), "/*"]) if {
	some i in indexof_n(path, "/")
}

# External users (contractors, partners) only ever get in with a grant.
external if {
	some g in app.external_groups
	g in user_groups
}

method_allowed(rule) if not rule.methods

method_allowed(rule) if input.request.method in rule.methods

# Standing access: a rule of the app gives one of the user's groups this
# path (and method).
standing if {
	not external
	some rule in app.access
	some g in rule.groups
	g in user_groups
	some p in rule.paths
	p in path_keys
	method_allowed(rule)
}

# Resources that can be granted just in time and cover this path.
resources_here contains name if {
	some name, res in app.resources
	some p in res.paths
	p in path_keys
}

# Resources covering this path that the user holds a grant for.
# input.grant_resources names the resources of input.grants, the grants
# active at input.now (Gatehouse checks expires_at before evaluating).
# Reading the names rather than the grants lets users with grants for the
# same resources share cached decisions.
granted contains name if {
	some name in resources_here
	name in input.grant_resources
}

# Some groups may only work on given days and hours.
outside_hours if {
	h := app.hours
	some g in h.groups
	g in user_groups
	not within_hours(h)
}

# Hours need no finer time than the minute: reading now_minute rather
# than now lets Gatehouse reuse a decision for the rest of the minute.
within_hours(h) if {
	ns := input.now_minute * 1000000000
	time.weekday([ns, h.timezone]) in h.days
	[hour, _, _] := time.clock([ns, h.timezone])
	hour >= h.from_hour
	hour < h.to_hour
}

# The resource a request uses, named in an allowed decision for usage
# records and access reviews: a resource covering the path that the user
# holds a grant for, else one covering the path, else the path's first
# segment ("/payslips"; "/" for the root), which is also what Gatehouse
# names a request by when a decision names no resource.
resource := sort(granted)[0] if {
	count(granted) > 0
} else := sort(resources_here)[0] if {
	count(resources_here) > 0
} else := concat("", ["/", split(path, "/")[1]])

# An access review took this resource away from the user. Gatehouse
# lists it in input.revoked_resources until the revocation is lifted,
# and leaves it out while a grant for it approved after the review is
# active.
revoked if resource in input.revoked_resources

allow if {
	not outside_hours
	not revoked
	standing
}

allow if {
	not outside_hours
	not revoked
	count(granted) > 0
}

# Resources covering this path that this user may ask for.
requestable contains name if {
	some name in resources_here
	some g in app.resources[name].requestable_by
	g in user_groups
}

offer := {"resource": name, "max_duration": app.resources[name].max_duration} if {
	count(requestable) > 0
	name := sort(requestable)[0]
}

deny_reason := "no access rules are defined for this app" if {
	not app
} else := "your access to this app is limited to working hours" if {
	outside_hours
} else := sprintf("your access to %s was removed in an access review", [resource]) if {
	revoked
} else := sprintf("%s needs a temporary grant", [offer.resource]) if {
	offer
} else := "your groups give no access to this page"

# The first sensitive rule covering this path sets the step-up.
sensitive_hits contains i if {
	some i, rule in app.sensitive
	some p in rule.paths
	p in path_keys
}

step_up := {"acr": rule.acr, "max_age": rule.max_age} if {
	count(sensitive_hits) > 0
	rule := app.sensitive[min(sensitive_hits)]
}

headers[name] := value if {
	some name, choices in app.headers
	values := [c.value | some c in choices; c.group in user_groups]
	count(values) > 0
	value := values[0]
}

step_up_part := {"step_up": step_up} if step_up

else := {}

offer_part := {"request_grant": offer} if offer

else := {}

default decision := {"allow": false, "reason": "no rule grants access"}

decision := object.union({"allow": true, "headers": headers, "resource": resource}, step_up_part) if allow

decision := object.union({"allow": false, "reason": deny_reason}, offer_part) if not allow

# Every resource of every app that can be granted just in time. The ops
# CLI checks `grants add --resource` against it; it reads no input.
grantable contains name if {
	some a in data.entitlements.apps
	some name, _ in a.resources
}
