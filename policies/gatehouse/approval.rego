# Gatehouse approvals (same package as the decision, so it shares the app
# rules and helpers): who may approve which access request, and which requests are approved
# automatically, for the current user (input.user) and the request in
# input.access_request. Approvers come from the resource's
# approver_groups and are never the requester; a requester in the
# resource's auto_approve_groups asking for no longer than
# auto_approve_max is approved at once.
package gatehouse

default approval := {"may_approve": false, "auto_approve": false, "max_duration": "0s"}

approval := {
	"may_approve": may_approve,
	"auto_approve": auto_approve,
	"max_duration": requested_resource.max_duration,
} if requested_resource

requested_resource := app.resources[input.access_request.resource]

is_requester if {
	input.user.sub == input.access_request.requester.sub
	input.user.iss == input.access_request.requester.iss
}

default may_approve := false

may_approve if {
	not is_requester
	some g in requested_resource.approver_groups
	g in user_groups
}

default auto_approve := false

auto_approve if {
	is_requester
	some g in requested_resource.auto_approve_groups
	g in user_groups
	time.parse_duration_ns(input.access_request.duration) <= time.parse_duration_ns(requested_resource.auto_approve_max)
	time.parse_duration_ns(input.access_request.duration) <= time.parse_duration_ns(requested_resource.max_duration)
}
