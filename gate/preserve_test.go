package gate

import (
	"bytes"
	"context"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

const formCookie = "__Secure-gatehouse_form"

// formGate is the payroll site's gate keeping forms up to the default
// size.
func formGate(t *testing.T, change func(*Config)) *testGate {
	t.Helper()
	return newTestGate(t, func(c *Config) {
		c.PreservePost = DefaultPreservePost
		if change != nil {
			change(c)
		}
	})
}

// formPost is a browser's form submission from one of the site's own
// pages: a same-origin top-level navigation.
func formPost(target, contentType, body string, cookies ...*http.Cookie) *http.Request {
	r := request(http.MethodPost, target, true, cookies...)
	r.Body = ioNopCloser(body)
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Type", contentType)
	r.Header.Set("Origin", "https://app.example.com")
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	return r
}

func ioNopCloser(s string) *nopCloser { return &nopCloser{strings.NewReader(s)} }

type nopCloser struct{ *strings.Reader }

func (nopCloser) Close() error { return nil }

// idleSession is a browser whose session (alice's) idled out a minute
// ago. (Sealing stamps the wall clock: a test that moved the clock could
// not sign in again.)
func (tg *testGate) idleSession(t *testing.T) []*http.Cookie {
	t.Helper()
	s := tg.session()
	s.Created, s.LastSeen = tg.clock.now().Add(-time.Hour).Unix(), tg.clock.now().Add(-16*time.Minute).Unix()
	return []*http.Cookie{tg.cookie(t, s)}
}

// events returns the outcome's events named msg.
func (o Outcome) events(msg string) []Event {
	var out []Event
	for _, e := range o.Events {
		if e.Msg == msg {
			out = append(out, e)
		}
	}
	return out
}

// eventField is the value of an event's field, as the audit line has it.
func eventField(e Event, key string) any {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range e.Fields {
		f.AddTo(enc)
	}
	return enc.Fields[key]
}

// signInFromResubmit follows a sign-in that start began and returns the
// resubmit page the callback leads to, with the browser's cookies.
func (tg *testGate) signInAgain(t *testing.T, start Outcome, jar []*http.Cookie, claims map[string]any) (Outcome, []*http.Cookie) {
	t.Helper()
	if start.Kind != Login || !strings.HasPrefix(start.Location, tg.idp.URL+"/auth?") {
		t.Fatalf("not a sign-in: %s %d %s %q", start.Kind, start.Status, start.Reason, start.Location)
	}
	jar = merge(jar, start.Cookies)
	cb, _ := url.Parse(tg.idp.signIn(t, start.Location, tg.clock.now(), claims))
	out := tg.handle(request(http.MethodGet, cb.RequestURI(), true, jar...))
	jar = merge(jar, out.Cookies)
	if out.Result != ResultLoginOK || out.Location != PathResubmit {
		t.Fatalf("callback: %s %s → %q, want the resubmit page", out.Result, out.Reason, out.Location)
	}
	out = tg.handle(request(http.MethodGet, PathResubmit, true, jar...))
	return out, merge(jar, out.Cookies)
}

// TestFormKeptAndSentAgain: a form posted after the session idled out is
// kept, the user signs in again (asked for the password), and the
// resubmit page offers exactly the fields sent, in order, to the URL
// they were sent to; once only.
func TestFormKeptAndSentAgain(t *testing.T) {
	tg := formGate(t, nil)
	jar := tg.idleSession(t)
	body := "csrf_token=app-token-123&item=a%26b&item=second&note=line+1%0D%0Aline+2&%C3%A9t%C3%A9=%E2%9C%93&empty=&go=Save"
	out := tg.handle(formPost("/orders/new?draft=1", EnctypeURLEncoded, body, jar...))
	want(t, "a form after idling out", out, Login, http.StatusFound, ResultLogin, Reason(authn.ReasonIdle))
	if !strings.Contains(out.Location, "prompt=login") {
		t.Errorf("the sign-in after idling out does not ask for the password: %q", out.Location)
	}
	c := out.cookie(formCookie)
	if c == nil || c.Path != "/.gatehouse/" || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.MaxAge <= 600 {
		t.Fatalf("the kept form's cookie: %+v", c)
	}
	kept := out.events(EventFormKept)
	if len(kept) != 1 || eventField(kept[0], "user") != "alice" || eventField(kept[0], "path") != "/orders/new" ||
		eventField(kept[0], "fields") != int64(7) || eventField(kept[0], "bytes") != int64(len(body)) {
		t.Fatalf("form kept event: %+v", out.Events)
	}
	for _, e := range out.Events {
		for _, secret := range []string{"app-token-123", "second", "draft", "csrf_token"} {
			if strings.Contains(fmt.Sprint(e.Fields), secret) {
				t.Errorf("the audit event carries %q: %v", secret, e.Fields)
			}
		}
	}

	page, jar := tg.signInAgain(t, out, jar, nil)
	want(t, "the resubmit page", page, Page, http.StatusOK, ResultInternal, ReasonFormRestored)
	form, ok := page.Answer.Data.(ResubmitForm)
	wantFields := []FormField{{Name: "csrf_token", Value: "app-token-123"}, {Name: "item", Value: "a&b"}, {Name: "item", Value: "second"},
		{Name: "note", Value: "line 1\r\nline 2"}, {Name: "été", Value: "✓"}, {Name: "empty"}, {Name: "go", Value: "Save"}}
	if !ok || form.Action != "/orders/new?draft=1" || form.Enctype != EnctypeURLEncoded || !reflect.DeepEqual(form.Fields, wantFields) || form.Files != 0 {
		t.Fatalf("resubmit form: %+v", page.Answer.Data)
	}
	if page.Answer.Page != "resubmit" || !page.Answer.SignedIn || page.Answer.Return != "/orders/new?draft=1" {
		t.Errorf("resubmit answer: %+v", page.Answer)
	}
	if c := page.cookie(formCookie); c == nil || c.MaxAge >= 0 {
		t.Errorf("the resubmit page does not clear the form's cookie: %+v", page.Cookies)
	}
	if len(page.events(EventFormRestored)) != 1 {
		t.Errorf("form restored event: %+v", page.Events)
	}

	// A replay of the page's cookie finds nothing: the form is sent once.
	replay := tg.handle(request(http.MethodGet, PathResubmit, true, append(jar, c)...))
	want(t, "replayed", replay, BadRequest, http.StatusGone, ResultInternal, ReasonFormGone)
	if replay.Answer.Data != nil {
		t.Errorf("a replay shows the form: %+v", replay.Answer)
	}
	// Without the cookie: nothing kept here.
	none := tg.handle(request(http.MethodGet, PathResubmit, true, jar...))
	want(t, "no form", none, BadRequest, http.StatusNotFound, ResultInternal, ReasonFormNone)
}

// TestFormKeptAfterTheLifetime: a session that reached its lifetime
// keeps its form too.
func TestFormKeptAfterTheLifetime(t *testing.T) {
	tg := formGate(t, nil)
	s := tg.session()
	s.Created = tg.clock.now().Add(-12 * time.Hour).Unix()
	out := tg.handle(formPost("/x", EnctypeURLEncoded, "a=1", tg.cookie(t, s)))
	want(t, "past the lifetime", out, Login, http.StatusFound, ResultLogin, Reason(authn.ReasonLifetime))
	if len(out.events(EventFormKept)) != 1 || out.cookie(formCookie) == nil {
		t.Errorf("not kept: %+v", out.Events)
	}
}

// TestFormOtherUser: when someone else signs in, the kept form is
// deleted unseen, and the page says so; the right user finds nothing
// afterwards.
func TestFormOtherUser(t *testing.T) {
	tg := formGate(t, nil)
	jar := tg.idleSession(t)
	out := tg.handle(formPost("/orders", EnctypeURLEncoded, "secret=alice-data", jar...))
	page, _ := tg.signInAgain(t, out, jar, map[string]any{"sub": "bob", "email": "bob@example.com"})
	want(t, "bob signs in", page, Deny, http.StatusForbidden, ResultDeny, ReasonFormOtherUser)
	if page.Answer.Data != nil || strings.Contains(fmt.Sprintf("%+v", page.Answer), "alice-data") {
		t.Errorf("bob sees alice's form: %+v", page.Answer)
	}
	dropped := page.events(EventFormDropped)
	if len(dropped) != 1 || eventField(dropped[0], "why") != string(ReasonFormOtherUser) || eventField(dropped[0], "user") != "alice" {
		t.Errorf("form dropped event: %+v", page.Events)
	}
	if c := page.cookie(formCookie); c == nil || c.MaxAge >= 0 {
		t.Errorf("the cookie of the dropped form is not cleared: %+v", page.Cookies)
	}
	// It is gone from the store: alice, signing in now with the old
	// cookie, gets nothing.
	again := tg.handle(request(http.MethodGet, PathResubmit, true, append(jar, out.cookie(formCookie))...))
	page, _ = tg.signInAgain(t, again, append(jar, out.cookie(formCookie)), nil)
	want(t, "alice afterwards", page, BadRequest, http.StatusGone, ResultInternal, ReasonFormGone)
}

// TestFormExpires: a kept form waits ten minutes by the gate's clock.
func TestFormExpires(t *testing.T) {
	for _, c := range []struct {
		wait   time.Duration
		reason Reason
	}{{10*time.Minute - time.Second, ReasonFormRestored}, {10 * time.Minute, ReasonFormGone}, {40 * time.Minute, ReasonFormGone}} {
		tg := formGate(t, nil)
		out := tg.handle(formPost("/orders", EnctypeURLEncoded, "a=1", tg.idleSession(t)...))
		tg.clock.add(c.wait)
		// The user comes back, signed in again.
		fresh := tg.session()
		fresh.Created, fresh.LastSeen = tg.clock.now().Unix(), tg.clock.now().Unix()
		page := tg.handle(request(http.MethodGet, PathResubmit, true, tg.cookie(t, fresh), out.cookie(formCookie)))
		if page.Reason != c.reason {
			t.Errorf("after %s: %s %d %s, want %s", c.wait, page.Kind, page.Status, page.Reason, c.reason)
		}
	}
}

// TestFormDropped: what is not kept, and why. Nothing is kept (no
// cookie, no "form kept"), the audit says why, and a browser is told.
func TestFormDropped(t *testing.T) {
	const body = "csrf=t&a=1"
	type request_ struct {
		r      *http.Request
		why    Reason // "" for no event at all
		status int
	}
	tg := formGate(t, nil)
	jar := tg.idleSession(t)
	session := cookieNamed(jar, "__Host-gatehouse")
	post := func(change func(r *http.Request)) *http.Request {
		r := formPost("/orders", EnctypeURLEncoded, body, session)
		if change != nil {
			change(r)
		}
		return r
	}
	header := func(kv ...string) func(*http.Request) {
		return func(r *http.Request) {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i+1] == "" {
					r.Header.Del(kv[i])
				} else {
					r.Header[kv[i]] = append(r.Header[kv[i]], kv[i+1])
				}
			}
		}
	}
	set := func(kv ...string) func(*http.Request) {
		return func(r *http.Request) {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i+1] == "" {
					r.Header.Del(kv[i])
				} else {
					r.Header.Set(kv[i], kv[i+1])
				}
			}
		}
	}
	withBody := func(ct, b string) func(*http.Request) {
		return func(r *http.Request) {
			r.Header.Set("Content-Type", ct)
			r.Body, r.ContentLength = ioNopCloser(b), int64(len(b))
		}
	}
	big := strings.Repeat("x", DefaultPreservePost-1)
	tombstone := tg.cookie(t, &authn.Session{Ended: "logout", Created: tg.clock.now().Unix(), LastSeen: tg.clock.now().Unix()})
	cases := map[string]request_{
		"from another site":                {post(set("Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example")), ReasonFormCrossSite, 401},
		"from a sibling subdomain":         {post(set("Sec-Fetch-Site", "same-site", "Origin", "https://evil.app.example.com")), ReasonFormCrossSite, 401},
		"another origin, no fetch site":    {post(set("Sec-Fetch-Site", "", "Origin", "https://evil.example")), ReasonFormCrossSite, 401},
		"another port":                     {post(set("Origin", "https://app.example.com:8443")), ReasonFormCrossSite, 401},
		"another scheme":                   {post(set("Origin", "http://app.example.com")), ReasonFormCrossSite, 401},
		"same origin, but cross-site":      {post(set("Sec-Fetch-Site", "cross-site")), ReasonFormCrossSite, 401},
		"typed into the address bar":       {post(set("Sec-Fetch-Site", "none")), ReasonFormCrossSite, 401},
		"Origin null, no fetch site":       {post(set("Sec-Fetch-Site", "", "Origin", "null")), ReasonFormCrossSite, 401},
		"neither Origin nor fetch site":    {post(set("Sec-Fetch-Site", "", "Origin", "")), ReasonFormCrossSite, 401},
		"two Origins":                      {post(header("Origin", "https://evil.example")), ReasonFormCrossSite, 401},
		"two fetch sites":                  {post(header("Sec-Fetch-Site", "cross-site")), ReasonFormCrossSite, 401},
		"an unreadable Origin":             {post(set("Origin", "https://app.example.com/path")), ReasonFormCrossSite, 401},
		"a script's fetch":                 {post(set("Sec-Fetch-Mode", "cors", "Sec-Fetch-Dest", "empty")), ReasonFormNotNavigation, 401},
		"a form into an iframe":            {post(set("Sec-Fetch-Dest", "iframe")), ReasonFormNotNavigation, 401},
		"a legacy XHR":                     {post(set("Sec-Fetch-Mode", "", "Sec-Fetch-Dest", "", "Accept", "text/html", "X-Requested-With", "XMLHttpRequest")), ReasonFormNotNavigation, 401},
		"over preserve_post":               {post(withBody(EnctypeURLEncoded, "a="+big)), ReasonFormTooLarge, 401},
		"over preserve_post, no length":    {post(func(r *http.Request) { withBody(EnctypeURLEncoded, "a="+big)(r); r.ContentLength = -1 }), ReasonFormTooLarge, 401},
		"a text/plain form":                {post(withBody("text/plain", "a=1")), ReasonFormUnsupported, 401},
		"a bad escape":                     {post(withBody(EnctypeURLEncoded, "a=%zz")), ReasonFormUnsupported, 401},
		"a NUL":                            {post(withBody(EnctypeURLEncoded, "a=%00")), ReasonFormUnsupported, 401},
		"not UTF-8":                        {post(withBody(EnctypeURLEncoded, "a=%E9t%E9")), ReasonFormUnsupported, 401},
		"a Latin-1 charset":                {post(withBody(EnctypeURLEncoded+"; charset=iso-8859-1", "a=1")), ReasonFormUnsupported, 401},
		"a multipart without boundary":     {post(withBody(EnctypeMultipart, "--x\r\n")), ReasonFormUnsupported, 401},
		"never signed in":                  {formPost("/orders", EnctypeURLEncoded, body), ReasonFormNoSession, 401},
		"signed out":                       {formPost("/orders", EnctypeURLEncoded, body, tombstone), ReasonFormSignedOut, 401},
		"a session cookie that won't open": {formPost("/orders", EnctypeURLEncoded, body, &http.Cookie{Name: "__Host-gatehouse", Value: "forged"}), ReasonFormNoSession, 401},
		"a JSON post (no form)":            {post(withBody("application/json", `{"a":1}`)), "", 401},
	}
	for name, c := range cases {
		out := tg.handle(c.r)
		if out.cookie(formCookie) != nil || len(out.events(EventFormKept)) != 0 || out.Status != c.status || out.Location != "" {
			t.Errorf("%s: %s %d %s, cookies %v, events %v", name, out.Kind, out.Status, out.Reason, out.Cookies, out.Events)
			continue
		}
		dropped := out.events(EventFormDropped)
		if c.why == "" {
			if len(out.Events) != 0 || out.Answer.Note != "" {
				t.Errorf("%s: not a form, but %v %q", name, out.Events, out.Answer.Note)
			}
			continue
		}
		if len(dropped) != 1 || eventField(dropped[0], "why") != string(c.why) {
			t.Errorf("%s: events %v, want form dropped, why %s", name, out.Events, c.why)
		}
		if !strings.HasPrefix(out.Answer.Note, "What you sent was not kept") {
			t.Errorf("%s: the page does not say the form was not kept: %+v", name, out.Answer)
		}
	}

	// A revoked session keeps nothing either.
	live := tg.session()
	lc := tg.cookie(t, live)
	tg.cfg.Grants.NoteSessionRevoked(tg.user(live), live.ID, tg.clock.now().Add(time.Hour))
	out := tg.handle(formPost("/orders", EnctypeURLEncoded, body, lc))
	if d := out.events(EventFormDropped); len(d) != 1 || eventField(d[0], "why") != string(ReasonFormSignedOut) || out.cookie(formCookie) != nil {
		t.Errorf("revoked: %v", out.Events)
	}

	// preserve_post off: as before, nothing kept and nothing said.
	off := newTestGate(t, nil)
	offJar := off.idleSession(t)
	out = off.handle(formPost("/orders", EnctypeURLEncoded, body, offJar...))
	want(t, "preserve_post off", out, Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonIdle))
	if len(out.Events) != 0 || out.cookie(formCookie) != nil || out.Answer.Note != "" {
		t.Errorf("preserve_post off: %v %v %q", out.Events, out.Cookies, out.Answer.Note)
	}
}

