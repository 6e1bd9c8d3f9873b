package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// wsPage opens a WebSocket to url and shows what happened in #result.
const wsPage = `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>%s</title></head><body><p id="result">pending</p><script>
const ws = new WebSocket(%q);
const show = (s) => { const r = document.getElementById("result"); if (r.textContent === "pending") r.textContent = s; };
ws.onopen = () => show("OPEN");
ws.onerror = () => show("REFUSED");
</script></body></html>`

// TestBrowserWebSocketHijack: cross-site WebSocket hijacking in real
// Chromium. alice is signed in; a page of another origin of the same site
// (https://localhost:<other port>: its requests carry alice's SameSite=Lax
// cookie) opens a WebSocket to the app. Gatehouse refuses it, with her
// session, before the app sees it; the app's own page opens one.
func TestBrowserWebSocketHijack(t *testing.T) {
	site := fmt.Sprintf("https://localhost:%d", freePort(t))
	evil := fmt.Sprintf("https://localhost:%d", freePort(t))
	p := startIdP(t, idpClient{ClientID: "ws", ClientSecret: "ws-secret", RedirectURIs: []string{site + "/.gatehouse/callback"}})
	var sockets atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/ws" && strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
			sockets.Add(1)
			acceptWebSocket(w, r)
		case r.URL.Path == "/chat":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, wsPage, "chat", "wss://"+r.Host+"/ws")
		default:
			fmt.Fprintf(w, "hello %s", r.Header.Get("X-Remote-User"))
		}
	}))
	t.Cleanup(app.Close)
	evilPage := strings.ReplaceAll(fmt.Sprintf(wsPage, "evil", strings.Replace(site, "https:", "wss:", 1)+"/ws"), "`", "")
	gh := startGatehouse(t, fmt.Sprintf(`%s {
	gatehouse {
		app chat
		issuer %s
		client_id ws
		client_secret ws-secret
		scopes openid email profile groups
		cookie_secret %s
		identity_header X-Remote-User email
	}
	reverse_proxy %s
}

%s {
	header Content-Type "text/html; charset=utf-8"
	respond `+"`%s`"+`
}
`, site, p.Issuer, randomSecret(t), app.Listener.Addr(), evil, evilPage), nil, site)

	c := newChrome(t, "alice")
	c.do("opening the app", chromedp.Navigate(site+"/"))
	c.signIn("alice", "")
	c.waitFor(site+"/", "hello alice@example.com")

	result := func() string {
		var s string
		if !eventually(10*time.Second, func() bool {
			s, _ = chromedp.Run(c.ctx, chromedp.Evaluate[string](`document.getElementById("result") ? document.getElementById("result").textContent : ""`))
			return s == "OPEN" || s == "REFUSED"
		}) {
			c.fail("the page's WebSocket neither opened nor failed")
		}
		return s
	}

	// The attacker's page, same site, another origin.
	c.do("opening the other origin's page", chromedp.Navigate(evil+"/"))
	if got := result(); got != "REFUSED" || sockets.Load() != 0 {
		c.fail("a cross-origin page's WebSocket: %s, %d reached the app", got, sockets.Load())
	}
	line := gh.waitAudit(t, func(l map[string]any) bool { return l["path"] == "/ws" && l["reason"] == "cross_origin_upgrade" })
	if line == nil || line["user"] != "alice" {
		t.Fatalf("audit line %v: want alice's session refused as cross_origin_upgrade (the browser sent her cookie)", line)
	}

	// The app's own page.
	c.do("opening the app's chat page", chromedp.Navigate(site+"/chat"))
	if got := result(); got != "OPEN" || sockets.Load() != 1 {
		c.fail("the app's own WebSocket: %s, %d reached the app", got, sockets.Load())
	}
}
