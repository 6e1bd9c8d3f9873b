package policies

import (
	"context"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Access reviews: reviewers look at who had access to what, and keep or
// revoke it. The review query (data.gatehouse.review by default) answers,
// for the current user (input.user) and one piece of access
// (input.review_item), {"may_review": <bool>}. It can only restrict: the
// reviewers a review names are asked it for each item, and nobody ever
// reviews their own access.

// ReviewItem is the access a review query is about.
type ReviewItem struct {
	// Review is the name of the review (review <name> in the Caddyfile).
	Review string `json:"review"`
	// User is whose access it is.
	User Requester `json:"user"`
	// Resource is what they had access to.
	Resource string `json:"resource"`
	// Source is how: "standing" (their groups) or "grant" (a just-in-time
	// grant, approved by ApprovedBy).
	Source     string `json:"source"`
	ApprovedBy string `json:"approved_by"`
	// LastUsed is when they last used it in the period reviewed (unix
	// seconds), 0 if never; Count how many requests used it.
	LastUsed int64 `json:"last_used"`
	Count    int64 `json:"count"`
}

// Review is the value of the review query for one item and one user.
type Review struct {
	MayReview bool
}

// Review evaluates the review query for input (which carries a
// review_item). A policy without one restricts nothing: MayReview is
// true.
func (r *Revision) Review(ctx context.Context, input ast.Value) (Review, error) {
	if r.review == nil {
		return Review{MayReview: true}, nil
	}
	v, err := r.eval(ctx, r.review, input, nil)
	if err != nil {
		return Review{}, err
	}
	return parseReview(v)
}

// parseReview reads the review query's value: {"may_review": <bool>}.
func parseReview(v any) (Review, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Review{}, shapeError("review is %s, want an object", kind(v))
	}
	var rv Review
	for k, fv := range m {
		if k != "may_review" {
			return Review{}, shapeError("review has an unknown field %q (known: may_review)", k)
		}
		b, ok := fv.(bool)
		if !ok {
			return Review{}, shapeError("review.may_review is %s, want a boolean", kind(fv))
		}
		rv.MayReview = b
	}
	return rv, nil
}

func reviewItemTerm(in *Input) *ast.Term {
	it := in.ReviewItem
	return ast.ObjectTerm(
		ast.Item(ast.StringTerm("review"), ast.StringTerm(it.Review)),
		ast.Item(ast.StringTerm("user"), ast.ObjectTerm(
			ast.Item(k_sub, ast.StringTerm(it.User.Sub)),
			ast.Item(k_iss, ast.StringTerm(it.User.Iss)),
			ast.Item(k_email, ast.StringTerm(it.User.Email)),
		)),
		ast.Item(k_resource, ast.StringTerm(it.Resource)),
		ast.Item(ast.StringTerm("source"), ast.StringTerm(it.Source)),
		ast.Item(k_approved, ast.StringTerm(it.ApprovedBy)),
		ast.Item(ast.StringTerm("last_used"), ast.IntNumberTerm(int(it.LastUsed))),
		ast.Item(ast.StringTerm("count"), ast.IntNumberTerm(int(it.Count))),
	)
}

func reviewItemKey(b []byte, in *Input) []byte {
	it := in.ReviewItem
	if it == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	for _, s := range []string{it.Review, it.User.Sub, it.User.Iss, it.User.Email, it.Resource, it.Source, it.ApprovedBy} {
		b = keyString(b, s)
	}
	return keyInt(keyInt(b, it.LastUsed), it.Count)
}
