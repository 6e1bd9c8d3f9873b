package policies

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/types"
)

// Default queries.
const (
	DefaultQuery         = "data.gatehouse.decision"
	DefaultApprovalQuery = "data.gatehouse.approval"
	DefaultReviewQuery   = "data.gatehouse.review"
)

// ErrLoad marks a policy directory that cannot serve: unreadable, not
// valid Rego, refused by the compiler or the type checker.
var ErrLoad = errors.New("policies: cannot load policy")

// Options say what to load and ask.
type Options struct {
	// Query is the decision query; default DefaultQuery.
	Query string
	// ApprovalQuery is asked about access requests; default
	// DefaultApprovalQuery. A policy need not define it.
	ApprovalQuery string
	// ReviewQuery is asked who may review which access (review.go);
	// default DefaultReviewQuery. A policy need not define it.
	ReviewQuery string
	// Timeout bounds one evaluation; default 100ms.
	Timeout time.Duration
	// CacheSize is how many decisions a revision keeps: 0 means
	// DefaultCacheSize, a negative number turns the cache off.
	CacheSize int
}

func (o *Options) defaults() {
	if o.Query == "" {
		o.Query = DefaultQuery
	}
	if o.ApprovalQuery == "" {
		o.ApprovalQuery = DefaultApprovalQuery
	}
	if o.ReviewQuery == "" {
		o.ReviewQuery = DefaultReviewQuery
	}
	if o.Timeout <= 0 {
		o.Timeout = 100 * time.Millisecond
	}
}

// Revision is one compiled, prepared state of a policy directory. It is
// immutable and safe for concurrent use.
type Revision struct {
	// ID is a digest of every loaded file's name and content: the same
	// files give the same ID on every node.
	ID string
	// Loaded is when this revision was compiled.
	Loaded time.Time
	// Files lists the loaded files, relative to the directory.
	Files []string
	// Warnings are things that load but deserve attention, such as
	// non-deterministic built-ins.
	Warnings []string

	opts    Options
	dir     string         // as given to Load: file names are relative to it
	reads   *projection    // what the decision can read of the input; nil: all of it
	noCache string         // why decisions are not cached
	cache   *decisionCache // nil: off
	// prefetch: the decision reads now_minute but not now, so the next
	// minute's decisions can be made ahead (cache.go).
	prefetch bool
	// clocked: the decision query on the policy's clock copy, which says
	// whether an evaluation read the time (clock.go); nil: none.
	clocked     *rego.PreparedEvalQuery
	prefetching atomic.Bool
	prefetched  atomic.Uint64
	compiler    *ast.Compiler
	store       storage.Store
	decision    rego.PreparedEvalQuery
	approval    *rego.PreparedEvalQuery
	review      *rego.PreparedEvalQuery
}

// skipFile leaves out what is not policy: tests, hidden files (editor swap
// files, Kubernetes' ..data), and backups.
func skipFile(abspath string, info fs.FileInfo, depth int) bool {
	name := info.Name()
	if depth > 0 && (strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~")) {
		return true
	}
	if info.IsDir() {
		return name == "testdata" && depth > 0
	}
	return strings.HasSuffix(name, "_test.rego")
}

