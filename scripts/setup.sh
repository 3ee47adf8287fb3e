#!/usr/bin/env bash
# Create .venv (if missing) and install exactly the versions in requirements.lock, then distil itself.
# Idempotent: it reinstalls only when the lock or pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.distil-installed
if [ ! -f "$stamp" ] || [ requirements.lock -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
  torch=$(grep -E '^torch==' requirements.lock)
  # The CPU build of torch first: from the indexes pip is configured with when they hold it, else from
  # PyTorch's CPU index (DISTIL_TORCH_INDEX to use another). PyPI's Linux torch is the CUDA build.
  if ! "${pip[@]}" --no-deps "$torch" 2>/dev/null; then
    "${pip[@]}" --no-deps --index-url "${DISTIL_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" "$torch"
  fi
  # --no-deps: the lock lists every package, so nothing unlisted (or of another version) comes in.
  "${pip[@]}" --no-deps -r requirements.lock
  "${pip[@]}" --no-deps -e .
  touch "$stamp"
fi