// TestFormMultipart: a multipart form is kept with its fields; a file's
// content never is: the page asks for it again, in its place.
func TestFormMultipart(t *testing.T) {
	tg := formGate(t, nil)
	jar := tg.idleSession(t)
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("csrf", "tok")
	fw, _ := mw.CreateFormFile("attachment", "report.pdf")
	_, _ = fw.Write([]byte("%PDF-secret-content"))
	_, _ = mw.CreateFormFile("optional", "") // no file chosen
	_ = mw.WriteField("title", "Q3\r\nreport")
	_ = mw.Close()
	out := tg.handle(formPost("/upload", mw.FormDataContentType(), buf.String(), jar...))
	if len(out.events(EventFormKept)) != 1 || eventField(out.events(EventFormKept)[0], "files") != int64(2) {
		t.Fatalf("multipart not kept: %s %s %v", out.Kind, out.Reason, out.Events)
	}
	page, _ := tg.signInAgain(t, out, jar, nil)
	form, _ := page.Answer.Data.(ResubmitForm)
	wantFields := []FormField{{Name: "csrf", Value: "tok"}, {Name: "attachment", Value: "report.pdf", File: true, Chosen: true},
		{Name: "optional", File: true}, {Name: "title", Value: "Q3\r\nreport"}}
	if form.Enctype != EnctypeMultipart || !reflect.DeepEqual(form.Fields, wantFields) || form.Files != 1 ||
		!strings.Contains(page.Answer.Note, "choose it again") {
		t.Fatalf("multipart resubmit: %+v %q", form, page.Answer.Note)
	}
}

