package module

import (
	"net"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/gatehouse-proxy/gatehouse/authn"
)

// providers shares, per issuer, the discovery cache, the IdP HTTP client
// and the record of used login states across handler instances and config
// reloads.
var providers = caddy.NewUsagePool()

type providerEntry struct {
	discovery *authn.Discovery
	used      *authn.UsedStates
}

func (p *providerEntry) Destruct() error { return p.discovery.Destruct() }

// newIdPClient returns the HTTP client for discovery, keys and token
// exchange: every step is bounded, so a slow IdP cannot pin requests.
func newIdPClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: 10 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   8,
			ForceAttemptHTTP2:     true,
		},
	}
}
