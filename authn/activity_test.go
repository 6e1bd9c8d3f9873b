package authn

import (
	"net/http"
	"testing"
)

func req(method string, headers ...string) *http.Request {
	r, _ := http.NewRequest(method, "https://app.example/x", nil)
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	return r
}

func TestRequestKinds(t *testing.T) {
	nav := []string{"Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document"}
	userNav := append(append([]string{}, nav...), "Sec-Fetch-User", "?1")
	cases := []struct {
		name                       string
		r                          *http.Request
		navigation, activity, html bool
		formNavigation             bool
	}{
		{"user navigation", req("GET", userNav...), true, true, true, false},
		{"page-initiated navigation (meta refresh)", req("GET", nav...), true, false, true, false},
		{"legacy browser page load", req("GET", "Accept", "text/html,application/xhtml+xml"), true, true, true, false},
		{"fetch", req("GET", "Sec-Fetch-Mode", "cors", "Sec-Fetch-Dest", "empty", "Accept", "*/*"), false, false, false, false},
		{"XHR without fetch metadata", req("GET", "Accept", "text/html", "X-Requested-With", "XMLHttpRequest"), false, false, false, false},
		{"API client", req("GET", "Accept", "application/json"), false, false, false, false},
		{"iframe", req("GET", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "iframe", "Sec-Fetch-User", "?1"), false, false, true, false},
		{"HEAD", req("HEAD", nav...), false, false, true, false},
		{"OPTIONS", req("OPTIONS"), false, false, false, false},
		{"form POST", req("POST", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "document"), false, true, true, true},
		{"legacy browser form POST", req("POST", "Accept", "text/html,*/*"), false, true, true, true},
		{"form POST into an iframe", req("POST", "Sec-Fetch-Mode", "navigate", "Sec-Fetch-Dest", "iframe"), false, true, true, false},
		{"fetch POST", req("POST", "Sec-Fetch-Mode", "cors", "Sec-Fetch-Dest", "empty", "Accept", "text/html"), false, true, false, false},
		{"legacy XHR POST", req("POST", "Accept", "text/html", "X-Requested-With", "XMLHttpRequest"), false, true, false, false},
		{"API DELETE", req("DELETE", "Accept", "application/json"), false, true, false, false},
		{"PUT", req("PUT"), false, true, false, false},
		{"PATCH", req("PATCH"), false, true, false, false},
	}
	for _, c := range cases {
		if got := IsNavigation(c.r); got != c.navigation {
			t.Errorf("%s: IsNavigation = %v, want %v", c.name, got, c.navigation)
		}
		if got := IsUserActivity(c.r); got != c.activity {
			t.Errorf("%s: IsUserActivity = %v, want %v", c.name, got, c.activity)
		}
		if got := WantsHTML(c.r); got != c.html {
			t.Errorf("%s: WantsHTML = %v, want %v", c.name, got, c.html)
		}
		if got := IsFormNavigation(c.r); got != c.formNavigation {
			t.Errorf("%s: IsFormNavigation = %v, want %v", c.name, got, c.formNavigation)
		}
	}
}
