#!/usr/bin/env bash
# Issue 2 measurements on full SST-2 (67,349 training examples, dev 872), 1 epoch each, same budget:
#   1. teacher: all-MiniLM-L6-v2 fine-tuned (glue/sst2/finetune)
#   2. KD: 3-layer student from teacher layers [1, 4, 6], KD from the teacher of step 1 (glue/sst2/kd)
#   3. finetune-only: the same 3-layer student, no teacher
# Usage: bash experiments/sst2_full.sh OUT_DIR [extra overrides for steps 2 and 3]
set -euo pipefail
out=${1:?usage: sst2_full.sh OUT_DIR}; shift || true
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
d=.venv/bin/distil
[ -f "$out/teacher/student/recipe.json" ] || $d finetune --config glue/sst2/finetune --run-dir "$out/teacher" --no-progress
$d distill --config glue/sst2/kd --run-dir "$out/kd" --no-progress models.teacher="$out/teacher/student" "$@"
$d finetune --config glue/sst2/finetune_student --run-dir "$out/student-ft" --no-progress \
  models.teacher="$out/teacher/student" "$@"
