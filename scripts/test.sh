#!/usr/bin/env bash
# The default test suite (tiny synthetic data; slow tests are behind `-m slow`).
# Extra arguments go to pytest (e.g. -m slow, -k data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
