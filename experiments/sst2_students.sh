#!/usr/bin/env bash
# Issue 2 student rows: the 3-layer student (teacher layers M(k) = [1, 4, 6]) with KD from the full-data
# teacher, and the same student fine-tuned without a teacher, with the same budget: a seeded subset of
# SUBSET SST-2 training examples, 1 epoch, batch 32, lr 1e-4, max length 64. Evaluated on the full dev set.
# Usage: bash experiments/sst2_students.sh TEACHER_DIR OUT_DIR [SUBSET]
set -euo pipefail
teacher=${1:?usage: sst2_students.sh TEACHER_DIR OUT_DIR [SUBSET]}
out=${2:?usage: sst2_students.sh TEACHER_DIR OUT_DIR [SUBSET]}
subset=${3:-20000}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
d=.venv/bin/distil
common=(--no-progress "models.teacher=$teacher" "data.train_subset=$subset")
[ -f "$out/kd/student/recipe.json" ] || $d distill --config glue/sst2/kd --run-dir "$out/kd" "${common[@]}"
[ -f "$out/student-ft/student/recipe.json" ] || \
  $d finetune --config glue/sst2/finetune_student --run-dir "$out/student-ft" "${common[@]}"