// TestOneFormPerBrowser: a second form kept in the same browser replaces
// the first, which is deleted.
func TestOneFormPerBrowser(t *testing.T) {
	tg := formGate(t, nil)
	jar := tg.idleSession(t)
	first := tg.handle(formPost("/a", EnctypeURLEncoded, "n=1", jar...))
	jar = merge(jar, first.Cookies)
	second := tg.handle(formPost("/b", EnctypeURLEncoded, "n=2", jar...))
	if d := second.events(EventFormDropped); len(d) != 1 || eventField(d[0], "why") != string(ReasonFormReplaced) || eventField(d[0], "path") != "/a" {
		t.Fatalf("the first form was not dropped: %v", second.Events)
	}
	page, _ := tg.signInAgain(t, second, jar, nil)
	if form, _ := page.Answer.Data.(ResubmitForm); form.Action != "/b" || form.Fields[0].Value != "2" {
		t.Errorf("resubmit: %+v", page.Answer.Data)
	}
}

// failingPending is a store that cannot keep or give back pending values.
type failingPending struct {
	grants.Store
}

func (failingPending) PutPending(context.Context, string, []byte, time.Time, time.Duration) error {
	return grants.ErrUnavailable
}

func (failingPending) TakePending(context.Context, string, time.Time) ([]byte, error) {
	return nil, grants.ErrUnavailable
}

