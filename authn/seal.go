package authn

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gorilla/securecookie"
)

// MinSecretLen is the shortest cookie secret accepted, in bytes.
const MinSecretLen = 32

// ErrSecretTooShort is returned for a cookie secret under MinSecretLen bytes.
var ErrSecretTooShort = errors.New("authn: cookie secret too short")

// ErrInvalidCookie means a cookie was not sealed by any configured key for
// this purpose and binding, was altered, or is too old to open.
var ErrInvalidCookie = errors.New("authn: invalid cookie")

// Binding is what a sealed cookie is bound to: a cookie sealed for one app,
// issuer or client never opens for another, even under the same secret.
type Binding struct {
	App      string
	Issuer   string
	ClientID string
}

// Sealer seals values into cookie strings (encrypted with AES-256-CTR and
// authenticated with HMAC-SHA256 by gorilla/securecookie) and opens them.
// The first secret seals; every secret opens, so secrets rotate without
// logging anyone out.
type Sealer struct {
	codecs []securecookie.Codec
	maxAge int64 // seconds
	maxLen int   // longest sealed value
	now    func() time.Time
}

// NewSealer derives a hash key and a block key per secret with HKDF-SHA256,
// under labels that name the purpose ("session", "login", …) and the
// binding. maxAge bounds how old a sealed value may be when opened.
func NewSealer(secrets [][]byte, purpose string, b Binding, maxAge time.Duration) (*Sealer, error) {
	if len(secrets) == 0 {
		return nil, fmt.Errorf("%w: no secret", ErrSecretTooShort)
	}
	info := "gatehouse/v1\x00" + purpose + "\x00" + b.App + "\x00" + b.Issuer + "\x00" + b.ClientID
	pairs := make([][]byte, 0, 2*len(secrets))
	for i, secret := range secrets {
		if len(secret) < MinSecretLen {
			return nil, fmt.Errorf("%w: secret #%d is %d bytes, need at least %d", ErrSecretTooShort, i+1, len(secret), MinSecretLen)
		}
		hashKey, err := hkdf.Key(sha256.New, secret, nil, info+"\x00hash", 32)
		if err != nil {
			return nil, err
		}
		blockKey, err := hkdf.Key(sha256.New, secret, nil, info+"\x00block", 32)
		if err != nil {
			return nil, err
		}
		pairs = append(pairs, hashKey, blockKey)
	}
	codecs := securecookie.CodecsFromPairs(pairs...)
	for _, c := range codecs {
		sc := c.(*securecookie.SecureCookie)
		sc.SetSerializer(securecookie.JSONEncoder{})
		// The age is checked by Open, against the sealer's clock.
		sc.MaxAge(0)
		sc.MaxLength(MaxCookieLen)
	}
	return &Sealer{codecs: codecs, maxAge: int64(maxAge / time.Second), maxLen: MaxCookieLen, now: time.Now}, nil
}

// SetMaxLength lets the sealer seal and open values of up to n bytes
// sealed, instead of MaxCookieLen: for values kept in a store rather
// than in a cookie.
func (s *Sealer) SetMaxLength(n int) {
	s.maxLen = n
	for _, c := range s.codecs {
		c.(*securecookie.SecureCookie).MaxLength(n)
	}
}

// SetClock makes the sealer judge ages by now instead of the wall clock
// (tests). Sealing always stamps the wall clock.
func (s *Sealer) SetClock(now func() time.Time) { s.now = now }

// MaxCookieLen is the longest sealed value Gatehouse writes or reads.
// Browsers keep about 4096 bytes per cookie, name and attributes included.
const MaxCookieLen = 3900

// Seal encodes v (as JSON) for the cookie called name.
func (s *Sealer) Seal(name string, v any) (string, error) {
	return securecookie.EncodeMulti(name, v, s.codecs...)
}

// Open decodes a value sealed for the cookie called name into v. Any
// failure is ErrInvalidCookie: which key or check failed is not told.
func (s *Sealer) Open(name, value string, v any) error {
	if value == "" || len(value) > s.maxLen {
		return ErrInvalidCookie
	}
	if err := securecookie.DecodeMulti(name, value, v, s.codecs...); err != nil {
		return ErrInvalidCookie
	}
	// The seal is authentic; its timestamp is the first field of the
	// encoded value ("time|value|mac").
	raw, err := base64.URLEncoding.DecodeString(value)
	if err != nil {
		return ErrInvalidCookie
	}
	stamp, _, _ := bytes.Cut(raw, []byte("|"))
	sealed, err := strconv.ParseInt(string(stamp), 10, 64)
	if err != nil || (s.maxAge > 0 && sealed < s.now().Unix()-s.maxAge) {
		return ErrInvalidCookie
	}
	return nil
}
