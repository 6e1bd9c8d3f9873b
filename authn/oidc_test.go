package authn

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// fakeIdP is an in-process OpenID Provider whose token endpoint returns
// whatever ID token a test case crafts. The real, certified provider is
// exercised end to end in e2e/; this one lets every hostile token be made.
type fakeIdP struct {
	*httptest.Server
	key, otherKey *rsa.PrivateKey
	mu            sync.Mutex
	token         func() (status int, body map[string]any)
	jwksHits      atomic.Int64
}

func newFakeIdP(t *testing.T) *fakeIdP {
	t.Helper()
	f := &fakeIdP{}
	f.key, _ = rsa.GenerateKey(rand.Reader, 2048)
	f.otherKey, _ = rsa.GenerateKey(rand.Reader, 2048)
	mux := http.NewServeMux()
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": f.URL, "authorization_endpoint": f.URL + "/auth", "token_endpoint": f.URL + "/token",
			"jwks_uri": f.URL + "/jwks", "end_session_endpoint": f.URL + "/logout",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		f.jwksHits.Add(1)
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &f.key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		status, body := f.token()
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	})
	return f
}

func (f *fakeIdP) sign(t *testing.T, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestRelyingPartyFinish(t *testing.T) {
	f := newFakeIdP(t)
	rp := &RelyingParty{
		Discovery:   NewDiscovery(f.URL, f.Client()),
		HTTPClient:  f.Client(),
		ClientID:    "gatehouse",
		Scopes:      []string{"openid"},
		GroupsClaim: "realm_access.roles",
		ExtraClaims: []string{"department", "https://example.com/tier"},
	}
	ctx := context.Background()
	pubDER, _ := x509.MarshalPKIXPublicKey(&f.key.PublicKey)

	type tc struct {
		name   string
		opt    AuthOptions
		change func(st *LoginState, c map[string]any) // edit the claims
		token  func(st *LoginState, c map[string]any) (int, map[string]any)
		reason string // "" = success, "unavailable" = ErrProviderUnavailable
		check  func(t *testing.T, id *Identity)
		idp    *TokenError // what a refused code's LoginError reports
	}
	signed := func(key *rsa.PrivateKey) func(st *LoginState, c map[string]any) (int, map[string]any) {
		return func(st *LoginState, c map[string]any) (int, map[string]any) {
			return 200, map[string]any{"access_token": "at", "token_type": "Bearer", "id_token": f.sign(t, key, c)}
		}
	}
	cases := []tc{
		{name: "valid", check: func(t *testing.T, id *Identity) {
			if id.Subject != "alice" || id.Issuer != f.URL || id.Email != "alice@example.com" || id.Name != "Alice" ||
				strings.Join(id.Groups, ",") != "staff,admins" || id.ACR != "urn:loa:pwd" || strings.Join(id.AMR, ",") != "pwd,otp" ||
				id.Extra["department"] != "HR" || id.Extra["https://example.com/tier"] != "2" || id.AuthTime == 0 || id.RawIDToken == "" {
				t.Errorf("identity %+v", id)
			}
		}},
		{name: "unverified email dropped", change: func(_ *LoginState, c map[string]any) { c["email_verified"] = false },
			check: func(t *testing.T, id *Identity) {
				if id.Email != "" {
					t.Errorf("unverified email kept: %q", id.Email)
				}
			}},
		{name: "email_verified as a string", change: func(_ *LoginState, c map[string]any) { c["email_verified"] = "true" },
			check: func(t *testing.T, id *Identity) {
				if id.Email == "" {
					t.Error("email_verified \"true\" not accepted")
				}
			}},
		{name: "two audiences with azp", change: func(_ *LoginState, c map[string]any) { c["aud"] = []string{"gatehouse", "api"}; c["azp"] = "gatehouse" }},
		{name: "wrong nonce", change: func(_ *LoginState, c map[string]any) { c["nonce"] = "other" }, reason: "nonce_mismatch"},
		{name: "no nonce", change: func(_ *LoginState, c map[string]any) { delete(c, "nonce") }, reason: "nonce_mismatch"},
		{name: "token for another client", change: func(_ *LoginState, c map[string]any) { c["aud"] = "other-client" }, reason: "id_token_invalid"},
		{name: "two audiences without azp", change: func(_ *LoginState, c map[string]any) { c["aud"] = []string{"gatehouse", "api"} }, reason: "azp_mismatch"},
		{name: "azp of another client", change: func(_ *LoginState, c map[string]any) { c["azp"] = "other-client" }, reason: "azp_mismatch"},
		{name: "another issuer", change: func(_ *LoginState, c map[string]any) { c["iss"] = "https://evil.example" }, reason: "id_token_invalid"},
		{name: "expired", change: func(_ *LoginState, c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }, reason: "id_token_invalid"},
		{name: "issued in the future", change: func(_ *LoginState, c map[string]any) { c["iat"] = time.Now().Add(10 * time.Minute).Unix() }, reason: "iat_invalid"},
		{name: "issued before the login", change: func(st *LoginState, c map[string]any) { c["iat"] = st.Started - 600 }, reason: "iat_invalid"},
		{name: "no iat", change: func(_ *LoginState, c map[string]any) { delete(c, "iat") }, reason: "iat_invalid"},
		{name: "no subject", change: func(_ *LoginState, c map[string]any) { delete(c, "sub") }, reason: "no_subject"},
		{name: "signed by an unknown key", token: signed(f.otherKey), reason: "id_token_invalid"},
		{name: "alg none", token: func(st *LoginState, c map[string]any) (int, map[string]any) {
			return 200, map[string]any{"access_token": "at", "token_type": "Bearer", "id_token": b64(map[string]string{"alg": "none", "kid": "k1"}) + "." + b64(c) + "."}
		}, reason: "id_token_invalid"},
		{name: "HS256 keyed with the public key", token: func(st *LoginState, c map[string]any) (int, map[string]any) {
			signing := b64(map[string]string{"alg": "HS256", "kid": "k1", "typ": "JWT"}) + "." + b64(c)
			m := hmac.New(sha256.New, pubDER)
			m.Write([]byte(signing))
			return 200, map[string]any{"access_token": "at", "token_type": "Bearer", "id_token": signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))}
		}, reason: "id_token_invalid"},
		{name: "no ID token", token: func(*LoginState, map[string]any) (int, map[string]any) {
			return 200, map[string]any{"access_token": "at", "token_type": "Bearer"}
		}, reason: "no_id_token"},
		{name: "code refused", token: func(*LoginState, map[string]any) (int, map[string]any) {
			return 400, map[string]any{"error": "invalid_grant"}
		}, reason: "code_rejected", idp: &TokenError{Status: 400, Code: "invalid_grant"}},
		{name: "client secret refused", token: func(*LoginState, map[string]any) (int, map[string]any) {
			return 401, map[string]any{"error": "invalid_client", "error_description": "client authentication failed"}
		}, reason: "code_rejected", idp: &TokenError{Status: 401, Code: "invalid_client", Description: "client authentication failed"}},
		{name: "hostile refusal", token: func(*LoginState, map[string]any) (int, map[string]any) {
			return 400, map[string]any{"error": "<script>\n", "error_description": "forged\n{\"level\":\"info\"}\u202e"}
		}, reason: "code_rejected", idp: &TokenError{Status: 400}},
		{name: "long refusal", token: func(*LoginState, map[string]any) (int, map[string]any) {
			return 400, map[string]any{"error": "invalid_request", "error_description": strings.Repeat("é", 150)}
		}, reason: "code_rejected", idp: &TokenError{Status: 400, Code: "invalid_request", Description: strings.Repeat("é", 100)}},
		{name: "IdP failing", token: func(*LoginState, map[string]any) (int, map[string]any) {
			return 503, map[string]any{"error": "temporarily_unavailable"}
		}, reason: "unavailable"},
		{name: "login too slow", change: func(st *LoginState, _ map[string]any) { st.Started -= 11 * 60 }, reason: "state_expired"},
		{name: "with a login_hint", opt: AuthOptions{LoginHint: "alice@example.com"}},
		{name: "prompt=login ignored by the IdP", opt: AuthOptions{ForceLogin: true},
			change: func(st *LoginState, c map[string]any) { c["auth_time"] = st.Started - 3600 }, reason: "not_reauthenticated"},
		{name: "prompt=login without auth_time", opt: AuthOptions{ForceLogin: true},
			change: func(_ *LoginState, c map[string]any) { delete(c, "auth_time") }, reason: "auth_time_missing"},
		// OIDC Core 3.1.2.1: max_age sent, so auth_time is required.
		{name: "max_age without auth_time", opt: AuthOptions{MaxAge: time.Hour},
			change: func(_ *LoginState, c map[string]any) { delete(c, "auth_time") }, reason: "auth_time_missing"},
		{name: "no max_age, no auth_time", change: func(_ *LoginState, c map[string]any) { delete(c, "auth_time") },
			check: func(t *testing.T, id *Identity) {
				if id.AuthTime != 0 {
					t.Errorf("auth_time %d", id.AuthTime)
				}
			}},
		{name: "auth_time in the future", opt: AuthOptions{MaxAge: time.Hour},
			change: func(_ *LoginState, c map[string]any) { c["auth_time"] = time.Now().Add(10 * time.Second).Unix() }, reason: "auth_time_future"},
		{name: "auth_time an hour ahead, no max_age", change: func(_ *LoginState, c map[string]any) { c["auth_time"] = time.Now().Add(time.Hour).Unix() }, reason: "auth_time_future"},
		{name: "auth_time within the skew", opt: AuthOptions{MaxAge: time.Hour},
			change: func(_ *LoginState, c map[string]any) { c["auth_time"] = time.Now().Add(3 * time.Second).Unix() }},
		{name: "auth_time as a string", opt: AuthOptions{MaxAge: time.Hour},
			change: func(_ *LoginState, c map[string]any) { c["auth_time"] = "1764000000" }, reason: "auth_time_invalid"},
		{name: "auth_time negative", change: func(_ *LoginState, c map[string]any) { c["auth_time"] = -5 }, reason: "auth_time_invalid"},
		{name: "iat 10 s ahead", change: func(_ *LoginState, c map[string]any) { c["iat"] = time.Now().Add(10 * time.Second).Unix() }, reason: "iat_invalid"},
		{name: "iat within the skew", change: func(_ *LoginState, c map[string]any) { c["iat"] = time.Now().Add(3 * time.Second).Unix() }},
		{name: "subject with a NUL", change: func(_ *LoginState, c map[string]any) { c["sub"] = "alice\x00admin" }, reason: "subject_invalid"},
		{name: "subject too long", change: func(_ *LoginState, c map[string]any) { c["sub"] = strings.Repeat("a", 256) }, reason: "subject_invalid"},
		{name: "claims with control characters are left out", change: func(_ *LoginState, c map[string]any) {
			c["name"] = "Alice\u202eevil"
			c["realm_access"] = map[string]any{"roles": []any{"staff", "admins\nX-Injected: 1", "ops\u0085"}}
			c["department"] = "HR\r\nX: y"
			c["acr"] = "urn:loa:mfa\x00"
		}, check: func(t *testing.T, id *Identity) {
			if id.Name != "" || strings.Join(id.Groups, ",") != "staff" || id.Extra["department"] != "" || id.ACR != "" {
				t.Errorf("identity %+v", id)
			}
			if len(id.Refused) != 5 {
				t.Errorf("refused %q, want 5 entries", id.Refused)
			}
		}},
		{name: "email domain in lowercase", change: func(_ *LoginState, c map[string]any) { c["email"] = "Alice.Smith+hr@Example.COM" },
			check: func(t *testing.T, id *Identity) {
				if id.Email != "Alice.Smith+hr@example.com" {
					t.Errorf("email %q", id.Email)
				}
			}},
		{name: "prompt=login honoured", opt: AuthOptions{ForceLogin: true}},
		{name: "the IdP session (sid)", change: func(_ *LoginState, c map[string]any) { c["sid"] = "idp-session-1" },
			check: func(t *testing.T, id *Identity) {
				if id.SID != "idp-session-1" || len(id.Refused) != 0 {
					t.Errorf("sid %q (refused %q)", id.SID, id.Refused)
				}
			}},
		{name: "a sid that is not a string", change: func(_ *LoginState, c map[string]any) { c["sid"] = 42 },
			check: func(t *testing.T, id *Identity) {
				if id.SID != "" || len(id.Refused) != 1 {
					t.Errorf("sid %q (refused %q)", id.SID, id.Refused)
				}
			}},
		{name: "auth_time older than max_age", opt: AuthOptions{MaxAge: time.Hour},
			change: func(_ *LoginState, c map[string]any) { c["auth_time"] = time.Now().Add(-2 * time.Hour).Unix() }, reason: "auth_time_too_old"},
	}
	// An email claim that is not exactly one plain address is no email.
	for _, e := range hostileEmails {
		cases = append(cases, tc{name: "email " + e, change: func(_ *LoginState, c map[string]any) { c["email"] = e },
			check: func(t *testing.T, id *Identity) {
				// An empty claim is simply no email; anything else is noted.
				wantRefused := 1
				if e == "" {
					wantRefused = 0
				}
				if id.Email != "" || len(id.Refused) != wantRefused || (e != "" && id.Refused[0] != "email: not a single plain address") {
					t.Errorf("email %q kept (refused %q)", id.Email, id.Refused)
				}
			}})
	}
	cases = append(cases, tc{name: "email as a list", change: func(_ *LoginState, c map[string]any) { c["email"] = []string{"a@corp.test", "b@corp.test"} },
		check: func(t *testing.T, id *Identity) {
			if id.Email != "" || len(id.Refused) != 1 {
				t.Errorf("email %q kept (refused %q)", id.Email, id.Refused)
			}
		}})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, err := rp.Begin(ctx, "https://app.example/.gatehouse/callback", "/back", c.opt)
			if err != nil {
				t.Fatal(err)
			}
			authURL, err := rp.AuthCodeURL(ctx, st, st.State, c.opt)
			if err != nil {
				t.Fatal(err)
			}
			u, _ := url.Parse(authURL)
			q := u.Query()
			if q.Get("code_challenge_method") != "S256" || q.Get("state") != st.State || q.Get("nonce") != st.Nonce {
				t.Fatalf("authorization URL %s", authURL)
			}
			if (q.Get("prompt") == "login") != c.opt.ForceLogin {
				t.Errorf("prompt=%q with ForceLogin %v", q.Get("prompt"), c.opt.ForceLogin)
			}
			if hint, ok := q["login_hint"]; ok != (c.opt.LoginHint != "") || ok && hint[0] != c.opt.LoginHint {
				t.Errorf("login_hint %q with LoginHint %q", hint, c.opt.LoginHint)
			}
			now := time.Now()
			claims := map[string]any{
				"iss": f.URL, "aud": "gatehouse", "sub": "alice", "nonce": st.Nonce,
				"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "auth_time": now.Unix(),
				"email": "alice@example.com", "email_verified": true, "name": "Alice",
				"realm_access": map[string]any{"roles": []any{"staff", "admins", 7, "staff"}},
				"acr":          "urn:loa:pwd", "amr": []string{"pwd", "otp"}, "department": "HR", "https://example.com/tier": 2,
			}
			if c.change != nil {
				c.change(st, claims)
			}
			tok := signed(f.key)
			if c.token != nil {
				tok = c.token
			}
			f.mu.Lock()
			f.token = func() (int, map[string]any) { return tok(st, claims) }
			f.mu.Unlock()
			id, err := rp.Finish(ctx, "code", st)
			var le *LoginError
			switch {
			case c.reason == "":
				if err != nil {
					t.Fatalf("Finish: %v", err)
				}
				if c.check != nil {
					c.check(t, id)
				}
			case c.reason == "unavailable":
				if !errors.Is(err, ErrProviderUnavailable) {
					t.Fatalf("Finish err = %v, want ErrProviderUnavailable", err)
				}
			case !errors.As(err, &le) || le.Reason != c.reason:
				t.Fatalf("Finish = %+v, %v; want LoginError %s", id, err, c.reason)
			case c.idp == nil && le.IdP != nil, c.idp != nil && (le.IdP == nil || *le.IdP != *c.idp):
				t.Errorf("the IdP's refusal reads %+v, want %+v", le.IdP, c.idp)
			}
		})
	}
}

