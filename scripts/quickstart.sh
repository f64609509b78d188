#!/usr/bin/env bash
# Fresh machine with Python 3.11: create .venv, install the project, run the seed's example
# on a local deployment (server + 2 clients, 3 rounds) and print the per-round results.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
echo "Installing the project with its server into .venv (pip install -e '.[server]')"
.venv/bin/python -m pip install --quiet -e '.[server]'
exec .venv/bin/python scripts/run_example.py "$@"
