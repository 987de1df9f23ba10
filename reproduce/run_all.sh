#!/usr/bin/env bash
# The main job: the whole VISTA study end to end.
#
#   bash reproduce/run_all.sh [--profile tiny|tiny-long|small|tiny-ablation|llava-1.5-7b|tinyllava-3b|llava-1.5-7b-ablation] [--seeds N] [--quick]
#                             [--out DIR]
#                             [--dry-run] [--force STAGE]
#
# tiny (default) runs on CPU in minutes: synthetic world, tiny foundations, baseline / VISTA / VISTA-cosine through
# both training stages for several seeds, lmms-eval on the local suite, probes, MI, theory, tables and REPORT.md.
# The paper presets run the same stages on GPUs with the real models and data (see README); --dry-run prints every
# command without running it. Stages are resumable: a rerun skips every stage whose outputs are complete.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(bash "$ROOT/reproduce/setup_env.sh" | tail -n 1)"
cd "$ROOT"
# One torch thread per process unless set: the tiny CPU models run fastest that way (measured; see README).
export MPLBACKEND=Agg HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PY" "$ROOT/reproduce/pipeline.py" "$@"
