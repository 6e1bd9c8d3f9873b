package policies

import (
	"context"
	"errors"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"
)

// Decisions that do not depend on the time.
//
// input.now and input.now_minute change by themselves. A policy that
// reads them anywhere (the library's working hours) has them in its
// cache key, so without more, every cached decision would end with the
// minute: after an idle minute, every key misses at once. Yet most
// evaluations never reach the time (the library tests the hours only for
// the groups they limit).
//
// So Load also compiles the policy with every reference to input.now and
// input.now_minute replaced by a call to a built-in that returns the
// value and records that it was read, and the cache evaluates that copy.
// An evaluation that read neither made the very steps it would make at
// any other time (evaluation is deterministic, and the time is the only
// thing that differs), so its decision holds at any time: it is cached
// without the time in its key. One that read the time is cached with it,
// as before. Whether an evaluation reads the time depends only on the
// rest of the key, since it goes the same way until it first reads it.
//
// The copy is used only where its reads can all be accounted for: the
// analysis of the compiled copy must find no other reference to either
// field (an import of input.now, say), and no with modifier may replace
// them. Otherwise every decision is keyed by the time, as before.

// clockBuiltins are the built-ins replacing input.now and
// input.now_minute, by field. Their names cannot be written in Rego (an
// identifier cannot start with "@"), so no policy can call or shadow them.
var clockBuiltins = map[string]*ast.Builtin{
	"now":        {Name: "@gatehouse_now", Decl: types.NewFunction(nil, types.N)},
	"now_minute": {Name: "@gatehouse_now_minute", Decl: types.NewFunction(nil, types.N)},
}

// clock is the time one evaluation of the copy reads, and whether it did.
type clock struct {
	now, nowMinute int64
	read           bool
}

type clockCtxKey struct{}

var errNoClock = errors.New("policies: evaluated without a clock")

// clockFunctions are the built-ins' implementations, reading the clock
// from the evaluation's context.
func clockFunctions() []func(*rego.Rego) {
	fn := func(field string) func(*rego.Rego) {
		b := clockBuiltins[field]
		return rego.FunctionDyn(&rego.Function{Name: b.Name, Decl: b.Decl}, func(bctx rego.BuiltinContext, _ []*ast.Term) (*ast.Term, error) {
			c, ok := bctx.Context.Value(clockCtxKey{}).(*clock)
			if !ok {
				return nil, errNoClock
			}
			c.read = true
			if field == "now" {
				return ast.IntNumberTerm(int(c.now)), nil
			}
			return ast.IntNumberTerm(int(c.nowMinute)), nil
		})
	}
	return []func(*rego.Rego){fn("now"), fn("now_minute")}
}

// clockModules copies the modules with each reference to input.now and
// input.now_minute replaced by a call to its clock built-in. It returns
// nil when a with modifier replaces either field: the copy would read the
// clock where the policy means the replacement.
func clockModules(modules map[string]*ast.Module) map[string]*ast.Module {
	out := make(map[string]*ast.Module, len(modules))
	for name, m := range modules {
		m = m.Copy()
		for _, r := range m.Rules {
			replaced := false
			ast.WalkWiths(r, func(w *ast.With) bool {
				ref, ok := w.Target.Value.(ast.Ref)
				replaced = replaced || ok && clockField(ref) != ""
				return replaced
			})
			if replaced {
				return nil
			}
			ast.WalkTerms(r, func(t *ast.Term) bool {
				ref, ok := t.Value.(ast.Ref)
				if !ok || clockField(ref) == "" {
					return false
				}
				t.Value = ast.Call{ast.NewTerm(ast.Ref{ast.VarTerm(clockBuiltins[clockField(ref)].Name)})}
				return true
			})
		}
		out[name] = m
	}
	return out
}

// clockField is "now" or "now_minute" when ref is exactly input.now or
// input.now_minute.
func clockField(ref ast.Ref) string {
	if len(ref) != 2 || !ref[0].Equal(ast.InputRootDocument) {
		return ""
	}
	if s, ok := ref[1].Value.(ast.String); ok && clockBuiltins[string(s)] != nil {
		return string(s)
	}
	return ""
}

// prepareClocked compiles the clock copy of the modules and prepares the
// decision query on it. ok is false when the copy cannot account for every
// read of the time: then there is none.
func (r *Revision) prepareClocked(ctx context.Context, modules map[string]*ast.Module, schemas *ast.SchemaSet, query ast.Ref) (pq rego.PreparedEvalQuery, ok bool) {
	copied := clockModules(modules)
	if copied == nil {
		return pq, false
	}
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = append(caps.Builtins, clockBuiltins["now"], clockBuiltins["now_minute"])
	c := ast.NewCompiler().
		WithSchemas(schemas).
		WithEnablePrintStatements(false).
		WithUseTypeCheckAnnotations(true).
		WithCapabilities(caps)
	if c.Compile(copied); c.Failed() {
		return pq, false
	}
	if reads, _ := analyse(c, query); reads == nil || reads.reads("now", "") || reads.reads("now_minute", "") {
		return pq, false
	}
	opts := append([]func(*rego.Rego){
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(query)))),
		rego.Compiler(c),
		rego.Store(r.store),
		rego.StrictBuiltinErrors(true),
	}, clockFunctions()...)
	pq, err := rego.New(opts...).PrepareForEval(ctx)
	return pq, err == nil
}
