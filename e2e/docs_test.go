package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docPages are the README and the manual.
func docPages(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob("../docs/*.md")
	if err != nil || len(pages) == 0 {
		t.Fatalf("no docs pages: %v", err)
	}
	return append([]string{"../README.md", "../bench/README.md"}, pages...)
}

var (
	codeBlockRE     = regexp.MustCompile("(?s)```([a-z]*)\n(.*?)```")
	mdLinkRE        = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
	headingRE       = regexp.MustCompile(`(?m)^#{1,6} (.+)$`)
	anchorDropRE    = regexp.MustCompile(`[^\w\- ]`)
	subdirectiveRE  = regexp.MustCompile(`^(step_up|provider|assertion_header|approval_step_up|scim)\b`)
	placeholderArgs = regexp.MustCompile(`<[a-zA-Z.]+>`)
)

// anchorsOf are the heading anchors of a markdown file, as GitHub makes them.
func anchorsOf(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range headingRE.FindAllStringSubmatch(codeBlockRE.ReplaceAllString(string(b), ""), -1) {
		a := strings.ToLower(strings.TrimSpace(m[1]))
		out[strings.ReplaceAll(anchorDropRE.ReplaceAllString(a, ""), " ", "-")] = true
	}
	return out
}

// TestDocsLinks: every relative link in the README and the manual leads to
// a file that exists, and to a heading that exists in it.
func TestDocsLinks(t *testing.T) {
	for _, page := range docPages(t) {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		text := codeBlockRE.ReplaceAllString(string(b), "")
		for _, m := range mdLinkRE.FindAllStringSubmatch(text, -1) {
			link := m[1]
			if strings.HasPrefix(link, "http://") || strings.HasPrefix(link, "https://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			file, frag, _ := strings.Cut(link, "#")
			target := page
			if file != "" {
				target = filepath.Join(filepath.Dir(page), file)
			}
			if _, err := os.Stat(target); err != nil {
				t.Errorf("%s: link %s: no such file", page, link)
				continue
			}
			if frag != "" && strings.HasSuffix(target, ".md") && !anchorsOf(t, target)[frag] {
				t.Errorf("%s: link %s: no such heading", page, link)
			}
		}
	}
}

// TestDocsCaddyfiles: every Caddyfile snippet in the README and the manual
// is `caddy fmt`-clean, and every one that is a configuration (a site, the
// global options, or a gatehouse subdirective, put in a site) adapts.
// The syntax summary, with its <placeholders>, is only formatted.
func TestDocsCaddyfiles(t *testing.T) {
	dir := t.TempDir()
	n := 0
	for _, page := range docPages(t) {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range codeBlockRE.FindAllStringSubmatch(string(b), -1) {
			if m[1] != "caddyfile" {
				continue
			}
			n++
			block := m[2]
			name := filepath.Join(dir, strings.ReplaceAll(filepath.Base(page), ".", "_")+"-"+string(rune('a'+i))+".caddyfile")
			if err := os.WriteFile(name, []byte(block), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(gatehouseBin, "fmt", name).Output()
			if err != nil || string(out) != block {
				t.Errorf("%s: a Caddyfile snippet is not caddy fmt-clean:\n%s\nformatted:\n%s", page, block, out)
			}
			if placeholderArgs.MatchString(block) {
				continue
			}
			config := block
			if subdirectiveRE.MatchString(block) || strings.HasPrefix(block, "gatehouse {") {
				inner := block
				if !strings.HasPrefix(block, "gatehouse {") {
					inner = "gatehouse {\n\tapp docs\n\tissuer https://idp.example.com\n\tclient_id docs\n\tcookie_secret 0123456789abcdef0123456789abcdef0123\n" +
						"\t" + strings.ReplaceAll(strings.TrimRight(block, "\n"), "\n", "\n\t") + "\n}\n"
				}
				config = "app.example.com {\n\t" + strings.ReplaceAll(strings.TrimRight(inner, "\n"), "\n", "\n\t") + "\n}\n"
			}
			if err := os.WriteFile(name, []byte(config), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(gatehouseBin, "adapt", "--config", name, "--adapter", "caddyfile")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s: a Caddyfile snippet does not adapt: %v\n%s\n%s", page, err, config, out)
			}
		}
	}
	if n < 5 {
		t.Errorf("only %d Caddyfile snippets found", n)
	}
}