// TestKeepFormStoreDown: a store that cannot keep the form fails
// closed: nothing kept, a failure line (never "form kept"), and the
// user is told; one that cannot give it back keeps the cookie for a
// retry.
func TestKeepFormStoreDown(t *testing.T) {
	var store grants.Store
	tg := formGate(t, func(c *Config) {
		store = failingPending{grants.NewMemory()}
		c.Grants = grants.NewCache(store, 50*time.Millisecond)
	})
	t.Cleanup(func() { _ = tg.cfg.Grants.Close() })
	jar := tg.idleSession(t)
	out := tg.handle(formPost("/orders", EnctypeURLEncoded, "a=1", jar...))
	want(t, "store down", out, Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonIdle))
	failed := out.events(EventKeepFormFailed)
	if len(failed) != 1 || !failed[0].Failed || len(out.events(EventFormKept)) != 0 || out.cookie(formCookie) != nil ||
		!strings.Contains(out.Answer.Note, "could not be kept") {
		t.Errorf("store down: %v %v %+v", out.Events, out.Cookies, out.Answer)
	}
	// The resubmit page with a (valid) cookie while the store is down.
	v, _ := tg.forms.refs.Seal(formCookie, "somekey")
	fresh := tg.session()
	fresh.Created, fresh.LastSeen = tg.clock.now().Unix(), tg.clock.now().Unix()
	page := tg.handle(request(http.MethodGet, PathResubmit, true, tg.cookie(t, fresh), &http.Cookie{Name: formCookie, Value: v}))
	want(t, "resubmit, store down", page, Unavailable, http.StatusServiceUnavailable, ResultError, ReasonFormStoreError)
	if page.cookie(formCookie) != nil {
		t.Errorf("the cookie was cleared though the form may still be there: %v", page.Cookies)
	}
}

