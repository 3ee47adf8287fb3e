#!/usr/bin/env bash
# The main job on the embedded defaults: fine-tune all-MiniLM-L6-v2 on SST-2, distil it with KD into a
# 3-layer student, and print the comparison table. Extra arguments go to `distil pipeline`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/distil pipeline "$@"
