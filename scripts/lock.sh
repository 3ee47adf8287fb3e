#!/usr/bin/env bash
# Refresh requirements.lock from requirements.in with uv (in a throwaway venv): exact versions of every
# package for CPython 3.11 on x86-64 Linux, torch as its CPU build. Review the diff, run the tests, commit.
# Where PyTorch's CPU index cannot be reached, point TORCH_FIND_LINKS at a folder holding the CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
tool=$(mktemp -d)
trap 'rm -rf "$tool"' EXIT
python3 -m venv "$tool"
"$tool/bin/python" -m pip install -q --disable-pip-version-check "uv==0.13.9"
if [ -n "${TORCH_FIND_LINKS:-}" ]; then
  torch_source=(--find-links "$TORCH_FIND_LINKS")
else
  torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
fi
"$tool/bin/uv" pip compile requirements.in -o requirements.lock --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --no-header "${torch_source[@]}"
sed -i '1i # Exact versions of every package distil installs (CPython 3.11, x86-64 Linux, CPU torch).\n# Generated from requirements.in by `bash scripts/lock.sh` (uv pip compile); do not edit by hand.' requirements.lock
