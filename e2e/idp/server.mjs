// A certified OpenID Provider (panva/oidc-provider) with test users and a
// real login form, for Gatehouse's demo and end-to-end tests.
//
// Configuration comes from the environment:
//   IDP_PORT       port to listen on, on 127.0.0.1 (0: any free port)
//   IDP_CLIENTS    JSON list of clients: [{client_id, client_secret,
//                  redirect_uris, post_logout_redirect_uris}]
//   IDP_PROFILE    "corp" (default: the company IdP, with an OTP second
//                  factor), "eid" (a national-eID-like provider: verified
//                  identity claims, acr urn:eid:loa:high) or "partner" (a
//                  partner company's IdP: @partner.example users, and one
//                  hostile user who claims a corp address)
//   IDP_ACR_HINT_ONLY=1  ignore acr_values, as oidc-provider does by
//                  default: never ask for the second factor (for testing
//                  relying parties against an IdP that ignores them)
//   IDP_EXTRA_USERS JSON object of further users and their claims
//   IDP_API_RESOURCES comma-separated resource indicators (RFC 8707) of
//                  APIs: tokens asked for one of them (resource=…) are
//                  RFC 9068 JWT access tokens with it as aud, scopes
//                  orders:read orders:write; the client credentials grant
//                  is enabled for clients that list it
//   IDP_BACKCHANNEL_CA, IDP_BACKCHANNEL_COPY  see "Back-channel logout"
//                  below (clients with a backchannel_logout_uri only)
//
// The corp login asks for the one-time code only when the authorization
// request's acr_values asks for urn:gatehouse:loa:mfa: oidc-provider treats
// acr_values as a hint, so this check is the IdP's own.
// Once listening, one JSON line is printed on stdout:
//   {"issuer":"http://127.0.0.1:PORT","users":[...]}
// Signing keys are generated at every start; nothing is stored on disk.
import http from 'node:http';
import https from 'node:https';
import crypto from 'node:crypto';
import fs from 'node:fs';
import Provider, { errors } from 'oidc-provider';

const MFA = 'urn:gatehouse:loa:mfa';
const PWD = 'urn:gatehouse:loa:pwd';
const EID_HIGH = 'urn:eid:loa:high';
const profile = process.env.IDP_PROFILE || 'corp';
const acrHintOnly = process.env.IDP_ACR_HINT_ONLY === '1';

// Test users. The password of each is "<name>-pw"; otp is the user's
// one-time code (a fixed code: this is a test IdP). bob's email is not
// verified, so Gatehouse must not trust it.
const PROFILES = {
  corp: {
    alice: { name: 'Alice Employee', email: 'alice@example.com', email_verified: true, groups: ['staff', 'payroll-users'], otp: '111111' },
    bob: { name: 'Bob Contractor', email: 'bob@contractor.example', email_verified: false, groups: ['contractors'], otp: '222222' },
    carol: { name: 'Carol Manager', email: 'carol@example.com', email_verified: true, groups: ['staff', 'managers'], otp: '333333' },
    dave: { name: 'Dave Partner, "Ltd"', email: 'dave@partner.example', email_verified: true, groups: ['partners', 'weird,group'], otp: '444444' },
    erin: { name: 'Erin Trusted', email: 'erin@contractor.example', email_verified: true, groups: ['contractors', 'trusted-contractors'], otp: '555555' },
  },
  // bob is also a corp login: the same subject at two IdPs is two people.
  partner: {
    bob: { name: 'Bob Partner', email: 'bob@partner.example', email_verified: true, groups: ['partners'] },
    pat: { name: 'Pat Partner', email: 'pat@partner.example', email_verified: true, groups: ['partners'] },
    mallory: { name: 'Mallory Partner', email: 'alice@example.com', email_verified: true, groups: ['staff'] },
  },
  eid: {
    alice: { name: 'Alice Example', given_name: 'Alice', family_name: 'Example', birthdate: '1990-04-01', email: 'alice@example.com', email_verified: true },
    mallory: { name: 'Mallory Other', given_name: 'Mallory', family_name: 'Other', birthdate: '1985-12-24', email: 'mallory@elsewhere.example', email_verified: true },
  },
};
// IDP_EXTRA_USERS (JSON: {login: {claims...}}) adds users for a test, such
// as accounts whose claims an attacker controls (a hostile email claim).
export const USERS = { ...PROFILES[profile], ...JSON.parse(process.env.IDP_EXTRA_USERS || '{}') };
const password = (login) => `${login}-pw`;

