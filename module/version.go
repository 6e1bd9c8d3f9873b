package module

import (
	"runtime/debug"
)

// modulePath is Gatehouse's Go module.
const modulePath = "github.com/gatehouse-proxy/gatehouse"

// version is set by a release build that knows better than Go's build
// information:
//
//	go build -ldflags "-X github.com/gatehouse-proxy/gatehouse/module.version=v1.2.3" ./cmd/gatehouse
var version string

// Version is Gatehouse's version, from the build: the -ldflags -X value
// if set; else the version of the Gatehouse module where it is a
// dependency (a Caddy built by xcaddy: what `caddy list-modules
// --versions` shows too); else the main module's, which Go stamps from a
// tag or the commit (`go install …@v1.2.3`, or a build in a git checkout);
// else the commit; else "(devel)".
func Version() string {
	bi, _ := debug.ReadBuildInfo()
	return versionOf(bi, version)
}

func versionOf(bi *debug.BuildInfo, override string) string {
	if override != "" {
		return override
	}
	if bi == nil {
		return "(devel)"
	}
	for _, dep := range bi.Deps {
		if dep.Path == modulePath {
			if dep.Replace != nil && dep.Replace.Version == "" {
				return dep.Version + " (replaced by " + dep.Replace.Path + ")"
			}
			if dep.Replace != nil {
				return dep.Replace.Version
			}
			return dep.Version
		}
	}
	if bi.Main.Path == modulePath && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+modified"
			}
		}
	}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		return "(devel) " + rev + modified
	}
	return "(devel)"
}
