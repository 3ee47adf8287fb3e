#!/usr/bin/env bash
# Issue 4 measurements at CPU scale (one seed). Teacher: all-MiniLM-L6-v2 (6 x 384, 12 heads).
# Students 6 x 192 (12 heads, FFN 768), distilled on the Wikipedia train shards for the same budget
# (STEPS steps x 32 blocks x 128 tokens), then each fine-tuned on SST-2 (SST2_SUBSET examples, 1 epoch)
# and RTE (full, 3 epochs); beside them the same student from random init and a truncated teacher.
# Usage: [VARIANTS='qq-kk-vv-48 ...'] [SST2_SUBSET=N] bash experiments/minilmv2_cpu.sh OUT_DIR [STEPS]
set -euo pipefail
out=${1:?usage: minilmv2_cpu.sh OUT_DIR [STEPS]}
steps=${2:-600}
SST2_SUBSET=${SST2_SUBSET:-8000}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
d=.venv/bin/distil
corpus=../shared/data/text/enwiki-2015-wikiextractor/train
common=(--no-progress "data.corpus=[$corpus]" train.max_steps=$steps train.checkpoint_every=0)

distill() {  # name, extra overrides...
  local name=$1; shift
  [ -f "$out/$name/student/recipe.json" ] || $d distill --config pretrain/minilmv2_cpu --run-dir "$out/$name" "${common[@]}" "$@"
}
# VARIANTS picks the distillation runs (default: all three).
for variant in ${VARIANTS:-qq-kk-vv-48 qk-vv-48 qq-kk-vv-12}; do
  case $variant in
    qq-kk-vv-48) distill qq-kk-vv-48 ;;
    qk-vv-48) distill qk-vv-48 "method.relations=[QK,VV]" ;;
    qq-kk-vv-12) distill qq-kk-vv-12 method.relation_heads=12 ;;
    *) echo "unknown variant $variant" >&2; exit 2 ;;
  esac
done
if [ "${WITH_MINILM_V1:-0}" = 1 ]; then
  [ -f "$out/minilm-v1/student/recipe.json" ] || $d distill --config pretrain/minilm --run-dir "$out/minilm-v1" "${common[@]}"
fi

finetune() {  # student name, student overrides...
  local name=$1; shift
  [ -f "$out/ft-sst2-$name/student/recipe.json" ] || $d finetune --run-dir "$out/ft-sst2-$name" --no-progress \
    data.task=sst2 data.max_length=64 data.train_subset=$SST2_SUBSET train.lr=1e-4 train.epochs=1 "$@"
  [ -f "$out/ft-rte-$name/student/recipe.json" ] || $d finetune --run-dir "$out/ft-rte-$name" --no-progress \
    data.task=rte data.max_length=128 train.lr=1e-4 train.epochs=3 train.batch_size=16 "$@"
}
for name in qq-kk-vv-48 qk-vv-48 qq-kk-vv-12 minilm-v1; do
  [ -d "$out/$name/student" ] || continue
  finetune "$name" models.teacher=null models.student.init=pretrained "models.student.path=$out/$name/student"
done
finetune random-init models.teacher=embedded models.student.init=config models.student.num_layers=6 \
  models.student.hidden_size=192 models.student.num_heads=12 models.student.intermediate_size=768
finetune truncated-teacher-3l models.teacher=embedded models.student.init=layers "models.student.layers=[1,2,3]"
