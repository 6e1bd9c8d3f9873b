package module

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/gatehouse-proxy/gatehouse/policies"
)

// decision is one audited outcome of the pipeline. Every request that
// reaches the handler produces exactly one audit line through the named
// logger http.handlers.gatehouse.audit. It never carries a token, a cookie
// value or a query string.
type decision struct {
	id     string
	start  time.Time
	method string
	path   string
	user   string // subject
	email  string
	result string // allow, public, login, deny, reject, internal, error
	reason string
	logged bool

	grants       []string        // resources of the user's active grants
	revision     string          // policy revision, when a policy was asked
	cached       bool            // the policy decision came from the cache
	policyReason string          // the policy's own reason for a deny
	offer        string          // resource the deny offered a grant for
	refused      []string        // claims left out at login, and why (never their values)
	input        *policies.Input // with decision_log full
}

// newDecisionID returns 16 random hex characters. It names a decision
// in the audit log and on error pages; it grants nothing, so a fast
// generator (ChaCha8, per goroutine) is enough for it to be unique.
func newDecisionID() string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

// ID returns the decision id, creating it on first use.
func (d *decision) ID() string {
	if d.id == "" {
		d.id = newDecisionID()
	}
	return d.id
}

func (h *Handler) audit(d *decision) {
	if d.logged {
		return
	}
	d.logged = true
	ce := h.auditLog.Check(zapcore.InfoLevel, "decision")
	if ce == nil {
		return
	}
	fp := auditFields.Get().(*[]zap.Field)
	defer func() { clear(*fp); auditFields.Put(fp) }()
	fields := append((*fp)[:0],
		zap.String("decision_id", d.ID()),
		zap.String("app", h.App),
		zap.String("user", d.user),
		zap.String("email", d.email),
		zap.String("method", d.method),
		zap.String("path", d.path),
		zap.String("result", d.result),
		zap.String("reason", d.reason),
		zap.Duration("latency", h.now().Sub(d.start)),
	)
	if len(d.grants) > 0 {
		fields = append(fields, zap.Strings("grants", d.grants))
	}
	if d.revision != "" {
		fields = append(fields, zap.String("policy_revision", d.revision))
	}
	if d.cached {
		fields = append(fields, zap.Bool("policy_cached", true))
	}
	if d.policyReason != "" {
		fields = append(fields, zap.String("policy_reason", d.policyReason))
	}
	if d.offer != "" {
		fields = append(fields, zap.String("grant_offer", d.offer))
	}
	if len(d.refused) > 0 {
		fields = append(fields, zap.Strings("claims_refused", d.refused))
	}
	if d.input != nil {
		fields = append(fields, zap.Any("input", d.input))
	}
	ce.Write(fields...)
	*fp = fields
}

// auditFields recycles the field lists of audit lines.
var auditFields = sync.Pool{New: func() any { f := make([]zap.Field, 0, 16); return &f }}
