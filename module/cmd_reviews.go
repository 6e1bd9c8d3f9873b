package module

import (
	"github.com/spf13/cobra"

	"github.com/gatehouse-proxy/gatehouse/gate"
)

// reviewsCommand is `gatehouse reviews start|list|lift` (docs/reviews.md).
func reviewsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "reviews", Short: "Access reviews: open a campaign now, export campaigns, give back revoked access"}
	var start, list, lift storeFlags
	start.op.ReviewOp, list.op.ReviewOp = &gate.ReviewOp{}, &gate.ReviewOp{}

	startCmd := &cobra.Command{Use: "start", Short: "Open a campaign of a review now, for the period up to now", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			start.op.Op = "start-review"
			return start.exec(c.OutOrStdout())
		}}
	start.bind(startCmd, false)
	startCmd.Flags().StringVar(&start.op.App, "app", "", "the app (as its gatehouse block's app)")
	startCmd.Flags().StringVar(&start.op.ReviewOp.Review, "review", "", "the review's name")
	startCmd.Flags().StringVar(&start.op.ReviewOp.Every, "every", "", "the period reviewed, up to now, such as 90d (default: the review's latest campaign's)")
	startCmd.Flags().StringVar(&start.op.ReviewOp.Duration, "duration", "", "how long the campaign stays open, such as 14d (default: the latest campaign's)")
	startCmd.Flags().StringSliceVar(&start.op.ReviewOp.Reviewers, "reviewers", nil, "the reviewers' groups, comma-separated (default: the latest campaign's)")
	startCmd.Flags().StringVar(&start.op.ReviewOp.Scope, "scope", "", "standing, grants or all (default: the latest campaign's)")
	startCmd.Flags().StringVar(&start.op.ReviewOp.OnTimeout, "on-timeout", "", "keep, revoke or flag (default: the latest campaign's)")

	listCmd := &cobra.Command{Use: "list", Short: "Export an app's campaigns: every item, its usage and its decision", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			list.op.Op = "list-reviews"
			return list.exec(c.OutOrStdout())
		}}
	list.bind(listCmd, false)
	listCmd.Flags().StringVar(&list.op.App, "app", "", "the app")
	listCmd.Flags().StringVar(&list.op.ReviewOp.Review, "review", "", "only this review's campaigns")

	liftCmd := &cobra.Command{Use: "lift", Short: "Give back standing access an access review revoked", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			lift.op.Op = "lift-revocation"
			return lift.exec(c.OutOrStdout())
		}}
	lift.bind(liftCmd, true)
	liftCmd.Flags().StringVar(&lift.op.App, "app", "", "the app")
	liftCmd.Flags().StringVar(&lift.op.Resource, "resource", "", "the resource, as the review named it")
	liftCmd.Flags().StringVar(&lift.op.Reason, "reason", "", "why (audited)")

	cmd.AddCommand(startCmd, listCmd, liftCmd)
	return cmd
}
