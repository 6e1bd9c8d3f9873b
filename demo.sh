#!/usr/bin/env bash
# Runs the Gatehouse demo: the local OpenID Provider, a sample legacy app and
# Gatehouse in front of it, on https://localhost:8443 (see the README). It
# listens on loopback only and keeps all its state in .demo/.
set -euo pipefail
cd "$(dirname "$0")"
command -v go >/dev/null || { echo "demo.sh: Go is required" >&2; exit 1; }
command -v node >/dev/null || { echo "demo.sh: Node.js 22 LTS or later is required (apt-get install nodejs npm)" >&2; exit 1; }
# The OpenID Provider (oidc-provider 9) supports Node.js 22 LTS and later;
# 20.19 and later run it, with an "Unsupported runtime" warning.
node_version=$(node -p 'process.versions.node')
IFS=. read -r node_major node_minor _ <<<"$node_version"
if ((node_major < 20 || (node_major == 20 && node_minor < 19))); then
	echo "demo.sh: Node.js $node_version is too old for the OpenID Provider: install Node.js 22 LTS or later (20.19 is the least that runs it)" >&2
	exit 1
fi
if ((node_major < 22)); then
	echo "demo.sh: note: Node.js $node_version runs the OpenID Provider, which supports 22 LTS and later: it will say \"Unsupported runtime\"" >&2
fi
[[ -d e2e/idp/node_modules/oidc-provider ]] || (cd e2e/idp && npm ci --no-audit --no-fund --loglevel=error)
go build -o .cache/demo ./e2e/demo
exec .cache/demo "$@"
