// Command gatehouse is Caddy with its standard modules plus Gatehouse.
//
// It behaves exactly like the caddy command: `gatehouse run --config X`,
// `gatehouse adapt`, `gatehouse list-modules` and the rest; Gatehouse's
// own tools are `gatehouse gatehouse …` (the command Gatehouse adds to
// Caddy's, which is `caddy gatehouse …` in a Caddy built with xcaddy).
package main

import (
	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/gatehouse-proxy/gatehouse/module"
)

func main() {
	// Caddy's own hooks for builds under another name: the help says
	// gatehouse, and `gatehouse version` (and --version) names both:
	// "Gatehouse v1.2.3 on Caddy v2.11.9 h1:…".
	caddy.CustomBinaryName = "gatehouse"
	caddy.CustomVersion = "Gatehouse " + module.Version() + " on Caddy"
	caddy.CustomLongDescription = longDescription
	caddycmd.Main()
}

const longDescription = `Gatehouse is Caddy with the Gatehouse identity-aware proxy built in:
every Caddy command works the same, under this name.

	$ gatehouse run --config Caddyfile
	$ gatehouse adapt --config Caddyfile --validate
	$ gatehouse reload --config Caddyfile

Gatehouse's own tools (policy check, eval and test; grants, users and
access requests) are the 'gatehouse' command, as plugins add commands to
Caddy's:

	$ gatehouse gatehouse --help

Caddy's documentation applies to everything else:
https://caddyserver.com/docs/command-line
`
