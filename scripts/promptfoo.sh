#!/usr/bin/env bash
# promptfoo (MIT, from npm) into ./.promptfoo, for the test that runs its own `eval` against
# `loraeq serve` (tests/test_serve_promptfoo.py). Needs Node.js 20 or newer.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${PROMPTFOO_VERSION:-0.121.20}  # the last release that runs on Node 20 (0.122 needs 22)
mkdir -p .promptfoo
[ -x .promptfoo/node_modules/.bin/promptfoo ] && exit 0
npm install --prefix .promptfoo --no-audit --no-fund --loglevel=error "promptfoo@$VERSION"
