package module

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse-proxy/gatehouse/gate"
	"github.com/gatehouse-proxy/gatehouse/grants"
)

// auditLogger is the name of the audit log (docs/audit-log.md): one
// decision line for every request that reaches the handler, and event
// lines for what requests and operators did. No line ever carries a
// token, a cookie value or a query string.
const auditLogger = "http.handlers.gatehouse.audit"

// audit writes an Outcome's audit lines (its events, then the decision
// line) and counts it in the metrics.
func (h *Handler) audit(out *gate.Outcome) {
	writeEvents(h.auditLog, h.App, out.Events...)
	if len(out.Events) > 0 {
		recordHistory(h.logger, h.store, h.App, out.Events)
	}
	took := h.now().Sub(out.Audit.Start)
	if h.metrics != nil {
		h.metrics.observe(out, took)
	}
	ce := h.auditLog.Check(zapcore.InfoLevel, "decision")
	if ce == nil {
		return
	}
	a := &out.Audit
	fp := auditFields.Get().(*[]zap.Field)
	defer func() { clear(*fp); auditFields.Put(fp) }()
	fields := append((*fp)[:0],
		zap.String("decision_id", a.ID()),
		zap.String("app", h.App),
		zap.String("user", a.User),
		zap.String("iss", a.Iss),
		zap.String("email", a.Email),
		zap.String("method", a.Method),
		zap.String("path", a.Path),
		zap.String("result", string(out.Result)),
		zap.String("reason", string(out.Reason)),
		zap.Duration("latency", took),
	)
	if len(a.Grants) > 0 {
		fields = append(fields, zap.Strings("grants", a.Grants))
	}
	if a.Revision != "" {
		fields = append(fields, zap.String("policy_revision", a.Revision))
	}
	if a.Cached {
		fields = append(fields, zap.Bool("policy_cached", true))
	}
	if a.PolicyReason != "" {
		fields = append(fields, zap.String("policy_reason", a.PolicyReason))
	}
	if a.Offer != "" {
		fields = append(fields, zap.String("grant_offer", a.Offer))
	}
	if len(a.Refused) > 0 {
		fields = append(fields, zap.Strings("claims_refused", a.Refused))
	}
	if t := a.Token; t != nil {
		fields = append(fields, zap.String("principal", t.Principal), zap.String("client_id", t.ClientID), zap.String("iss", t.Issuer))
		if t.ID != "" {
			fields = append(fields, zap.String("token_id", t.ID))
		}
	}
	if a.IdP != nil {
		fields = append(fields, zap.Int("idp_status", a.IdP.Status), zap.String("idp_error", a.IdP.Code),
			zap.String("idp_error_description", a.IdP.Description))
	}
	if a.Input != nil {
		fields = append(fields, zap.Any("input", a.Input))
	}
	ce.Write(fields...)
	*fp = fields
}

// auditFields recycles the field lists of decision lines.
var auditFields = sync.Pool{New: func() any { f := make([]zap.Field, 0, 16); return &f }}

// writeEvents writes event lines: what happened at info, an operation
// that failed at error. app names the app they happened in ("" for an
// operator's store operation, which concerns every app).
func writeEvents(l *zap.Logger, app string, events ...gate.Event) {
	for _, e := range events {
		countEvent(app, e)
		fields := e.Fields
		if app != "" {
			fields = append([]zap.Field{zap.String("app", app)}, fields...)
		}
		if ce := l.Check(e.Level(), e.Msg); ce != nil {
			ce.Write(fields...)
		}
	}
}

// historyKeeps holds, per grant store, the longest history any site
// using it keeps: every append forgets what is older.
var historyKeeps sync.Map // grants.Store → time.Duration

// keepHistory registers that a site keeps s's history for keep.
func keepHistory(s grants.Store, keep time.Duration) {
	for {
		old, loaded := historyKeeps.LoadOrStore(s, keep)
		if !loaded || old.(time.Duration) >= keep || historyKeeps.CompareAndSwap(s, old, keep) {
			return
		}
	}
}

// recordHistory keeps the evidential events (grants, requests,
// de-provisionings, revocations: docs/evidence.md) in the store's
// history. A failure is logged: the audit line was written anyway.
func recordHistory(l *zap.Logger, s grants.Store, app string, events []gate.Event) {
	if s == nil {
		return
	}
	keep := grants.DefaultHistory
	if v, ok := historyKeeps.Load(s); ok {
		keep = v.(time.Duration)
	}
	now := time.Now()
	for _, e := range events {
		if !gate.Evidential(e) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := s.AppendHistory(ctx, gate.HistoryEntryOf(app, e, now), keep)
		cancel()
		if err != nil {
			l.Error("history: an event was not kept as evidence (it is in the audit log)", zap.String("event", e.Msg), zap.Error(err))
		}
	}
}
