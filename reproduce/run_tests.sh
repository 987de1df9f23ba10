#!/usr/bin/env bash
# The test command of the README: bootstrap the environment if needed, then run the whole suite.
#   bash reproduce/run_tests.sh [pytest args...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(bash "$ROOT/reproduce/setup_env.sh" | tail -n 1)"
cd "$ROOT"
export MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" -m pytest "$@"
