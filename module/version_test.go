package module

import (
	"runtime/debug"
	"testing"
)

func TestVersionOf(t *testing.T) {
	gh := func(v string, replace *debug.Module) *debug.Module {
		return &debug.Module{Path: modulePath, Version: v, Replace: replace}
	}
	caddy := &debug.Module{Path: "github.com/caddyserver/caddy/v2", Version: "v2.11.9"}
	for _, c := range []struct {
		name     string
		bi       *debug.BuildInfo
		override string
		want     string
	}{
		{"no build info", nil, "", "(devel)"},
		{"-ldflags -X wins", &debug.BuildInfo{Deps: []*debug.Module{gh("v1.0.0", nil)}}, "v1.2.3", "v1.2.3"},
		{"xcaddy build", &debug.BuildInfo{Main: debug.Module{Path: "caddy"}, Deps: []*debug.Module{caddy, gh("v1.4.0", nil)}}, "", "v1.4.0"},
		{"xcaddy build of a checkout", &debug.BuildInfo{Deps: []*debug.Module{gh("v0.0.0", &debug.Module{Path: "/src"})}}, "", "v0.0.0 (replaced by /src)"},
		{"replaced by a version", &debug.BuildInfo{Deps: []*debug.Module{gh("v1.0.0", &debug.Module{Path: "example.com/fork", Version: "v1.0.1"})}}, "", "v1.0.1"},
		{"go install @version", &debug.BuildInfo{Main: *gh("v1.5.0", nil), Deps: []*debug.Module{caddy}}, "", "v1.5.0"},
		{"a git checkout", &debug.BuildInfo{Main: *gh("(devel)", nil), Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "44caf4a1b2c3d4e5f60718293a4b5c6d7e8f9012"}, {Key: "vcs.modified", Value: "true"}}}, "", "(devel) 44caf4a1b2c3+modified"},
		{"no VCS", &debug.BuildInfo{Main: *gh("(devel)", nil)}, "", "(devel)"},
	} {
		if got := versionOf(c.bi, c.override); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
