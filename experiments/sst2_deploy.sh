#!/usr/bin/env bash
# Issue 7 deployment pair: the full-data SST-2 teacher and 3-layer students (teacher layers
# M(k) = [1, 4, 6]) distilled from it with KD (T = 2, cached teacher logits), dev accuracy logged during
# training and the best evaluation kept:
#   kd      alpha = 0.5, all 67,349 SST-2 training examples, EPOCHS epochs;
#   kd-aug  alpha = 1 (soft labels only), 1 epoch over the training set plus COPIES perturbed copies of
#           each example (`distil augment`: masked words, embedding-neighbour replacements, n-grams).
# Every model is then exported to fused fp32 + int8 ONNX. The benchmark is run by hand on an idle machine
# (docs/results.md, issue 7), since timings taken beside other jobs are not worth recording.
# Usage: bash experiments/sst2_deploy.sh TEACHER_DIR OUT_DIR [EPOCHS] [COPIES]
set -euo pipefail
usage="usage: sst2_deploy.sh TEACHER_DIR OUT_DIR [EPOCHS] [COPIES]"
teacher=${1:?$usage}
out=${2:?$usage}
epochs=${3:-3}
copies=${4:-4}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
d=.venv/bin/distil
per_epoch=2105   # ceil(67,349 / 32)
[ -f "$out/kd/student/recipe.json" ] || $d distill --config glue/sst2/kd --run-dir "$out/kd" --no-progress \
  "models.teacher=$teacher" "train.epochs=$epochs" "train.eval_every=$per_epoch" \
  "train.checkpoint_every=$per_epoch"
aug="$out/sst2_aug$copies.tsv"
[ -f "$aug" ] || $d augment --task sst2 --model "$teacher" --copies "$copies" --out "$aug"
[ -f "$out/kd-aug/student/recipe.json" ] || $d distill --config glue/sst2/kd --run-dir "$out/kd-aug" \
  --no-progress "models.teacher=$teacher" "data.train_file=$aug" method.alpha=1 train.epochs=1 \
  "train.eval_every=$per_epoch" "train.checkpoint_every=$per_epoch"
for m in teacher kd kd-aug; do
  dir="$out/deploy/$m"
  src="$out/$m/student"
  [ "$m" = teacher ] && src="$teacher"
  mkdir -p "$dir"
  [ -f "$dir/config.json" ] || cp "$src"/*.* "$dir/"
  ls "$dir"/onnx/model.int8.onnx >/dev/null 2>&1 || $d export "$dir" --int8 --optimize
done
