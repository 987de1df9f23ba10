#!/usr/bin/env bash
# Make sure a Python environment with vista installed exists, then print its interpreter path.
#
#   bash reproduce/setup_env.sh            # bootstrap if needed; last stdout line: the python to use
#
# Order of preference:
#   1. an active conda env (CONDA_PREFIX) that already has vista importable (see environment.yml);
#   2. the project's .venv, created here with pip if missing or out of date.
# torch is installed first and pinned (VISTA_TORCH_SPEC, default torch==2.13.0, the CPU build on these
# machines); an unpinned torch would pull a multi-GB CUDA build. lmms-eval is installed without its
# dependencies, because its torchvision requirement replaces or breaks the CPU torch.
# All progress goes to stderr so that callers can capture stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_SPEC="${VISTA_TORCH_SPEC:-torch==2.13.0}"
LMMS_SPEC="${VISTA_LMMS_SPEC:-lmms-eval==0.7.3}"
# lmms-eval's light runtime dependencies (it is installed with --no-deps, see above).
LMMS_DEPS=(evaluate loguru pytablewriter sacrebleu scikit-learn nltk numexpr sentencepiece tenacity
           zstandard python-dotenv aiohttp lxml protobuf jsonlines openai)
log() { echo "[setup_env] $*" >&2; }

stamp_of() { cat "$ROOT/pyproject.toml" "$ROOT/reproduce/setup_env.sh" | sha256sum | cut -c1-16; }

install_lmms_eval() {  # $1 = python interpreter
  "$1" -m pip install -q --no-deps "$LMMS_SPEC" >&2
  "$1" -m pip install -q "${LMMS_DEPS[@]}" >&2
}

install_into() {  # $1 = python interpreter
  local py="$1"
  log "installing into $("$py" -c 'import sys; print(sys.prefix)') (a few minutes on a fresh machine)"
  "$py" -m pip install -q --upgrade pip >&2
  "$py" -m pip install -q "$TORCH_SPEC" >&2
  "$py" -m pip install -q -e "$ROOT[dev,lora]" >&2
  install_lmms_eval "$py"
  if "$py" -m pip show -q torchvision >/dev/null 2>&1; then
    log "removing torchvision (breaks transformers on the CPU torch build; see README)"
    "$py" -m pip uninstall -y -q torchvision >&2
  fi
  "$py" - <<'PY' >&2
import torch, transformers, vista, analysis  # noqa: F401
print(f"[setup_env] torch {torch.__version__}, transformers {transformers.__version__}: ok")
PY
}

if [[ -n "${CONDA_PREFIX:-}" ]] && command -v python >/dev/null 2>&1 \
   && python -c "import vista, analysis" >/dev/null 2>&1; then
  log "using the active conda env $CONDA_PREFIX"
  if ! python -c "import lmms_eval" >/dev/null 2>&1; then
    log "adding lmms-eval (without torchvision) to the conda env"
    install_lmms_eval "$(command -v python)"
  fi
  command -v python
  exit 0
fi

VENV="$ROOT/.venv"
PY="$VENV/bin/python"
if [[ ! -x "$PY" ]]; then
  BASE_PY="${VISTA_BASE_PYTHON:-$(command -v python3.11 || command -v python3)}"
  "$BASE_PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || { log "need Python >= 3.10, found $("$BASE_PY" --version)"; exit 1; }
  log "creating $VENV with $("$BASE_PY" --version)"
  "$BASE_PY" -m venv "$VENV"
fi
if [[ "$(cat "$VENV/.vista-stamp" 2>/dev/null)" != "$(stamp_of)" ]]; then
  install_into "$PY"
  stamp_of > "$VENV/.vista-stamp"
fi
echo "$PY"
