#!/usr/bin/env bash
# The test command of the README: bootstrap the environment if needed, then run the whole suite.
#   bash reproduce/run_tests.sh [pytest args...]
#   bash reproduce/run_tests.sh --families [pytest args...]
# --families: the optional second environment (.venv-families: torch 2.14.1 + torchvision 0.29.1, built on first use
# by `setup_env.sh --families`, ~7 GB) and the tests of the six families whose processors need torchvision
# (VISTA_TEST_FAMILIES; the other four run in the main suite): the family test files unless test paths are given,
# `-m "not slow"` unless -m is given; other pytest args (-q, -x, -k, --durations) pass through.
# The tests run on up to 4 cores (pytest-xdist; VISTA_TEST_WORKERS=N to choose, `-n 0` for one process): each test file
# stays on one worker (--dist loadfile), so its module fixtures are built once; the longest files go first
# (tests/conftest.py SLOW_FILES).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_ARGS=()
if [[ "${1:-}" == "--families" ]]; then
  shift
  ENV_ARGS=(--families)
  export VISTA_TEST_FAMILIES="${VISTA_TEST_FAMILIES:-llava_onevision,qwen2_vl,qwen2_5_vl,qwen3_vl,internvl,smolvlm}"
  paths=0 marker=0
  for arg in "$@"; do
    [[ "$arg" == tests* ]] && paths=1
    [[ "$arg" == -m ]] && marker=1
  done
  (( marker )) || set -- -m "not slow" "$@"
  (( paths )) || set -- "$@" tests/test_environment.py::test_the_families_environment_is_its_lock \
    tests/vista/test_families.py tests/analysis/probes/test_family_probes.py \
    tests/analysis/mi/test_family_mi.py tests/vista/test_lmms_plugin_families.py
fi
workers=1
for arg in "$@"; do [[ "$arg" == -n* || "$arg" == --numprocesses* ]] && workers=0; done
cores="$(nproc)"
(( workers )) && set -- -n "${VISTA_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}" --dist loadfile --no-loadscope-reorder "$@"
PY="$(bash "$ROOT/reproduce/setup_env.sh" "${ENV_ARGS[@]}" | tail -n 1)"
cd "$ROOT"
# One torch thread: tiny models gain nothing from two, and tests that launch several processes would oversubscribe.
export MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PY" -m pytest "$@"
