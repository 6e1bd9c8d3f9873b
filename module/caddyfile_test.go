package module

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestCaddyfileAdapt adapts every testdata/adapt/*.caddyfiletest: a
// Caddyfile, a line of ten dashes, then the expected JSON.
func TestCaddyfileAdapt(t *testing.T) {
	files, _ := filepath.Glob("testdata/adapt/*.caddyfiletest")
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			in, want, ok := strings.Cut(string(raw), "----------\n")
			if !ok {
				t.Fatalf("%s: no ---------- separator", f)
			}
			out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(in), map[string]any{"filename": "Caddyfile"})
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("warning: line %d: %s", w.Line, w.Message)
			}
			var pretty bytes.Buffer
			_ = json.Indent(&pretty, out, "", "\t")
			got := pretty.String() + "\n"
			if *update {
				_ = os.WriteFile(f, []byte(in+"----------\n"+got), 0o644)
				return
			}
			if got != want {
				t.Errorf("adapted JSON differs (run go test ./module -run TestCaddyfileAdapt -update to accept):\n%s", got)
			}
		})
	}
}

func TestCaddyfileErrors(t *testing.T) {
	cases := []struct {
		name, in, want string
		line           int
	}{
		{"argument on the directive line", "gatehouse foo {\n}", "gatehouse takes no arguments", 1},
		{"unknown subdirective", "gatehouse {\n\tapp x\n\tisuer https://idp\n}", "unknown gatehouse subdirective \"isuer\"", 3},
		{"repeated single value", "gatehouse {\n\tapp x\n\tapp y\n}", "app is set twice", 3},
		{"two values", "gatehouse {\n\tissuer a b\n}", "issuer takes exactly one value, got 2", 2},
		{"no value", "gatehouse {\n\tclient_id\n}", "client_id takes exactly one value, got 0", 2},
		{"short literal secret", "gatehouse {\n\tcookie_secret tooshort\n}", "cookie_secret: secret #1 is 8 bytes; it must be at least 32", 2},
		{"short second secret", "gatehouse {\n\tcookie_secret {env.A} short\n}", "cookie_secret: secret #2 is 5 bytes", 2},
		{"bad duration", "gatehouse {\n\tidle_timeout soon\n}", "idle_timeout: \"soon\" is not a duration", 2},
		{"negative duration", "gatehouse {\n\tsession_lifetime -1h\n}", "session_lifetime must be positive", 2},
		{"bad idle_activity", "gatehouse {\n\tidle_activity sometimes\n}", "idle_activity: \"sometimes\" must be navigation or any", 2},
		{"identity_header arity", "gatehouse {\n\tidentity_header X-User\n}", "identity_header takes a header name and a claim", 2},
		{"identity_header forbidden", "gatehouse {\n\tidentity_header Host email\n}", "identity_header: \"Host\" cannot be an identity header", 2},
		{"identity_header bad name", "gatehouse {\n\tidentity_header \"X User\" email\n}", "identity_header: \"X User\" is not a valid header name", 2},
		{"relative public path", "gatehouse {\n\tpublic static/*\n}", "public: path \"static/*\" must start with / or *", 2},
		{"flag with value", "gatehouse {\n\ttrust_unverified_email yes\n}", "trust_unverified_email takes no value", 2},
		{"block on a subdirective", "gatehouse {\n\tapp x {\n\t\ty\n\t}\n}", "app takes no block", 2},
		{"bad cookie name", "gatehouse {\n\tcookie_name \"a;b\"\n}", "cookie_name: \"a;b\" must be", 2},
		{"step_up without paths", "gatehouse {\n\tstep_up {\n\t\tacr x\n\t}\n}", "step_up needs at least one path", 2},
		{"step_up asking nothing", "gatehouse {\n\tstep_up /admin {\n\t}\n}", "step_up /admin asks for nothing", 3},
		{"step_up unknown setting", "gatehouse {\n\tstep_up /admin {\n\t\tacrs x\n\t}\n}", "step_up /admin: unknown setting \"acrs\"", 3},
		{"step_up bad max_age", "gatehouse {\n\tstep_up /admin {\n\t\tmax_age soon\n\t}\n}", "max_age: \"soon\" is not a duration", 3},
		{"provider twice", "gatehouse {\n\tprovider eid {\n\t\tissuer https://e\n\t\tclient_id c\n\t\tlink_claim email\n\t}\n\tprovider eid {\n\t\tissuer https://e\n\t}\n}", "provider eid is defined twice", 7},
		{"upgrade origin with a path", "gatehouse {\n\tapp x\n\tupgrade_origins https://a.example https://b.example/x\n}", "upgrade_origins: \"https://b.example/x\" is not an origin", 3},
		{"upgrade origin null", "gatehouse {\n\tupgrade_origins null\n}", "upgrade_origins: \"null\" is not an origin", 2},
		{"strip everything", "gatehouse {\n\tstrip_headers X-A *\n}", "strip_headers: \"*\" is too wide", 2},
		{"keep X-Forwarded-*", "gatehouse {\n\tkeep_headers X-Forwarded-*\n}", "keep_headers: \"X-Forwarded-*\" would cover", 2},
		{"assertion issuer twice", "gatehouse {\n\tassertion_header X-A {\n\t\tissuer https://a\n\t\tissuer https://b\n\t}\n}", "assertion_header: issuer is set twice", 4},
		{"provider incomplete", "gatehouse {\n\tprovider eid {\n\t\tissuer https://e\n\t}\n}", "provider eid needs issuer, client_id and link_claim", 4},
	}
	for _, c := range cases {
		d := caddyfile.NewTestDispenser(c.in)
		err := new(Handler).UnmarshalCaddyfile(d)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasSuffix(err.Error(), fmt.Sprintf(", at Testfile:%d", c.line)) {
			t.Errorf("%s: err = %v\nwant it to contain %q and name line %d", c.name, err, c.want, c.line)
		}
	}
}

func TestCaddyfileRepeatable(t *testing.T) {
	in := `gatehouse {
	cookie_secret {env.NEW} {env.OLD}
	cookie_secret {env.OLDER}
	public /a
	public /b /c
	identity_header X-A email
	identity_header X-B sub
	allow_groups g1
	allow_groups g2 g3
	trust_unverified_email
}`
	var h Handler
	if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	if strings.Join(h.CookieSecrets, " ") != "{env.NEW} {env.OLD} {env.OLDER}" ||
		strings.Join(h.Public, " ") != "/a /b /c" ||
		len(h.IdentityHeaders) != 2 || strings.Join(h.AllowGroups, " ") != "g1 g2 g3" || !h.TrustUnverifiedEmail {
		t.Errorf("parsed %+v", h)
	}
}

// FuzzUnmarshalCaddyfile feeds arbitrary blocks to the parser: it may
// refuse them, but must never panic.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	f.Add("gatehouse {\n\tapp x\n\tissuer https://idp\n}")
	f.Add("gatehouse {\n\tidentity_header X-A email\n\tpublic /a /b\n}")
	f.Add("gatehouse {\n\tcookie_secret {env.A} {file./x}\n\tidle_timeout 1d\n}")
	f.Fuzz(func(t *testing.T, in string) {
		tokens, err := caddyfile.Tokenize([]byte(in), "Caddyfile")
		if err != nil || len(tokens) == 0 {
			return
		}
		var h Handler
		_ = h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
	})
}