// TestResubmitNeedsASession: the resubmit page signs in first, and a
// hostile cookie is no form.
func TestResubmitNeedsASession(t *testing.T) {
	tg := formGate(t, nil)
	out := tg.handle(request(http.MethodGet, PathResubmit, true))
	want(t, "no session", out, Login, http.StatusFound, ResultLogin, Reason(authn.ReasonNoCookie))
	out = tg.handle(request(http.MethodGet, PathResubmit, false))
	want(t, "no session, API", out, Login, http.StatusUnauthorized, ResultUnauthenticated, Reason(authn.ReasonNoCookie))
	c := tg.cookie(t, tg.session())
	otherApp := newTestGate(t, func(c *Config) { c.App = "other"; c.PreservePost = DefaultPreservePost })
	sealedElsewhere, _ := otherApp.forms.refs.Seal(formCookie, "k")
	good, _ := tg.forms.refs.Seal(formCookie, "k")
	for name, cookies := range map[string][]*http.Cookie{
		"forged":             {{Name: formCookie, Value: "k"}},
		"another app's":      {{Name: formCookie, Value: sealedElsewhere}},
		"two of them":        {{Name: formCookie, Value: good}, {Name: formCookie, Value: good}},
		"a session's sealed": {{Name: formCookie, Value: c.Value}},
	} {
		out := tg.handle(request(http.MethodGet, PathResubmit, true, append([]*http.Cookie{c}, cookies...)...))
		want(t, name, out, BadRequest, http.StatusNotFound, ResultInternal, ReasonFormNone)
	}
	if out := tg.handle(request(http.MethodPost, PathResubmit, true, c)); out.Status != http.StatusMethodNotAllowed {
		t.Errorf("POST to the resubmit page: %d", out.Status)
	}
}

