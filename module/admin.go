package module

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI is `admin.api.gatehouse`: it lets the ops CLI reach an
// embedded grant store that the running Caddy holds open (bbolt allows
// one process). POST /gatehouse/store with a JSON operation. It is served
// only on Caddy's admin endpoint, which should stay on localhost or a
// socket.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.gatehouse",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/gatehouse/store", Handler: caddy.AdminHandlerFunc(serveStoreOp)}}
}

func serveStoreOp(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("POST only")}
	}
	var op gate.StoreOp
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&op); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	var store grants.Store
	grantStores.Range(func(key, value any) bool {
		if k, _ := key.(string); strings.SplitN(k, "\x00", 2)[0] == op.Store {
			store = value.(*grants.Cache).Store()
			return false
		}
		return true
	})
	if store == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("this Caddy has no grant store %s open", op.Store)}
	}
	res, err := op.Run(r.Context(), store, time.Now())
	writeEvents(caddy.Log().Named(auditLogger), "", res.Events...)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(res)
}

// Interface guard.
var _ caddy.AdminRouter = (*AdminAPI)(nil)
