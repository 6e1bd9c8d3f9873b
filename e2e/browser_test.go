package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// browser is an HTTP client that behaves like a browser where it matters
// here: a cookie jar, redirects followed, and navigation headers.
type browser struct {
	t      testing.TB
	jar    *cookiejar.Jar
	client *http.Client
	// hops records every response of the last navigation, redirects included.
	hops []*http.Response
}

// newBrowser makes a browser that trusts the given Gatehouse processes'
// local CAs (several nodes each have their own).
func newBrowser(t testing.TB, gs ...*gatehouse) *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{t: t, jar: jar}
	roots := x509.NewCertPool()
	for _, g := range gs {
		roots.AppendCertsFromPEM(g.rootPEM)
	}
	b.client = &http.Client{
		Jar:     jar,
		Timeout: 15 * time.Second,
		Transport: &recorder{b: b, next: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots},
		}},
	}
	return b
}

// recorder keeps every response of a navigation, so tests can look at
// the redirects and Set-Cookie headers along the way.
type recorder struct {
	b    *browser
	next http.RoundTripper
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err == nil {
		r.b.hops = append(r.b.hops, resp)
	}
	return resp, err
}

// page is a response with its body read.
type page struct {
	*http.Response
	Body string
}

func (p page) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(p.Body), v); err != nil {
		t.Fatalf("%s: body is not JSON: %v\n%s", p.Request.URL, err, p.Body)
	}
}

func (p page) echo(t testing.TB) echoed {
	t.Helper()
	var e echoed
	p.json(t, &e)
	if e.Method == "" {
		t.Fatalf("%s: not an upstream answer: %s", p.Request.URL, p.Body)
	}
	return e
}

// do sends one request and follows redirects like a browser, including
// the IdP's self-submitting forms (a browser runs their script).
func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	b.hops = nil
	p := b.roundTrip(req)
	for range 5 {
		if !strings.Contains(p.Body, "document.forms[0].submit()") {
			break
		}
		hops := b.hops
		p = b.submitForm(p, nil)
		b.hops = append(hops, b.hops...)
	}
	return p
}

func (b *browser) roundTrip(req *http.Request) page {
	b.t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return page{Response: resp, Body: string(body)}
}

// navigate loads a URL as a user would by typing it or clicking a link.
func (b *browser) navigate(rawURL string) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	setNavigation(req)
	return b.do(req)
}

func setNavigation(req *http.Request) {
	req.Header.Set("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	req.Header.Set("Sec-Fetch-Dest", "document")
	req.Header.Set("Sec-Fetch-User", "?1")
}

// fetch makes a background request, as a page's script would.
func (b *browser) fetch(method, rawURL string) page {
	b.t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Sec-Fetch-Mode", "cors")
	req.Header.Set("Sec-Fetch-Dest", "empty")
	return b.do(req)
}

var (
	formActionRE  = regexp.MustCompile(`<form[^>]*action="([^"]+)"`)
	hiddenInputRE = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)"`)
)

// isLoginForm reports whether p is the IdP's login form.
func isLoginForm(p page) bool {
	return strings.Contains(p.Body, `name="password"`) && strings.Contains(p.Request.URL.Path, "/interaction/")
}

// submitLogin fills in the IdP's login form on p and follows where it
// leads.
func (b *browser) submitLogin(p page, user string) page {
	b.t.Helper()
	if !isLoginForm(p) {
		b.t.Fatalf("expected the IdP login form at %s, got %d:\n%s", p.Request.URL, p.StatusCode, p.Body)
	}
	m := formActionRE.FindStringSubmatch(p.Body)
	if m == nil {
		b.t.Fatalf("no form on the login page:\n%s", p.Body)
	}
	action, _ := p.Request.URL.Parse(m[1])
	form := url.Values{"login": {user}, "password": {user + "-pw"}}
	req, _ := http.NewRequest(http.MethodPost, action.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	setNavigation(req)
	return b.do(req)
}

// submitLoginOTP fills in the login form with a one-time code too.
func (b *browser) submitLoginOTP(p page, user, otp string) page {
	b.t.Helper()
	if !isLoginForm(p) || !strings.Contains(p.Body, `name="otp"`) {
		b.t.Fatalf("expected the IdP login form with a one-time code field at %s:\n%s", p.Request.URL, p.Body)
	}
	m := formActionRE.FindStringSubmatch(p.Body)
	action, _ := p.Request.URL.Parse(m[1])
	form := url.Values{"login": {user}, "password": {user + "-pw"}, "otp": {otp}}
	req, _ := http.NewRequest(http.MethodPost, action.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	setNavigation(req)
	return b.do(req)
}

// login navigates to rawURL, signs in at the IdP as user, and returns the
// page it lands on.
func (b *browser) login(rawURL, user string) page {
	b.t.Helper()
	return b.submitLogin(b.navigate(rawURL), user)
}

// submitForm posts the first form on p with its hidden fields plus extra.
func (b *browser) submitForm(p page, extra url.Values) page {
	b.t.Helper()
	m := formActionRE.FindStringSubmatch(p.Body)
	if m == nil {
		b.t.Fatalf("no form on %s:\n%s", p.Request.URL, p.Body)
	}
	action, _ := p.Request.URL.Parse(m[1])
	form := url.Values{}
	for _, h := range hiddenInputRE.FindAllStringSubmatch(p.Body, -1) {
		form.Set(h[1], h[2])
	}
	for k, v := range extra {
		form[k] = v
	}
	req, _ := http.NewRequest(http.MethodPost, action.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	setNavigation(req)
	b.hops = nil
	return b.roundTrip(req)
}

// cookie returns the named cookie the jar holds for rawURL.
func (b *browser) cookie(rawURL, name string) *http.Cookie {
	u, _ := url.Parse(rawURL)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// setCookies lists the Set-Cookie headers seen in the last navigation.
func (b *browser) setCookies(name string) []*http.Cookie {
	var out []*http.Cookie
	for _, r := range b.hops {
		for _, c := range r.Cookies() {
			if c.Name == name {
				out = append(out, c)
			}
		}
	}
	return out
}

// noRedirects is a client with the browser's cookies that stops at the
// first response.
func (b *browser) noRedirects() *http.Client {
	c := *b.client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

func mustStatus(t testing.TB, p page, want int) {
	t.Helper()
	if p.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d\n%s", p.Request.Method, p.Request.URL, p.StatusCode, want, p.Body)
	}
}

func fmtHops(hops []*http.Response) string {
	var sb strings.Builder
	for _, h := range hops {
		fmt.Fprintf(&sb, "%d %s\n", h.StatusCode, h.Request.URL)
	}
	return sb.String()
}
