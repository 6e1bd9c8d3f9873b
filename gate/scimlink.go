package gate

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// How SCIM users link to the people who sign in, and what a SCIM user
// made inactive or deleted does to them: de-provisioned on every node,
// and their sign-ins refused.

// changed records a SCIM user written (its event) and, when it is not
// active (or deleted), de-provisions the users it links to, and those
// it linked to before the change. ok false: the answer is a failure.
func (s *scimCall) changed(ctx context.Context, out Outcome, msg string, prev, u *grants.SCIMUser) (Outcome, bool) {
	out.Events = append(out.Events, s.event(msg, u))
	if u.Active && u.Deleted == 0 {
		return out, true
	}
	if prev == nil {
		prev = u
	}
	return s.deprovision(ctx, out, prev, u)
}

// deprovision de-provisions every user that prev or u links to: their
// sessions and access tokens are revoked (this node's mirror at once,
// the other nodes through the store's events), their grants revoked and
// their pending requests rejected. Each user's events say what was
// done. ok false: something failed, and the answer says so (the
// provisioning system retries; doing it again is safe).
func (s *scimCall) deprovision(ctx context.Context, out Outcome, prev, u *grants.SCIMUser) (Outcome, bool) {
	why := "SCIM: user made inactive"
	if u.Deleted != 0 {
		why = "SCIM: user deleted"
	}
	now, store := s.req.Start, s.g.cfg.Grants.Store()
	users, err := s.g.scimLinked(ctx, prev, u)
	var failed []error
	if err != nil {
		failed = append(failed, err)
	}
	for _, lu := range users {
		s.g.cfg.Grants.NoteUserRevoked(lu, now)
		done, err := grants.Deprovision(ctx, store, lu, scimActor, now)
		if done.SessionsRevoked {
			out.Events = append(out.Events, UserEvent(EventUserLoggedOut, lu, scimActor, why))
		}
		for i := range done.Grants {
			out.Events = append(out.Events, GrantEvent(EventGrantRevoked, &done.Grants[i], scimActor, why))
		}
		for i := range done.Rejected {
			out.Events = append(out.Events, RequestEvent(EventGrantRejected, &done.Rejected[i], scimActor, why))
		}
		if err != nil {
			failed = append(failed, err)
			continue
		}
		out.Events = append(out.Events, UserEvent(EventUserDeprovisioned, lu, scimActor, why, zap.String("scim_id", u.ID),
			zap.Int("grants_revoked", len(done.Grants)), zap.Int("requests_rejected", len(done.Rejected))))
	}
	if err := errors.Join(failed...); err != nil {
		out.Events = append(out.Events, Event{Msg: EventSCIMDeprovisionFailed, Failed: true, Fields: withActor(scimActor, why,
			zap.String("scim_id", u.ID), zap.String("user_name", u.UserName), zap.Error(err))})
		return s.storeFailed(out, err), false
	}
	return out, true
}

// scimLinked are the users that SCIM users link to: with link email,
// every user the store has seen signing in with (or granted access
// under) one of their link emails; with link sub, the primary IdP's
// user whose sub is their externalId.
func (g *Gate) scimLinked(ctx context.Context, scimUsers ...*grants.SCIMUser) ([]grants.User, error) {
	var out []grants.User
	seen := map[grants.User]bool{}
	add := func(u grants.User) {
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	for _, su := range scimUsers {
		if g.cfg.SCIM.Link == SCIMLinkSub {
			if su.ExternalID != "" {
				add(grants.User{Iss: g.idps[0].Issuer, Sub: su.ExternalID})
			}
			continue
		}
		for _, email := range su.LinkEmails() {
			us, err := g.cfg.Grants.Store().Users(ctx, email)
			if err != nil {
				return out, err
			}
			for _, u := range us {
				add(u)
			}
		}
	}
	return out, nil
}

// deprovisioned reports whether a sign-in as id is refused because a
// SCIM user it links to is not active, or was deleted.
func (g *Gate) deprovisioned(ctx context.Context, id *authn.Identity) (bool, error) {
	if g.cfg.SCIM == nil {
		return false, nil
	}
	var f grants.SCIMFilter
	switch {
	case g.cfg.SCIM.Link == SCIMLinkSub && id.Issuer == g.idps[0].Issuer:
		f.ExternalID = id.Subject
	case g.cfg.SCIM.Link != SCIMLinkSub && id.Email != "":
		f.Email = id.Email
	default:
		return false, nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	us, err := g.cfg.Grants.Store().SCIMUsers(ctx, f)
	if err != nil {
		return false, err
	}
	for _, u := range us {
		if !u.Active || u.Deleted != 0 {
			return true, nil
		}
	}
	return false, nil
}
