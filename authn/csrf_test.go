package authn

import "testing"

func TestCSRF(t *testing.T) {
	c, err := NewCSRF([][]byte{secretA}, bind)
	if err != nil {
		t.Fatal(err)
	}
	rotated, _ := NewCSRF([][]byte{secretB, secretA}, bind)
	other, _ := NewCSRF([][]byte{secretA}, Binding{App: "other", Issuer: bind.Issuer, ClientID: bind.ClientID})
	tok := c.Token("s1")
	if !c.Valid("s1", tok) || !rotated.Valid("s1", tok) {
		t.Error("a valid token was refused")
	}
	for name, ok := range map[string]bool{
		"other session":   c.Valid("s2", tok),
		"empty session":   c.Valid("", c.Token("")),
		"empty token":     c.Valid("s1", ""),
		"garbage":         c.Valid("s1", "!!!"),
		"truncated":       c.Valid("s1", tok[:len(tok)-2]),
		"other app's key": other.Valid("s1", tok),
	} {
		if ok {
			t.Errorf("%s: accepted", name)
		}
	}
}