// Load compiles the .rego files (tests excluded) and data.json/data.yaml
// documents under dir into a Revision. Whatever the compiler or the type
// checker can prove wrong is refused here, with file and line, including
// a decision query whose value can never be a boolean or an object.
func Load(ctx context.Context, dir string, opts Options) (*Revision, error) {
	opts.defaults()
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLoad, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", ErrLoad, dir)
	}
	res, err := loader.NewFileLoader().
		WithRegoVersion(ast.RegoV1).
		WithFollowSymlinks(true).
		WithProcessAnnotation(true).
		Filtered([]string{dir}, skipFile)
	if err != nil {
		var errs loader.Errors
		if errors.As(err, &errs) {
			var asts ast.Errors
			for _, e := range errs {
				if ae, ok := e.(*ast.Error); ok {
					asts = append(asts, ae)
				}
			}
			if len(asts) == len(errs) {
				return nil, fmt.Errorf("%w: %w", ErrLoad, formatErrors(asts, dir))
			}
		}
		// Name files relative to the policy directory, as compile errors do.
		msg := strings.ReplaceAll(err.Error(), filepath.Clean(dir)+string(filepath.Separator), "")
		return nil, fmt.Errorf("%w: %s", ErrLoad, msg)
	}
	if len(res.Modules) == 0 {
		return nil, fmt.Errorf("%w: no .rego files in %s", ErrLoad, dir)
	}
	modules := make(map[string]*ast.Module, len(res.Modules))
	raw := make(map[string][]byte, len(res.Modules))
	var files []string
	for _, f := range res.Modules {
		rel, err := filepath.Rel(dir, f.Name)
		if err != nil {
			rel = f.Name
		}
		modules[rel] = f.Parsed
		raw[rel] = f.Raw
		files = append(files, rel)
	}
	sort.Strings(files)
	digest := sha256.New()
	for _, rel := range files {
		fmt.Fprintf(digest, "%s\x00%d\x00", rel, len(raw[rel]))
		digest.Write(raw[rel])
	}
	docs, err := canonicalJSON(res.Documents)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLoad, err)
	}
	digest.Write(docs)

	schemas := ast.NewSchemaSet()
	schemas.Put(ast.SchemaRootRef, inputSchema())
	compiler := ast.NewCompiler().
		WithSchemas(schemas).
		WithEnablePrintStatements(false).
		WithUseTypeCheckAnnotations(true)
	if compiler.Compile(modules); compiler.Failed() {
		return nil, fmt.Errorf("%w: %w", ErrLoad, formatErrors(compiler.Errors, dir))
	}
	rev := &Revision{
		ID:       hex.EncodeToString(digest.Sum(nil))[:12],
		Loaded:   time.Now(),
		Files:    files,
		opts:     opts,
		dir:      dir,
		compiler: compiler,
		store:    inmem.NewFromObjectWithOpts(res.Documents, inmem.OptReturnASTValuesOnRead(true)),
	}
	decisionRef, err := ast.ParseRef(opts.Query)
	if err != nil {
		return nil, fmt.Errorf("%w: policy_query %q: %v", ErrLoad, opts.Query, err)
	}
	if len(compiler.GetRules(decisionRef)) == 0 {
		return nil, fmt.Errorf("%w: no rule defines %s", ErrLoad, opts.Query)
	}
	if err := checkDecisionType(compiler, decisionRef, dir); err != nil {
		return nil, err
	}
	rev.reads, rev.noCache = analyse(compiler, decisionRef)
	switch {
	case opts.CacheSize < 0:
		rev.noCache = "policy_cache is off"
	case rev.reads != nil:
		rev.cache = newDecisionCache(cmp.Or(opts.CacheSize, DefaultCacheSize))
		rev.prefetch = rev.reads.reads("now_minute", "") && !rev.reads.reads("now", "")
		if len(rev.reads.clock) > 0 {
			if pq, ok := rev.prepareClocked(ctx, modules, schemas, decisionRef); ok {
				rev.clocked = &pq
			}
		}
	}
	if rev.decision, err = rev.prepare(ctx, decisionRef); err != nil {
		return nil, err
	}
	if approvalRef, err := ast.ParseRef(opts.ApprovalQuery); err == nil && len(compiler.GetRules(approvalRef)) > 0 {
		pq, err := rev.prepare(ctx, approvalRef)
		if err != nil {
			return nil, err
		}
		rev.approval = &pq
	}
	if reviewRef, err := ast.ParseRef(opts.ReviewQuery); err == nil && len(compiler.GetRules(reviewRef)) > 0 {
		pq, err := rev.prepare(ctx, reviewRef)
		if err != nil {
			return nil, err
		}
		rev.review = &pq
	}
	rev.Warnings = nondeterministic(compiler, dir)
	return rev, nil
}

func (r *Revision) prepare(ctx context.Context, ref ast.Ref) (rego.PreparedEvalQuery, error) {
	pq, err := rego.New(
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
		rego.Compiler(r.compiler),
		rego.Store(r.store),
		rego.StrictBuiltinErrors(true),
	).PrepareForEval(ctx)
	if err != nil {
		return pq, fmt.Errorf("%w: preparing %s: %v", ErrLoad, ref, err)
	}
	return pq, nil
}

// LoadErrors are what the parser, the compiler or the type checker
// refused, one "file:line: code: message" each, with files relative to
// the policy directory.
type LoadErrors []string

func (e LoadErrors) Error() string { return strings.Join(e, "; ") }

// formatErrors lists compiler errors as "file:line: message", with paths
// relative to the policy directory.
func formatErrors(errs ast.Errors, dir string) LoadErrors {
	var lines LoadErrors
	for _, e := range errs {
		loc := "?"
		if e.Location != nil {
			f, _ := filepath.Rel(dir, e.Location.File)
			if f == "" || strings.HasPrefix(f, "..") {
				f = e.Location.File
			}
			loc = fmt.Sprintf("%s:%d", f, e.Location.Row)
		}
		lines = append(lines, fmt.Sprintf("%s: %s: %s", loc, e.Code, e.Message))
	}
	return lines
}

