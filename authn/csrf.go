package authn

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
)

// CSRF makes and checks anti-forgery tokens for Gatehouse's own forms. A
// token is an HMAC of the session id, so it is valid only with the session
// it was made for, and dies with it (logout, expiry). Keys are derived per
// cookie secret (the first makes tokens, all check them).
type CSRF struct {
	keys [][]byte
}

// NewCSRF derives the CSRF keys from the cookie secrets and binding.
func NewCSRF(secrets [][]byte, b Binding) (*CSRF, error) {
	c := &CSRF{}
	for _, s := range secrets {
		if len(s) < MinSecretLen {
			return nil, ErrSecretTooShort
		}
		k, err := hkdf.Key(sha256.New, s, nil, "gatehouse/v1\x00csrf\x00"+b.App+"\x00"+b.Issuer+"\x00"+b.ClientID, 32)
		if err != nil {
			return nil, err
		}
		c.keys = append(c.keys, k)
	}
	return c, nil
}

func mac(key []byte, sessionID string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("csrf\x00" + sessionID))
	return m.Sum(nil)
}

// Token returns the form token for a session.
func (c *CSRF) Token(sessionID string) string {
	return base64.RawURLEncoding.EncodeToString(mac(c.keys[0], sessionID))
}

// Valid reports whether token was made for sessionID by any key.
func (c *CSRF) Valid(sessionID, token string) bool {
	got, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || sessionID == "" {
		return false
	}
	for _, k := range c.keys {
		if hmac.Equal(got, mac(k, sessionID)) {
			return true
		}
	}
	return false
}
