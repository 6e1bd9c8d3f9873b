#!/usr/bin/env bash
# Runs the Gatehouse demo: the local OpenID Provider, a sample legacy app and
# Gatehouse in front of it, on https://localhost:8443 (see the README).
set -euo pipefail
cd "$(dirname "$0")"
command -v go >/dev/null || { echo "demo.sh: Go is required" >&2; exit 1; }
command -v node >/dev/null || { echo "demo.sh: Node.js is required (apt-get install nodejs npm)" >&2; exit 1; }
[[ -d e2e/idp/node_modules/oidc-provider ]] || (cd e2e/idp && npm ci --no-audit --no-fund --loglevel=error)
go build -o .cache/demo ./e2e/demo
exec .cache/demo "$@"
