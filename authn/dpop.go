package authn

import (
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// DPoP (RFC 9449): a sender-constrained access token is bound to a key
// (its cnf.jkt is the key's thumbprint); every request carries a proof,
// a JWT signed with that key naming the request (htm, htu), its time,
// a unique id and the token's hash (ath).

// dpopWindow is how old (by its iat) a proof may be; proofs are
// remembered for as long, so each is used once.
const dpopWindow = 60 * time.Second

// DPoPProof is a verified proof: its id, to be used once, and until when
// it must be remembered.
type DPoPProof struct {
	JTI   string
	Until time.Time
}

// dpopError is a refused proof (invalid_dpop_proof, RFC 9449 7.1).
func dpopError(reason, desc string) error {
	return &BearerError{Code: "invalid_dpop_proof", Reason: reason, Description: desc}
}

// The DPoP refusals, as the audit log names them.
const (
	DPoPMissing   = "dpop_missing"   // a bound token, or dpop required, without one proof
	DPoPMalformed = "dpop_malformed" // not a dpop+jwt signed by the key in its header
	DPoPMismatch  = "dpop_mismatch"  // htm, htu or ath do not name this request and token
	DPoPStale     = "dpop_stale"     // iat outside the window
	DPoPKey       = "dpop_key"       // the proof's key is not the one the token is bound to
	DPoPReplayed  = "dpop_replayed"  // the proof was used before
	DPoPUnbound   = "dpop_unbound"   // dpop required, and the token is not bound to a key
)

// DPoPReasons lists the refusals, for documentation and its test.
var DPoPReasons = []string{DPoPMissing, DPoPMalformed, DPoPMismatch, DPoPStale, DPoPKey, DPoPReplayed, DPoPUnbound}

// VerifyDPoP checks proof for a request with method to htu (scheme,
// authority and path, as the client addressed it) carrying token, bound
// to jkt: RFC 9449 4.3. It does not remember the proof: the caller makes
// sure each JTI is used once until Until.
func VerifyDPoP(proof, method, htu, token, jkt string, now time.Time) (*DPoPProof, error) {
	if len(proof) > maxTokenSize {
		return nil, dpopError(DPoPMalformed, "the DPoP proof is too large")
	}
	if alg := headerAlg(proof); alg != "" && !slices.Contains(signingAlgs, jose.SignatureAlgorithm(alg)) {
		return nil, dpopError(DPoPMalformed, fmt.Sprintf("DPoP proofs signed with %q are not accepted", alg))
	}
	jws, err := jose.ParseSigned(proof, signingAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return nil, dpopError(DPoPMalformed, "the DPoP proof is not a signed JWT")
	}
	h := jws.Signatures[0].Header
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, "dpop+jwt") {
		return nil, dpopError(DPoPMalformed, "the DPoP proof's typ must be dpop+jwt")
	}
	if h.JSONWebKey == nil || !h.JSONWebKey.Valid() || !h.JSONWebKey.IsPublic() {
		return nil, dpopError(DPoPMalformed, "the DPoP proof must carry the public key it is signed with (jwk)")
	}
	payload, err := jws.Verify(h.JSONWebKey)
	if err != nil {
		return nil, dpopError(DPoPMalformed, "the DPoP proof's signature does not verify with its jwk")
	}
	var c struct {
		JTI string       `json:"jti"`
		HTM string       `json:"htm"`
		HTU string       `json:"htu"`
		IAT *json.Number `json:"iat"`
		ATH string       `json:"ath"`
	}
	d := json.NewDecoder(strings.NewReader(string(payload)))
	d.UseNumber()
	if err := d.Decode(&c); err != nil || c.JTI == "" || len(c.JTI) > 255 {
		return nil, dpopError(DPoPMalformed, "the DPoP proof's claims cannot be read, or it has no jti")
	}
	if c.HTM != method || !sameHTU(c.HTU, htu) {
		return nil, dpopError(DPoPMismatch, "the DPoP proof is for another request (htm, htu)")
	}
	sum := sha256.Sum256([]byte(token))
	if c.ATH != base64.RawURLEncoding.EncodeToString(sum[:]) {
		return nil, dpopError(DPoPMismatch, "the DPoP proof is for another access token (ath)")
	}
	iat, ok := numericDate(c.IAT)
	if !ok || iat.After(now.Add(reauthSkew)) || iat.Before(now.Add(-dpopWindow)) {
		return nil, dpopError(DPoPStale, "the DPoP proof is too old or from the future (iat)")
	}
	tp, err := h.JSONWebKey.Thumbprint(crypto.SHA256)
	if err != nil || base64.RawURLEncoding.EncodeToString(tp) != jkt {
		return nil, dpopError(DPoPKey, "the DPoP proof is signed by another key than the token is bound to")
	}
	return &DPoPProof{JTI: c.JTI, Until: iat.Add(dpopWindow + reauthSkew)}, nil
}

// sameHTU compares a proof's htu with the request's URI (RFC 9449 4.3:
// without query and fragment, scheme and host case-insensitively, the
// default port dropped).
func sameHTU(claim, want string) bool {
	u, err := url.Parse(claim)
	if err != nil || u.Host == "" {
		return false
	}
	u.RawQuery, u.Fragment, u.RawFragment = "", "", ""
	norm := func(u *url.URL) string {
		host := strings.ToLower(u.Host)
		scheme := strings.ToLower(u.Scheme)
		host = strings.TrimSuffix(host, map[string]string{"https": ":443", "http": ":80"}[scheme])
		return scheme + "://" + host + u.EscapedPath()
	}
	w, err := url.Parse(want)
	return err == nil && norm(u) == norm(w)
}
