package gate

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// backchannelMaxBody bounds a back-channel logout request's body: a
// logout token is at most 16 KiB, and its form encoding adds a little.
const backchannelMaxBody = 32 << 10

// backchannelLogout is /.gatehouse/backchannel-logout (OpenID Connect
// Back-Channel Logout 1.0): the primary IdP POSTs a logout token when a
// user's session there ends. It needs no session and no CSRF token (it
// is server to server: the token's signature is the proof), and never
// redirects. The token is verified in full, its jti is recorded in the
// grant store (a replay on any node is refused), and then every session
// signed in through that IdP session (sid), or, when the token names only
// the user, every session of the user at this issuer, is revoked on every
// node. 200 with no body when done; otherwise 400 with an OAuth error
// body (section 2.8).
func (g *Gate) backchannelLogout(req *Request, out Outcome) Outcome {
	r, now := req.HTTP, req.Start
	out.Result = ResultLogoutRefused
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return backchannelRefused(out, ReasonBackchannelContentType, "the request must be application/x-www-form-urlencoded")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, backchannelMaxBody+1))
	switch {
	case err != nil:
		return backchannelRefused(out, ReasonBackchannelBody, "the request body could not be read")
	case len(body) > backchannelMaxBody:
		return backchannelRefused(out, ReasonBackchannelBody, "the request body is larger than 32 KiB")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || len(form["logout_token"]) != 1 {
		return backchannelRefused(out, ReasonLogoutTokenMissing, "the request must carry exactly one logout_token")
	}
	// The token names its issuer: the sign-in IdP of that issuer verifies
	// it, with its own client id (several IdPs may each send one).
	raw := form.Get("logout_token")
	idp := g.idps[0]
	if iss, err := authn.ParseBearer(raw); err == nil {
		for _, p := range g.idps {
			if p.Issuer == iss {
				idp = p
			}
		}
	}
	v := authn.LogoutVerifier{Discovery: idp.rp.Discovery, ClientID: idp.ClientID, Now: func() time.Time { return now }}
	tok, err := v.Verify(r.Context(), raw)
	if err != nil {
		var le *authn.LogoutTokenError
		if errors.As(err, &le) {
			return backchannelRefused(out, Reason(le.Reason), le.Msg)
		}
		g.log.Warn("back-channel logout: the IdP's keys could not be read", zap.String("app", g.cfg.App), zap.Error(err))
		out.Result = ResultError
		return backchannelRefused(out, ReasonIdPUnavailable, "the issuer's keys could not be read; the logout was not done")
	}
	out.Audit.User = tok.Subject

	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), revokeTimeout)
	defer cancel()
	first, err := g.cfg.Grants.Store().FirstUse(ctx, tok.Issuer+"\x00"+tok.JTI, now, tok.AcceptedUntil())
	if err == nil && !first {
		return backchannelRefused(out, ReasonLogoutTokenReplayed, "this logout token was already used")
	}
	// A store that cannot say whether the token was used cannot take the
	// revocation either: it is still made on this node (a logout is never
	// dropped; a replay could only do it again), and the node's mirror
	// writes it back to the store when it can, as it does when only the
	// revocation fails.
	if rerr := g.revokeForLogoutToken(ctx, tok, now); err == nil {
		err = rerr
	}
	out.Events = append(out.Events, backchannelEvent(tok, err))
	if err != nil {
		g.log.Error("back-channel logout not recorded durably in the grant store: it holds on this node, which writes it back when the store can take it",
			zap.String("app", g.cfg.App), zap.String("user", tok.Subject), zap.Error(err))
		out.Result = ResultError
		return backchannelRefused(out, ReasonLogoutNotRecorded, "the logout holds on this node but could not be recorded for all of them")
	}
	out.Kind, out.Status, out.Result, out.Reason = Page, http.StatusOK, ResultLogout, ReasonBackchannelLogout
	out.setHeader("Cache-Control", "no-store")
	return out
}

// revokeForLogoutToken revokes what a logout token names: with a sid,
// every session signed in through that IdP session; else every session
// of the user at this issuer. This node's mirror has it at once.
func (g *Gate) revokeForLogoutToken(ctx context.Context, tok *authn.LogoutToken, now time.Time) error {
	if tok.SID != "" {
		// No session signed in through the IdP session before now
		// outlives this.
		is := grants.IdPSession{Iss: tok.Issuer, SID: tok.SID}
		until := now.Add(g.cfg.Lifetimes.Lifetime)
		g.cfg.Grants.NoteIdPSessionRevoked(is, until)
		return g.cfg.Grants.Store().RevokeIdPSession(ctx, is, until)
	}
	u := grants.User{Iss: tok.Issuer, Sub: tok.Subject}
	g.cfg.Grants.NoteUserRevoked(u, now)
	return g.cfg.Grants.Store().RevokeUser(ctx, u, now)
}

// backchannelRefused answers a back-channel logout request that was not
// done: 400 with an OAuth error body, as Back-Channel Logout 1.0
// section 2.8 says, whatever went wrong. desc says what, never repeating
// the request.
func backchannelRefused(out Outcome, reason Reason, desc string) Outcome {
	out.Kind, out.Status, out.Reason = BadRequest, http.StatusBadRequest, reason
	body, _ := json.Marshal(struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{"invalid_request", desc})
	out.Body = body
	out.setHeader("Content-Type", "application/json")
	out.setHeader("Cache-Control", "no-store")
	return out
}

// backchannelEvent is the audit line of a back-channel logout that was
// done (err nil) or failed: the user and issuer, and which sessions: an
// IdP session (named by its key, never by its sid) or every session of
// the user.
func backchannelEvent(tok *authn.LogoutToken, err error) Event {
	scope := zap.String("sessions", "all of the user's")
	if tok.SID != "" {
		scope = zap.String("idp_session", grants.IdPSession{Iss: tok.Issuer, SID: tok.SID}.Key())
	}
	e := Event{Msg: EventBackchannelLogout, Fields: []zap.Field{zap.String("user", tok.Subject), zap.String("iss", tok.Issuer), scope}}
	if err != nil {
		e.Msg, e.Failed = EventBackchannelLogoutFailed, true
		e.Fields = append(e.Fields, zap.Error(err))
	}
	return e
}

// idpSession is the session cookie's record of the IdP session a
// sign-in was made in, which a back-channel logout may end: a key of
// the issuer and sid, fixed in length whatever the sid (and not the sid
// itself).
func idpSession(id *authn.Identity) string {
	if id.SID == "" {
		return ""
	}
	return grants.IdPSession{Iss: id.Issuer, SID: id.SID}.Key()
}
