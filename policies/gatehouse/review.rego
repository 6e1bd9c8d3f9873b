# Gatehouse access reviews (same package as the decision, so it shares the
# app rules and helpers): who may review which access. For each item of a
# review (input.review_item: whose access, to what, how, how used),
# Gatehouse asks it about the reviewers the review's `reviewers` groups
# admit: it can only restrict them. Nobody reviews their own access.
# Access to a resource the app grants just in time is reviewed by that
# resource's approvers; access to anything else (paths no resource
# covers) by any of the review's reviewers.
package gatehouse

default review := {"may_review": false}

review := {"may_review": true} if {
	not is_reviewed_user
	reviewer_of_item
}

is_reviewed_user if {
	input.user.sub == input.review_item.user.sub
	input.user.iss == input.review_item.user.iss
}

reviewed_resource := app.resources[input.review_item.resource]

reviewer_of_item if {
	some g in reviewed_resource.approver_groups
	g in user_groups
}

reviewer_of_item if not reviewed_resource
