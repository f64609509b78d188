#!/usr/bin/env bash
# Run the whole test suite (unit + end-to-end) in .venv; creates and installs it when needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  $PY -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[server,dev]'
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
