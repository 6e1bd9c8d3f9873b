// Package gatehouse is an identity-aware reverse proxy for Caddy v2.
//
// Importing this package registers the Caddy module http.handlers.gatehouse
// and the Caddyfile directive gatehouse, so that
//
//	xcaddy build --with github.com/gatehouse-proxy/gatehouse
//
// builds a Caddy with Gatehouse. See the README for configuration.
package gatehouse

import (
	_ "github.com/gatehouse-proxy/gatehouse/module"
)
