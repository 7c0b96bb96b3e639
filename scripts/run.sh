#!/usr/bin/env bash
# The main job end to end: train the three networks on Fashion-MNIST, export every variant of
# the default profile, benchmark them, render the report and run the CI gate.
# Extra arguments go to `edgekit run` (e.g. --quick, --out DIR, --profile mobile).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/edgekit run "$@"
