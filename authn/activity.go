package authn

import (
	"net/http"
	"strings"
)

// IsNavigation reports whether a request is a top-level browser navigation,
// the only kind of request that is sent to the IdP to log in. Everything
// else (XHR/fetch, iframes, images, HEAD, POST…) gets a 401 instead, since a
// redirect to a login page cannot help it.
//
// With Fetch Metadata headers (all current browsers) that is a GET with
// Sec-Fetch-Mode: navigate and Sec-Fetch-Dest: document; without them, a GET
// that accepts text/html and is not marked X-Requested-With.
func IsNavigation(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	if mode := r.Header.Get("Sec-Fetch-Mode"); mode != "" {
		return mode == "navigate" && r.Header.Get("Sec-Fetch-Dest") == "document"
	}
	return acceptsHTML(r) && r.Header.Get("X-Requested-With") == ""
}

// IsFormNavigation reports whether a POST is a browser form's submission
// in the top-level window (its answer replaces the page), as opposed to
// a script's fetch or a form posted into a frame: with Fetch Metadata,
// Sec-Fetch-Mode: navigate and Sec-Fetch-Dest: document; without, it
// accepts text/html and is not marked X-Requested-With.
func IsFormNavigation(r *http.Request) bool {
	if r.Method != http.MethodPost {
		return false
	}
	if mode := r.Header.Get("Sec-Fetch-Mode"); mode != "" {
		return mode == "navigate" && r.Header.Get("Sec-Fetch-Dest") == "document"
	}
	return acceptsHTML(r) && r.Header.Get("X-Requested-With") == ""
}

// IsUserActivity reports whether a request shows that a person is at the
// device, which is what keeps a session from idling out: a navigation the
// user made, or a state-changing request (POST, PUT, PATCH, DELETE).
//
// Background polling (GET XHR/fetch), HEAD, OPTIONS, iframes and
// navigations the page made by itself (meta refresh, script reloads: the
// browser omits Sec-Fetch-User for them) are not activity, so a dashboard
// left open still logs out.
func IsUserActivity(r *http.Request) bool {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	case http.MethodGet:
	default:
		return false
	}
	if mode := r.Header.Get("Sec-Fetch-Mode"); mode != "" {
		return mode == "navigate" && r.Header.Get("Sec-Fetch-Dest") == "document" &&
			r.Header.Get("Sec-Fetch-User") == "?1"
	}
	return acceptsHTML(r) && r.Header.Get("X-Requested-With") == ""
}

// WantsHTML reports whether an answer to r should be a page rather than
// JSON: only navigations get pages.
func WantsHTML(r *http.Request) bool {
	if mode := r.Header.Get("Sec-Fetch-Mode"); mode != "" {
		return mode == "navigate"
	}
	return acceptsHTML(r) && r.Header.Get("X-Requested-With") == ""
}

func acceptsHTML(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(v, "text/html") {
			return true
		}
	}
	return false
}
