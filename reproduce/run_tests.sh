#!/usr/bin/env bash
# The test command of the README: bootstrap the environment if needed, then run the whole suite.
#   bash reproduce/run_tests.sh [pytest args...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(bash "$ROOT/reproduce/setup_env.sh" | tail -n 1)"
cd "$ROOT"
# One torch thread: tiny models gain nothing from two, and tests that launch several processes would oversubscribe.
export MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PY" -m pytest "$@"
