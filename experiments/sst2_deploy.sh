#!/usr/bin/env bash
# Issue 7 deployment pair: the full-data SST-2 teacher and 3-layer students (teacher layers
# M(k) = [1, 4, 6]) distilled from it with KD (T = 2, cached teacher logits), dev accuracy logged during
# training and the best evaluation kept:
#   kd       alpha = 0.5, all 67,349 SST-2 training examples, EPOCHS epochs;
#   kd-aug   alpha = 1 (soft labels only), 1 epoch over the training set plus COPIES perturbed copies of
#            each example (`distil augment`: masked words, embedding-neighbour replacements, n-grams);
#   kd-aug2  kd-aug trained one more epoch, lr 5e-5, on a second augmentation (seed 1).
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
every=("train.eval_every=$per_epoch" "train.checkpoint_every=$per_epoch")
[ -f "$out/kd/student/recipe.json" ] || $d distill --config glue/sst2/kd --run-dir "$out/kd" --no-progress \
  "models.teacher=$teacher" "train.epochs=$epochs" "${every[@]}"
aug="$out/sst2_aug$copies.tsv"              # seed 0
aug2="$out/sst2_aug${copies}_seed1.tsv"
[ -f "$aug" ] || $d augment --task sst2 --model "$teacher" --copies "$copies" --out "$aug"
[ -f "$aug2" ] || $d augment --task sst2 --model "$teacher" --copies "$copies" --seed 1 --out "$aug2"
[ -f "$out/kd-aug/student/recipe.json" ] || $d distill --config glue/sst2/kd --run-dir "$out/kd-aug" \
  --no-progress "models.teacher=$teacher" "data.train_file=$aug" method.alpha=1 \
  train.epochs=1 "${every[@]}"
[ -f "$out/kd-aug2/student/recipe.json" ] || $d distill --config glue/sst2/kd --run-dir "$out/kd-aug2" \
  --no-progress "models.teacher=$teacher" "data.train_file=$aug2" method.alpha=1 \
  train.epochs=1 train.lr=5e-5 models.student.init=pretrained "models.student.path=$out/kd-aug/student" \
  "${every[@]}"
for m in teacher kd kd-aug kd-aug2; do
  dir="$out/deploy/$m"
  src="$out/$m/student"
  [ "$m" = teacher ] && src="$teacher"
  mkdir -p "$dir"
  [ -f "$dir/config.json" ] || cp "$src"/*.* "$dir/"
  ls "$dir"/onnx/model.int8.onnx >/dev/null 2>&1 || $d export "$dir" --int8 --optimize
done
