package module

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// caddyfileBlockRE finds the Caddyfile snippets of a Markdown page.
var caddyfileBlockRE = regexp.MustCompile("(?s)```caddyfile\n(.*?)```")

// TestDocSnippetsAreFormatted: every Caddyfile snippet in the README and
// docs/ is as `caddy fmt` writes it, so a pasted one does not make Caddy
// log "input is not formatted" at every start.
func TestDocSnippetsAreFormatted(t *testing.T) {
	pages, _ := filepath.Glob("../docs/*.md")
	pages = append(pages, "../README.md")
	n := 0
	for _, p := range pages {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range caddyfileBlockRE.FindAllStringSubmatch(string(b), -1) {
			n++
			snippet := m[1]
			if got := string(caddyfile.Format([]byte(snippet))); got != snippet {
				t.Errorf("%s: a Caddyfile snippet is not caddy fmt-clean; it should read:\n%s\n(diff from:)\n%s", p, got, snippet)
			}
		}
	}
	if n < 5 {
		t.Fatalf("found only %d Caddyfile snippets: are they still marked ```caddyfile?", n)
	}
	if strings.Contains(os.Getenv("GATEHOUSE_LIST_SNIPPETS"), "1") {
		t.Logf("%d snippets", n)
	}
}
