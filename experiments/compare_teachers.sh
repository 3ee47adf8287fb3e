#!/usr/bin/env bash
# Issue 26 evidence, step 1: the teacher of every task, fine-tuned once and shared by `distil compare`
# (compare.teacher.finetune: false, models.teacher: OUT/<task>/teacher/student).
# all-MiniLM-L6-v2 (embedded) on each GLUE task: 10 % of the training rows held out (split seed 0) to
# select the best of the end-of-epoch checkpoints, the official dev set kept apart as the test set.
# Usage: [TASKS='stsb mrpc sst2 rte cola'] bash experiments/compare_teachers.sh OUT_DIR
set -euo pipefail
out=${1:?usage: compare_teachers.sh OUT_DIR}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
d=.venv/bin/distil
for task in ${TASKS:-stsb mrpc sst2 rte cola}; do
  case $task in
    sst2) extra=(data.max_length=64 data.train_subset=8000 train.epochs=2) ;;
    cola) extra=(data.max_length=64 train.epochs=3) ;;
    *) extra=(data.max_length=128 train.epochs=3) ;;
  esac
  dir=$out/$task/teacher
  [ -f "$dir/student/recipe.json" ] && continue
  $d finetune --run-dir "$dir" --no-progress data.task="$task" data.split_dev=0.1 data.split_seed=0 \
    train.batch_size=32 train.lr=1e-4 train.warmup_ratio=0.1 train.seed=1 train.report_to=[] \
    models.teacher=null models.student.init=pretrained models.student.path=embedded "${extra[@]}"
done