func TestDiscoveryIsLazyAndRetried(t *testing.T) {
	var fail sync.Mutex
	down := true
	f := newFakeIdP(t)
	gate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail.Lock()
		d := down
		fail.Unlock()
		if d {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		http.Redirect(w, r, f.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer gate.Close()
	d := NewDiscovery(gate.URL, gate.Client())
	now := time.Now()
	d.Now = func() time.Time { return now }
	if _, err := d.Get(context.Background()); !errors.Is(err, ErrProviderUnavailable) {
		t.Fatalf("Get while down: %v", err)
	}
	fail.Lock()
	down = false
	fail.Unlock()
	// Within the retry delay the failure is remembered.
	if _, err := d.Get(context.Background()); !errors.Is(err, ErrProviderUnavailable) {
		t.Fatalf("Get right after a failure: %v", err)
	}
	now = now.Add(discoveryRetry + 100*time.Millisecond)
	// The gate's issuer differs from the fake's, so discovery now fails on
	// the issuer check: still unavailable, never a wrong provider.
	if _, err := d.Get(context.Background()); !errors.Is(err, ErrProviderUnavailable) || !strings.Contains(err.Error(), "issuer") {
		t.Fatalf("Get with a mismatched issuer: %v", err)
	}
	d2 := NewDiscovery(f.URL, f.Client())
	m, err := d2.Get(context.Background())
	if err != nil || m.EndSessionURL != f.URL+"/logout" {
		t.Fatalf("Get: %+v %v", m, err)
	}
}

func TestDiscoveryReachable(t *testing.T) {
	f := newFakeIdP(t)
	d := NewDiscovery(f.URL, f.Client())
	now := time.Now()
	d.Now = func() time.Time { return now }
	if _, err := d.Get(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := d.Reachable(context.Background()); err != nil {
		t.Fatalf("Reachable right after discovery: %v", err)
	}
	f.Close()
	// A recent good contact vouches for the IdP for reachableFor...
	if err := d.Reachable(context.Background()); err != nil {
		t.Fatalf("Reachable within the window: %v", err)
	}
	// ...after which the IdP is asked again, and a dead one is reported.
	now = now.Add(reachableFor + 50*time.Millisecond)
	start := time.Now()
	err := d.Reachable(context.Background())
	if !errors.Is(err, ErrProviderUnavailable) {
		t.Fatalf("Reachable on a dead IdP: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Reachable took %v on a dead IdP", took)
	}
}
