package grants

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// memoAgrees decodes b through the memo twice (a miss, then a hit) and
// with json.Unmarshal, and fails unless all three agree.
func memoAgrees(t testing.TB, gm *grantMemo, b []byte) {
	t.Helper()
	var want Grant
	wantErr := json.Unmarshal(b, &want)
	for i := range 2 {
		got, err := gm.decode(b)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("decode %q (pass %d): error %v, json.Unmarshal %v", b, i, err, wantErr)
		}
		if err != nil {
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("decode %q (pass %d) = %+v, json.Unmarshal %+v", b, i, got, want)
		}
		if s, err := gm.decodeString(string(b)); err != nil || !reflect.DeepEqual(s, want) {
			t.Fatalf("decodeString %q = %+v, %v; want %+v", b, s, err, want)
		}
	}
}

func TestGrantMemo(t *testing.T) {
	gm := &grantMemo{}
	alice := Grant{ID: "g1", User: User{Iss: "https://idp", Sub: "alice"}, Resource: "projects-app", CreatedAt: 1, ExpiresAt: 2}
	revoked := alice
	revoked.RevokedAt, revoked.RevokedBy = 2, "ops"
	a, _ := json.Marshal(alice)
	r, _ := json.Marshal(revoked)
	for _, b := range [][]byte{
		a, r, // the same grant before and after its revocation: two records
		[]byte(`{"id":"g2","user":{"iss":"i","sub":"s"},"resource":"x","expires_at":9}`),
		[]byte(`{"id":"g2","user":{"iss":"i","sub":"s"},"resource":"x","expires_at":9,"expires_at":1}`), // last one wins, as in json
		[]byte(`{"id":"g3","resource":"x","RESOURCE":"y"}`),                                             // case-insensitive field names, as in json
		[]byte(`{"id":"g4","expires_at":"9"}`),                                                          // wrong type: an error, never remembered
		[]byte(`{"id":"g5"`), []byte(``), []byte(`null`), []byte(`[]`),
		[]byte("{\"id\":\"g6\",\"resource\":\"a\\u0000b\"}"),
	} {
		memoAgrees(t, gm, b)
	}
	if _, ok := gm.m[`{"id":"g4","expires_at":"9"}`]; ok {
		t.Error("a record that does not decode was remembered")
	}

	// The caller's buffer is reused after decode returns (bbolt's are):
	// the memo must keep its own copy of the key, or reusing the buffer
	// would rewrite the key it remembered a's grant under.
	fresh := &grantMemo{}
	buf := append([]byte(nil), a...)
	if g, _ := fresh.decode(buf); g.RevokedAt != 0 || g.ID != "g1" {
		t.Fatalf("wrong grant %+v", g)
	}
	copy(buf, r) // r is longer than a: buf now holds a prefix of r
	if _, ok := fresh.m[string(a)]; !ok || len(fresh.m) != 1 {
		t.Fatalf("the remembered key changed with the caller's buffer: %q", keys(fresh.m))
	}

	// Bounded.
	for i := range memoMax + 10 {
		memoAgrees(t, gm, fmt.Appendf(nil, `{"id":"m%d","resource":"r"}`, i))
	}
	if len(gm.m) > memoMax {
		t.Errorf("the memo holds %d grants, more than %d", len(gm.m), memoMax)
	}
}

// FuzzGrantMemo: whatever the stored bytes, the memo answers what
// json.Unmarshal answers, on a miss and on a hit.
func FuzzGrantMemo(f *testing.F) {
	for _, s := range []string{
		`{"id":"g1","user":{"iss":"https://idp","sub":"alice"},"resource":"projects-app","created_at":1,"expires_at":2}`,
		`{"id":"g1","user":{"iss":"https://idp","sub":"alice"},"resource":"projects-app","created_at":1,"expires_at":2,"revoked_at":2,"revoked_by":"ops"}`,
		`{"ID":"x","Resource":"y","expires_at":1e3}`, `{"id":1}`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	gm := &grantMemo{}
	f.Fuzz(func(t *testing.T, b []byte) {
		memoAgrees(t, gm, b)
	})
}

func keys(m map[string]Grant) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
