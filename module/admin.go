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
// one process). POST /gatehouse/store with a JSON operation; the answer
// is 200 with {"held": false} when this Caddy does not hold the store,
// else {"held": true, "result": …} or {"held": true, "error": "…"} when
// the operation failed. It is served only on Caddy's admin endpoint,
// which should stay on localhost or, better, a Unix socket.
type AdminAPI struct{}

// storeOpPath is the admin route of store operations.
const storeOpPath = "/gatehouse/store"

// storeOpAnswer is the admin route's answer.
type storeOpAnswer struct {
	Held   bool                `json:"held"`
	Result *gate.StoreOpResult `json:"result,omitempty"`
	Error  string              `json:"error,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.gatehouse",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: storeOpPath, Handler: caddy.AdminHandlerFunc(serveStoreOp)}}
}

func serveStoreOp(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("POST only")}
	}
	var op gate.StoreOp
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&op); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	store := heldStore(op.Store)
	var ans storeOpAnswer
	if store != nil {
		res, err := op.Run(r.Context(), store, time.Now())
		writeEvents(caddy.Log().Named(auditLogger), "", res.Events...)
		recordHistory(caddy.Log().Named("http.handlers.gatehouse"), store, "", res.Events)
		ans = storeOpAnswer{Held: true, Result: res}
		if err != nil {
			ans = storeOpAnswer{Held: true, Error: err.Error()}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(ans)
}

// heldStore is the grant store this process holds for a grants URL: the
// same file, however its URL spells the path, or the same URL.
func heldStore(rawURL string) grants.Store {
	want, err := grants.ParseURL(rawURL)
	if err != nil {
		return nil
	}
	var store grants.Store
	grantStores.Range(func(key, value any) bool {
		k, _ := key.(string)
		held := strings.SplitN(k, "\x00", 2)[0]
		if su, err := grants.ParseURL(held); err == nil && (held == rawURL || su.Kind == "file" && su.Path == want.Path) {
			store = value.(*grants.Cache).Store()
			return false
		}
		return true
	})
	return store
}

// Interface guard.
var _ caddy.AdminRouter = (*AdminAPI)(nil)