// checkDecisionType refuses a decision query that the type checker proves
// can never be a boolean or an object, or whose object value has a field
// the decision does not know.
func checkDecisionType(c *ast.Compiler, ref ast.Ref, dir string) error {
	t := c.TypeEnv.GetByRef(ref)
	if t == nil {
		return nil
	}
	where := ""
	if rules := c.GetRules(ref); len(rules) > 0 && rules[0].Location != nil {
		f, _ := filepath.Rel(dir, rules[0].Location.File)
		where = fmt.Sprintf("%s:%d: ", f, rules[0].Location.Row)
	}
	return checkType(t, where, ref.String())
}

var decisionFields = map[string]bool{"allow": true, "reason": true, "request_grant": true, "step_up": true, "headers": true, "resource": true}

func checkType(t types.Type, where, name string) error {
	switch tt := t.(type) {
	case types.Boolean:
		return nil
	case *types.Object:
		for _, p := range tt.StaticProperties() {
			k, _ := p.Key.(string)
			if !decisionFields[k] {
				return fmt.Errorf("%w: %s%s has a field %q the decision does not know (known: allow, reason, request_grant, step_up, headers, resource)", ErrLoad, where, name, k)
			}
			if k == "allow" && !types.Contains(p.Value, types.B) {
				return fmt.Errorf("%w: %s%s.allow is %s, must be a boolean", ErrLoad, where, name, types.Sprint(p.Value))
			}
		}
		return nil
	case types.Any:
		if len(tt) == 0 { // any type at all: only evaluation can tell
			return nil
		}
		for _, m := range tt {
			if types.Contains(m, types.B) {
				continue
			}
			if err := checkType(m, where, name); err != nil {
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("%w: %s%s is %s, must be a boolean or an object", ErrLoad, where, name, types.Sprint(t))
	}
}

// nonDeterministic are built-ins whose result depends on more than the
// input and data: decisions that use them cannot be replayed or cached.
var nonDeterministic = map[string]string{
	"time.now_ns":        "read the time from input.now",
	"rand.intn":          "",
	"http.send":          "",
	"uuid.rfc4122":       "",
	"opa.runtime":        "",
	"net.lookup_ip_addr": "",
	// These verify certificates against the wall clock, although OPA does
	// not mark them non-deterministic: a cached "valid" would outlive the
	// certificate.
	"crypto.x509.parse_and_verify_certificates":              "",
	"crypto.x509.parse_and_verify_certificates_with_options": "",
}

func nondeterministic(c *ast.Compiler, dir string) []string {
	var out []string
	for _, m := range c.Modules {
		ast.WalkExprs(m, func(e *ast.Expr) bool {
			if !e.IsCall() {
				return false
			}
			name := e.Operator().String()
			hint, ok := nonDeterministic[name]
			if !ok {
				return false
			}
			f, _ := filepath.Rel(dir, e.Location.File)
			msg := fmt.Sprintf("%s:%d: %s is not deterministic: decisions cannot be replayed", f, e.Location.Row, name)
			if hint != "" {
				msg += "; " + hint
			}
			out = append(out, msg)
			return false
		})
	}
	sort.Strings(out)
	return out
}

// Decide evaluates the decision query for input. Any failure, including
// an undefined result or a timeout, is an ErrPolicy: deny.
func (r *Revision) Decide(ctx context.Context, input ast.Value) (Decision, error) {
	v, err := r.eval(ctx, &r.decision, input, nil)
	if err != nil {
		return Decision{}, err
	}
	return parseDecision(v)
}

// Approval evaluates the approval query for input (which carries an
// access_request). A policy without one approves nothing.
func (r *Revision) Approval(ctx context.Context, input ast.Value) (Approval, error) {
	if r.approval == nil {
		return Approval{}, nil
	}
	v, err := r.eval(ctx, r.approval, input, nil)
	if err != nil {
		return Approval{}, err
	}
	return parseApproval(v)
}

func (r *Revision) eval(ctx context.Context, pq *rego.PreparedEvalQuery, input ast.Value, extra []rego.EvalOption) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	rs, err := pq.Eval(ctx, append([]rego.EvalOption{rego.EvalParsedInput(input)}, extra...)...)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: evaluation took longer than %s", ErrPolicy, r.opts.Timeout)
		}
		return nil, fmt.Errorf("%w: %v", ErrPolicy, err)
	}
	switch {
	case len(rs) == 0:
		return nil, fmt.Errorf("%w: the query is undefined for this input", ErrPolicy)
	case len(rs) > 1 || len(rs[0].Expressions) != 1:
		return nil, fmt.Errorf("%w: the query has %d results", ErrPolicy, len(rs))
	}
	return rs[0].Expressions[0].Value, nil
}