// TestFormStepUpFirst: when the form's page needs a step-up that the new
// sign-in lacks, the resubmit page asks for it first, keeping the form,
// and shows it once the step-up is done; a step-up that cannot be kept
// for (store down) loses the form saying so.
func TestFormStepUpFirst(t *testing.T) {
	tg := formGate(t, func(c *Config) {
		c.StepUp = authn.StepUpRules{{Paths: globPaths{"/admin/*"}, Requirement: authn.Requirement{ACR: []string{"urn:mfa"}}}}
	})
	jar := tg.idleSession(t)
	out := tg.handle(formPost("/admin/users", EnctypeURLEncoded, "role=admin", jar...))
	if len(out.events(EventFormKept)) != 1 {
		t.Fatalf("not kept: %v", out.Events)
	}
	page, jar := tg.signInAgain(t, out, jar, nil) // a password sign-in: no acr
	want(t, "resubmit without the step-up", page, StepUp, http.StatusFound, ResultStepUp, ReasonStepUpACR)
	if page.cookie(formCookie) != nil || len(page.events(EventStepUpStarted)) != 1 || !strings.Contains(page.Location, "acr_values=urn%3Amfa") {
		t.Fatalf("step-up before resending: %v %v %q", page.Cookies, page.Events, page.Location)
	}
	cb, _ := url.Parse(tg.idp.signIn(t, page.Location, tg.clock.now(), map[string]any{"acr": "urn:mfa"}))
	jar = merge(jar, page.Cookies)
	done := tg.handle(request(http.MethodGet, cb.RequestURI(), true, jar...))
	want(t, "step-up callback", done, Redirect, http.StatusFound, ResultStepUpOK, ReasonNone)
	if done.Location != PathResubmit {
		t.Fatalf("the step-up returns to %q", done.Location)
	}
	jar = merge(jar, done.Cookies)
	page = tg.handle(request(http.MethodGet, PathResubmit, true, jar...))
	want(t, "resubmit after the step-up", page, Page, http.StatusOK, ResultInternal, ReasonFormRestored)
	if form, _ := page.Answer.Data.(ResubmitForm); form.Action != "/admin/users" || len(form.Fields) != 1 || form.Fields[0].Value != "admin" {
		t.Errorf("resubmit: %+v", page.Answer.Data)
	}
}

