#!/usr/bin/env bash
# Runs every Gatehouse test: unit tests, Rego tests, short fuzz runs and the
# end-to-end tests against real processes (Caddy built from this repo, the
# oidc-provider IdP, Redis, headless Chromium, wrk for a short run of the
# benchmark harness). Installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"

# --- tools the tests need -------------------------------------------------
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v wrk >/dev/null || missing+=(wrk)
if ((${#missing[@]})); then
	echo "test.sh: installing ${missing[*]} (Debian packages)"
	sudo=""
	[[ $(id -u) -eq 0 ]] || sudo="sudo"
	$sudo apt-get update
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y redis-server chromium wrk
fi
command -v node >/dev/null || { echo "test.sh: Node.js is required (apt-get install nodejs npm)" >&2; exit 1; }
(cd e2e/idp && npm ci --no-audit --no-fund --loglevel=error)

# --- tests ----------------------------------------------------------------
start=$(date +%s)
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path '*/node_modules/*'))
[[ -z $unformatted ]] || { echo "test.sh: not gofmt-clean (run gofmt -w):" $unformatted >&2; exit 1; }
go vet ./...
# staticcheck, pinned in go.mod as a tool like the OPA CLI.
go tool staticcheck ./...
# The policy library with the standard OPA CLI (the same version as the
# embedded engine, from go.mod's tool line).
go tool opa check --strict --schema docs/input.schema.json policies/
go tool opa test policies/
# The same library as the running Gatehouse loads it (what users run in CI).
go run ./cmd/gatehouse gatehouse policy check policies/
# Browser tests save screenshots and HTML of failures under .test-output/.
mkdir -p .test-output
# A generous timeout: on a busy machine the e2e package can take several
# times its usual 3-4 minutes, past go test's default of 10.
go test -count=1 -timeout 40m -artifacts -outputdir "$PWD/.test-output" ./...
# The race detector where goroutines share state.
go test -count=1 -timeout 30m -race ./authn/ ./gate/ ./module/ ./policies/ ./grants/
# Each fuzz target, briefly (seed corpora run in every go test). Budgets are
# execution counts, about 10 s each here: a duration-based -fuzztime hits a
# race in Go 1.26's fuzz coordinator (go.dev/issue/75804) that fails a
# target with "context deadline exceeded" and no crasher. FUZZTIME=<dur>
# overrides them all with a duration.
for spec in authn:FuzzCanonicalPath:150000 authn:FuzzSafeReturnPath:120000 authn:FuzzOpenSession:100000 authn:FuzzParseEmail:100000 \
	authn:FuzzNormalizeOrigin:60000 authn:FuzzFindLogin:60000 authn:FuzzLogoutToken:40000 gate:FuzzDuplicateCookies:20000 \
	module:FuzzUnmarshalCaddyfile:20000 gate:FuzzStripManagedHeaders:20000 module:FuzzStepUpPath:30000 gate:FuzzStripOwnCookies:20000 \
	policies:FuzzParseDecision:40000 policies:FuzzProjectionKey:40000 policies:FuzzReadInput:40000 grants:FuzzGrantMemo:30000 \
	gate:FuzzBearerHeader:20000 authn:FuzzParseBearer:20000 gate:FuzzParseFormBody:20000 gate:FuzzChooseIdP:30000 \
	authn:FuzzVerifyDPoP:10000 gate:FuzzSCIMFilter:20000 gate:FuzzSCIMPatch:20000; do
	IFS=: read -r pkg target count <<<"$spec"
	go test -run='^$' -fuzz="^${target}\$" -fuzztime="${FUZZTIME:-${count}x}" -fuzzminimizetime=2000x "./${pkg}/"
done
echo "test.sh: all tests passed in $(($(date +%s) - start))s"