const apiResources = (process.env.IDP_API_RESOURCES || '').split(',').filter(Boolean);
const API_SCOPES = 'orders:read orders:write';

const port = Number(process.env.IDP_PORT || 0);
const clients = JSON.parse(process.env.IDP_CLIENTS || '[]').map((c) => ({
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: c.client_secret ? 'client_secret_basic' : 'none',
  ...c,
}));

const server = http.createServer();
await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub', 'acr', 'amr'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'birthdate'],
    groups: ['groups'],
    acr: null,
    amr: null,
    auth_time: null,
    sid: null,
  },
  // Put the claims of the granted scopes in the ID token, as most
  // enterprise IdPs do, rather than only at the userinfo endpoint.
  conformIdTokenClaims: false,
  acrValues: profile === 'eid' ? [EID_HIGH] : [PWD, MFA],
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
    backchannelLogout: { enabled: true },
    ...(apiResources.length ? {
      clientCredentials: { enabled: true },
      // Sender-constrained tokens (RFC 9449): a token request with a
      // DPoP proof gets a token bound to its key (cnf.jkt).
      dPoP: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo(ctx, resourceIndicator) {
          if (!apiResources.includes(resourceIndicator)) throw new errors.InvalidTarget();
          return { scope: API_SCOPES, audience: resourceIndicator, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
        },
      },
    } : {}),
  },
  // A person's access token carries who they are, as enterprise IdPs
  // can be told to: email, email_verified, groups and the sign-in's acr.
  async extraTokenClaims(ctx, token) {
    if (!token.accountId || !USERS[token.accountId]) return undefined;
    const { email, email_verified, groups } = USERS[token.accountId];
    return { email, email_verified, groups, acr: token.acr };
  },
  fetch: backchannelFetch,
  pkce: { required: () => true },
  ttl: {
    AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600,
    // A client named short-lived gets tokens that expire at once.
    ClientCredentials: (ctx, token, client) => (client.clientId === 'short-lived' ? 1 : 600),
    Session: 24 * 3600, Grant: 24 * 3600,
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    const user = USERS[sub];
    if (!user) return undefined;
    const { otp, ...claims } = user;
    return {
      accountId: sub,
      async claims() {
        return { sub, ...claims };
      },
    };
  },
  // First-party client: consent is implied for what it asks.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const grant = await ctx.oidc.provider.Grant.find(grantId);
      // A new login as another account gets a grant of its own.
      if (grant && grant.accountId === ctx.oidc.session.accountId) return grant;
    }
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
    for (const r of [].concat(ctx.oidc.params.resource || [])) {
      if (apiResources.includes(r)) grant.addResourceScope(r, API_SCOPES);
    }
    await grant.save();
    return grant;
  },
  renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<h1>Something went wrong</h1><p>${esc(out.error)}: ${esc(out.error_description || '')}</p>`);
  },
});
provider.proxy = false;

// --- Back-channel logout (OpenID Connect Back-Channel Logout 1.0) ---------
// A client registered with backchannel_logout_uri (and
// backchannel_logout_session_required, for sid in its ID and logout
// tokens) gets a logout token POSTed there when a session it signed in
// to ends (end_session with logout=yes). Clients without one are not
// affected. The relying parties in the tests are Gatehouse nodes on
// loopback, behind HTTPS from each node's own local CA:
//   IDP_BACKCHANNEL_CA    a PEM file of CA certificates trusted for these
//                         POSTs only (no other request, and never "skip
//                         verification"); read at each POST, so a test can
//                         write it once its gateways are up
//   IDP_BACKCHANNEL_COPY  a URL that also receives each logout POST's body,
//                         after the relying party answered (a test's
//                         recorder, to replay the token)
// oidc-provider refuses outgoing requests to loopback and private
// addresses (SSRF protection); only the registered back-channel logout
// URIs are exempt, every other request keeps it.
const backchannelURIs = new Set(clients.filter((c) => c.backchannel_logout_uri).map((c) => new URL(c.backchannel_logout_uri).href));

async function backchannelFetch(url, options) {
  if (!backchannelURIs.has(String(url))) return globalThis.fetch(url, options);
  const headers = {};
  for (const [k, v] of new Headers(options.headers)) if (v) headers[k] = v;
  const body = String(options.body);
  const ca = process.env.IDP_BACKCHANNEL_CA ? fs.readFileSync(process.env.IDP_BACKCHANNEL_CA) : undefined;
  const res = await postForm(new URL(url), headers, body, ca, options.signal);
  if (process.env.IDP_BACKCHANNEL_COPY) {
    await postForm(new URL(process.env.IDP_BACKCHANNEL_COPY), headers, body).catch((err) => console.error(`back-channel copy: ${err.message}`));
  }
  return new Response(res.body.length ? res.body : null, { status: res.status });
}

function postForm(url, headers, body, ca, signal) {
  return new Promise((resolve, reject) => {
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.request(url, { method: 'POST', headers: { ...headers, 'content-length': Buffer.byteLength(body) }, ca, signal }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

provider.on('backchannel.success', (ctx, client) => console.error(`back-channel logout to ${client.clientId}: done`));
provider.on('backchannel.error', (ctx, err, client) => console.error(`back-channel logout to ${client.clientId} failed: ${err.message}`));
// --- end of back-channel logout -------------------------------------------

async function logoutSource(ctx, form) {
  ctx.body = page('Sign out', `<h1>Sign out of the test IdP?</h1>${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes" autofocus>Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.body = page('Signed out', '<h1>You are signed out of the test IdP.</h1>');
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)} · Test IdP</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head><body><main>${body}</main></body></html>`;
}

// wantsMFA reports whether the authorization request asks for the second
// factor.
function wantsMFA(params) {
  return profile === 'corp' && !acrHintOnly && String(params.acr_values || '').split(' ').includes(MFA);
}

function loginPage(uid, mfa, error, hint) {
  const title = { eid: 'Sign in with your national eID (test)', partner: 'Sign in to Partner Ltd (test IdP)' }[profile] || 'Sign in to the test IdP';
  return page('Sign in', `<h1>${title}</h1>