// putOnce is a store that keeps the first pending value, then fails.
type putOnce struct {
	grants.Store
	puts atomic.Int32
}

func (p *putOnce) PutPending(ctx context.Context, key string, sealed []byte, now time.Time, ttl time.Duration) error {
	if p.puts.Add(1) > 1 {
		return grants.ErrUnavailable
	}
	return p.Store.PutPending(ctx, key, sealed, now, ttl)
}

func TestFormLostWaitingForAStepUp(t *testing.T) {
	store := &putOnce{Store: grants.NewMemory()}
	tg := formGate(t, func(c *Config) {
		c.Grants = grants.NewCache(store, 50*time.Millisecond)
		c.StepUp = authn.StepUpRules{{Paths: globPaths{"/admin/*"}, Requirement: authn.Requirement{ACR: []string{"urn:mfa"}}}}
	})
	t.Cleanup(func() { _ = tg.cfg.Grants.Close() })
	jar := tg.idleSession(t)
	out := tg.handle(formPost("/admin/users", EnctypeURLEncoded, "role=admin", jar...))
	page, _ := tg.signInAgain(t, out, jar, nil)
	want(t, "form lost", page, Unavailable, http.StatusServiceUnavailable, ResultError, ReasonFormStoreError)
	if f := page.events(EventKeepFormFailed); len(f) != 1 || !f[0].Failed || page.Answer.Data != nil {
		t.Errorf("form lost: %v %+v", page.Events, page.Answer)
	}
	if c := page.cookie(formCookie); c == nil || c.MaxAge >= 0 {
		t.Errorf("the lost form's cookie is not cleared: %v", page.Cookies)
	}
}
