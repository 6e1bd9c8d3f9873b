// Command gatehouse is Caddy with its standard modules plus Gatehouse.
//
// It behaves exactly like the caddy command: `gatehouse run --config X`,
// `gatehouse adapt`, `gatehouse list-modules` and the rest.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/gatehouse-proxy/gatehouse/module"
)

func main() {
	caddycmd.Main()
}