${error ? `<p role="alert" class="error">${esc(error)}</p>` : ''}
${hint ? `<p class="hint">Signing in as ${esc(hint)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
<label for="login">User name</label> <input id="login" name="login" required autofocus>
<label for="password">Password</label> <input id="password" name="password" type="password" required>
${mfa ? '<label for="otp">One-time code</label> <input id="otp" name="otp" inputmode="numeric" required>' : ''}
<button type="submit">Sign in</button>
</form>`);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 16384) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

// The interaction routes (login form); everything else is oidc-provider.
const oidc = provider.callback();
server.on('request', async (req, res) => {
  const m = /^\/interaction\/([\w-]+)(\/login)?$/.exec(req.url.split('?')[0]);
  if (!m) return oidc(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== m[1]) return send(res, 400, page('Error', '<p>interaction mismatch</p>'));
    const mfa = wantsMFA(details.params);
    if (req.method === 'GET') return send(res, 200, loginPage(details.uid, mfa, '', details.params.login_hint));
    if (req.method !== 'POST' || !m[2]) return send(res, 405, page('Error', '<p>method not allowed</p>'));
    const form = await readForm(req);
    const login = form.get('login') || '';
    if (!Object.hasOwn(USERS, login) || form.get('password') !== password(login)) {
      return send(res, 200, loginPage(details.uid, mfa, 'Wrong user name or password.'));
    }
    if (mfa && form.get('otp') !== USERS[login].otp) {
      return send(res, 200, loginPage(details.uid, mfa, 'Wrong one-time code.'));
    }
    let login_ = { accountId: login, acr: PWD, amr: ['pwd'] };
    if (profile === 'eid') login_ = { accountId: login, acr: EID_HIGH, amr: ['pwd', 'hwk'] };
    else if (mfa) login_ = { accountId: login, acr: MFA, amr: ['pwd', 'otp'] };
    const result = { login: login_ };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
  } catch (err) {
    if (err instanceof errors.SessionNotFound) return send(res, 400, page('Error', '<p>This sign-in expired. Start again.</p>'));
    console.error(err);
    send(res, 500, page('Error', '<p>internal error</p>'));
  }
});

process.stdout.write(`${JSON.stringify({ issuer, users: Object.keys(USERS).map((u) => ({ login: u, password: password(u), ...USERS[u] })) })}\n`);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
