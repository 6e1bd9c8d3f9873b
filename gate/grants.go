package gate

import (
	"context"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// revokeTimeout bounds recording a logout in the grant store.
const revokeTimeout = 3 * time.Second

// user is the grant store's name for a session's user: issuer and
// subject.
func (g *Gate) user(s *authn.Session) grants.User {
	return grants.User{Iss: s.Issuer, Sub: s.Subject}
}

// lookupGrants is pipeline step 5: the user's grants and revocation
// state, from the node's cache, within grants_timeout. A store error is
// reported as grantsErr; the log says when the store becomes unreachable
// and when it is back, not once per request in between. A client that
// went away is not the store's fault.
func (g *Gate) lookupGrants(ctx context.Context, s *authn.Session, now time.Time) (st grants.State, grantsErr bool) {
	st, err := g.cfg.Grants.Lookup(ctx, g.user(s), s.ID, now)
	if err != nil {
		if ctx.Err() == nil && g.grantsDown.CompareAndSwap(false, true) {
			g.log.Warn("grant store unavailable: JIT access refused, revocations from the local mirror", zap.Error(err))
		}
		return st, true
	}
	if g.grantsDown.Load() && g.grantsDown.CompareAndSwap(true, false) {
		g.log.Info("grant store reachable again")
	}
	return st, false
}

// noteEmail records the verified email of a sign-in in the grant store,
// so that operators can name the user by it (`users deprovision --user
// EMAIL`). A store that cannot take it now does not stop the sign-in.
func (g *Gate) noteEmail(ctx context.Context, id *authn.Identity) {
	if id.Email == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if err := g.cfg.Grants.Store().NoteEmail(ctx, grants.User{Iss: id.Issuer, Sub: id.Subject}, id.Email); err != nil {
		g.log.Warn("grant store: the email of this sign-in is not recorded; the ops CLI cannot name the user by email until a later sign-in records it",
			zap.String("user", id.Subject), zap.Error(err))
	}
}

// revokeSession records the logout of a session in the store, so a copy
// of its cookie is dead on every node. It is in this node's mirror at
// once, which writes it back to the store if recording it fails now.
func (g *Gate) revokeSession(ctx context.Context, s *authn.Session) error {
	until := g.cfg.Lifetimes.Expires(s).Add(expiredGrace)
	u := g.user(s)
	g.cfg.Grants.NoteSessionRevoked(u, s.ID, until)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
	defer cancel()
	if err := g.cfg.Grants.Store().RevokeSession(ctx, u, s.ID, until); err != nil {
		g.log.Error("the logout is not recorded durably in the grant store: it holds on this node, which writes it back when the store can take it",
			zap.String("user", s.Subject), zap.Error(err))
		return err
	}
	return nil
}

// grantResources names the resources of grants, sorted, for the audit.
func grantResources(gs []grants.Grant) []string {
	out := make([]string, 0, len(gs))
	for _, g := range gs {
		out = append(out, g.Resource)
	}
	sort.Strings(out)
	return out
}

// The grant events' vocabulary, the same wherever they happen: on
// Gatehouse's pages, from the ops CLI, or when a grant expires in use.

// GrantEvent is an audit line about a grant: who did it (actor, "" for
// nobody), the grant, and why.
func GrantEvent(msg string, g *grants.Grant, actor, why string) Event {
	return Event{Msg: msg, Fields: withActor(actor, why,
		zap.String("grant_id", g.ID), zap.String("user", g.User.Sub), zap.String("iss", g.User.Iss), zap.String("email", g.Email),
		zap.String("resource", g.Resource), zap.String("reason", g.Reason), zap.String("approved_by", g.ApprovedBy),
		zap.Time("until", time.Unix(g.ExpiresAt, 0)))}
}

// RequestEvent is an audit line about an access request.
func RequestEvent(msg string, r *grants.Request, actor, why string) Event {
	return Event{Msg: msg, Fields: withActor(actor, why,
		zap.String("request_id", r.ID), zap.String("user", r.User.Sub), zap.String("iss", r.User.Iss), zap.String("email", r.Email),
		zap.String("resource", r.Resource), zap.String("reason", r.Reason), zap.Duration("duration", time.Duration(r.Duration)*time.Second))}
}

// UserEvent is an audit line about a user (logged out everywhere,
// de-provisioned).
func UserEvent(msg string, u grants.User, actor, why string, more ...zap.Field) Event {
	return Event{Msg: msg, Fields: withActor(actor, why, append([]zap.Field{zap.String("user", u.Sub), zap.String("iss", u.Iss)}, more...)...)}
}

func withActor(actor, why string, fields ...zap.Field) []zap.Field {
	if actor != "" {
		fields = append(fields, zap.String("actor", actor))
	}
	if why != "" {
		fields = append(fields, zap.String("why", why))
	}
	return fields
}
