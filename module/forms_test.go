package module

import (
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/gatehouse-proxy/gatehouse/gate"
)

// TestResubmitPageCarriesTheFormExactly renders the resubmit page with
// hostile fields and reads it back as a browser's HTML parser does: the
// form posts to the original URL with the original enctype, and carries
// every field, in order, with its exact name and value (line breaks
// come back as a browser sends them, CRLF); file inputs are labelled;
// the page has no script, and its CSP lets the form post to the site.
func TestResubmitPageCarriesTheFormExactly(t *testing.T) {
	h, _ := provision(t, validHandler())
	fields := []gate.FormField{
		{Name: "csrf_token", Value: "a+b/c=="},
		{Name: `"><script>alert(1)</script>`, Value: `"'><img src=x onerror=alert(1)>`},
		{Name: "note", Value: "line 1\r\nline 2\r\n\r\n"},
		{Name: "amp", Value: "&amp; &lt; &#0; ]]> {{.App}} </form>"},
		{Name: "unicode", Value: "été ✓ 😀 \u202e\u00a0"},
		{Name: "spaces", Value: "  leading and trailing  \t"},
		{Name: "item", Value: "1"}, {Name: "item", Value: "2"},
		{Name: "attachment", Value: "report<1>.pdf", File: true, Chosen: true},
		{Name: "empty"},
	}
	for _, c := range []struct{ action, wantAction, enctype string }{
		{"/orders/new?draft=1&x=%2Fy", "/orders/new?draft=1&x=%2Fy", gate.EnctypeMultipart},
		{"/wiki/Foo_(bar)?q='x'", "/wiki/Foo_%28bar%29?q=%27x%27", gate.EnctypeURLEncoded}, // the same URL, escaped
	} {
		w := renderPage(h, true, http.StatusOK, &gate.Answer{Page: "resubmit", Title: "Send your form again", Message: "m",
			SignedIn: true, Data: gate.ResubmitForm{Action: c.action, Enctype: c.enctype, Fields: fields, Files: 1}})
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self'") {
			t.Errorf("CSP %q", csp)
		}
		doc, err := html.Parse(strings.NewReader(w.Body.String()))
		if err != nil {
			t.Fatal(err)
		}
		var forms []*html.Node
		var scripts int
		var walk func(n *html.Node)
		walk = func(n *html.Node) {
			if n.Type == html.ElementNode && n.Data == "form" {
				forms = append(forms, n)
			}
			if n.Type == html.ElementNode && n.Data == "script" {
				scripts++
			}
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				walk(c)
			}
		}
		walk(doc)
		if scripts != 0 {
			t.Errorf("the page has %d scripts:\n%s", scripts, w.Body)
		}
		var form *html.Node
		for _, f := range forms {
			if attr(f, "action") != "/.gatehouse/logout" {
				form = f
			}
		}
		if form == nil || attr(form, "method") != "post" || attr(form, "action") != c.wantAction || attr(form, "enctype") != c.enctype {
			t.Fatalf("the form: %v\n%s", form, w.Body)
		}
		var got []gate.FormField
		var labels, buttons int
		var inputs func(n *html.Node)
		inputs = func(n *html.Node) {
			if n.Type == html.ElementNode {
				switch n.Data {
				case "input":
					f := gate.FormField{Name: attr(n, "name"), Value: attr(n, "value")}
					if attr(n, "type") == "file" {
						f.File, f.Value = true, ""
					} else if attr(n, "type") != "hidden" {
						t.Errorf("a visible input: %v", n.Attr)
					}
					got = append(got, f)
				case "label":
					labels++
				case "button":
					if attr(n, "name") != "" {
						t.Error("the submit button has a name: it would add a field")
					}
					buttons++
				}
			}
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				inputs(c)
			}
		}
		inputs(form)
		if len(got) != len(fields) || labels != 1 || buttons != 1 {
			t.Fatalf("%d inputs, %d labels, %d buttons:\n%s", len(got), labels, buttons, w.Body)
		}
		for i, f := range fields {
			want := gate.FormField{Name: f.Name, Value: strings.ReplaceAll(f.Value, "\r\n", "\n"), File: f.File}
			if f.File {
				want.Value = ""
			}
			if got[i] != want {
				t.Errorf("field %d: %+v, want %+v", i, got[i], want)
			}
		}
		if !strings.Contains(w.Body.String(), "you had chosen report&lt;1&gt;.pdf") {
			t.Errorf("the file to choose again is not named:\n%s", w.Body)
		}
	}
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}
