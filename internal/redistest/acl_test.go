package redistest

import (
	"os"
	"strings"
	"testing"
)

// TestDocsShowTheTestedACL: the ACL line docs/redis.md gives operators is
// the one the tests run Redis with.
func TestDocsShowTheTestedACL(t *testing.T) {
	doc, err := os.ReadFile("../../docs/redis.md")
	if err != nil {
		t.Fatal(err)
	}
	want := "user gatehouse " + strings.Replace(ACLRules, ">"+ACLPassword, ">PASSWORD", 1)
	if !strings.Contains(string(doc), want) {
		t.Errorf("docs/redis.md does not show the tested ACL:\n%s", want)
	}
}
