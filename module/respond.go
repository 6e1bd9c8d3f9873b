package module

import (
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/gatehouse-proxy/gatehouse/authn"
	"github.com/gatehouse-proxy/gatehouse/gate"
)

// respond turns an Outcome other than Allow into the HTTP answer: its
// headers and cookies, then a redirect, one of Gatehouse's pages (JSON
// for anything but a browser's navigation) or a document. The audit line
// is written first, so that it exists by the time the client reads the
// answer; probes (Quiet) have none. A Failure goes to Caddy's error handling (500).
func (h *Handler) respond(w http.ResponseWriter, r *http.Request, out *gate.Outcome) error {
	if !out.Quiet {
		h.audit(out)
	}
	if out.Kind == gate.Failure {
		return caddyhttp.Error(http.StatusInternalServerError, out.Err)
	}
	hdr := w.Header()
	for k, v := range out.Header {
		hdr[k] = v
	}
	for _, c := range out.Cookies {
		http.SetCookie(w, c)
	}
	switch {
	case out.Location != "":
		http.Redirect(w, r, out.Location, out.Status)
	case out.Answer != nil:
		h.pages.render(w, authn.WantsHTML(r), out.Status, out.Answer)
	default:
		w.WriteHeader(out.Status)
		_, _ = w.Write(out.Body) // the client may have gone: nothing to do
	}
	return nil
}
