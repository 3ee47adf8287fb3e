#!/usr/bin/env bash
# Task-agnostic students at CPU scale (issues 4, 5 and 6; one seed). Teacher: all-MiniLM-L6-v2 (6 x 384,
# 12 heads, FFN 1536). Every student is 6 x 192 (12 heads, FFN 768) and gets the same budget on the
# Wikipedia train shards: STEPS steps x 32 blocks x 128 tokens. Each is then fine-tuned with the same
# settings on SST-2 (SST2_SUBSET examples, 1 epoch) and RTE (full, 3 epochs); beside them the same student
# from random init and a truncated teacher (BASELINES=0 skips those two).
#
# Variants (VARIANTS, space-separated; default: the three MiniLMv2 ones):
#   qq-kk-vv-48, qk-vv-48, qq-kk-vv-12   MiniLMv2 relations / relation heads (pretrain/minilmv2_cpu)
#   minilm-v1                            MiniLM v1 (pretrain/minilm)
#   distilbert, tinybert                 the baselines (pretrain/distilbert, pretrain/tinybert)
#   homodistil                           pruned 6x384 -> 6x192 (pretrain/homodistil), schedule scaled to
#                                        STEPS (t_i 5 %, t_f 72 %), HEAD_STEPS head-fitting steps first
#   homodistil-nokl                      the same without the prediction-head terms (alpha_kl 0, no head stage)
#   homodistil-scaling-pruned            attention scale 1/sqrt(kept head dim) instead of the teacher's
#   homodistil-fixedproj                 identity projections kept fixed (train_projections false)
# FINETUNE=0 stops after the distillation (experiments/compare_agnostic.sh fine-tunes the students itself).
# Usage: [VARIANTS='...'] [SST2_SUBSET=N] [HEAD_STEPS=N] [BASELINES=0] [FINETUNE=0] bash experiments/pretrain_cpu.sh OUT_DIR [STEPS]
set -euo pipefail
out=${1:?usage: pretrain_cpu.sh OUT_DIR [STEPS]}
steps=${2:-600}
SST2_SUBSET=${SST2_SUBSET:-8000}
HEAD_STEPS=${HEAD_STEPS:-100}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
d=.venv/bin/distil
corpus=../shared/data/text/enwiki-2015-wikiextractor/train
common=(--no-progress "data.corpus=[$corpus]" train.max_steps=$steps train.checkpoint_every=0)
homo=(method.t_i=$((steps * 5 / 100)) method.t_f=$((steps * 72 / 100)) plan.head_steps=$HEAD_STEPS)

distill() {  # name, config, extra overrides...
  local name=$1 config=$2; shift 2
  [ -f "$out/$name/student/recipe.json" ] || $d distill --config "$config" --run-dir "$out/$name" "${common[@]}" "$@"
}
variants=${VARIANTS:-qq-kk-vv-48 qk-vv-48 qq-kk-vv-12}
for variant in $variants; do
  case $variant in
    qq-kk-vv-48) distill "$variant" pretrain/minilmv2_cpu ;;
    qk-vv-48) distill "$variant" pretrain/minilmv2_cpu "method.relations=[QK,VV]" ;;
    qq-kk-vv-12) distill "$variant" pretrain/minilmv2_cpu method.relation_heads=12 ;;
    minilm-v1) distill "$variant" pretrain/minilm ;;
    distilbert) distill "$variant" pretrain/distilbert ;;
    tinybert) distill "$variant" pretrain/tinybert ;;
    homodistil) distill "$variant" pretrain/homodistil "${homo[@]}" ;;
    homodistil-nokl) distill "$variant" pretrain/homodistil "${homo[@]}" method.alpha_kl=0 plan.head_steps=0 ;;
    homodistil-scaling-pruned) distill "$variant" pretrain/homodistil "${homo[@]}" method.attention_scaling=pruned ;;
    homodistil-fixedproj) distill "$variant" pretrain/homodistil "${homo[@]}" method.train_projections=false ;;
    *) echo "unknown variant $variant" >&2; exit 2 ;;
  esac
done
[ "${FINETUNE:-1}" = 1 ] || exit 0

finetune() {  # student name, student overrides...
  local name=$1; shift
  [ -f "$out/ft-sst2-$name/student/recipe.json" ] || $d finetune --run-dir "$out/ft-sst2-$name" --no-progress \
    data.task=sst2 data.max_length=64 data.train_subset=$SST2_SUBSET train.lr=1e-4 train.epochs=1 "$@"
  [ -f "$out/ft-rte-$name/student/recipe.json" ] || $d finetune --run-dir "$out/ft-rte-$name" --no-progress \
    data.task=rte data.max_length=128 train.lr=1e-4 train.epochs=3 train.batch_size=16 "$@"
}
for name in $variants; do
  finetune "$name" models.teacher=null models.student.init=pretrained "models.student.path=$out/$name/student"
done
if [ "${BASELINES:-1}" = 1 ]; then
  finetune random-init models.teacher=embedded models.student.init=config models.student.num_layers=6 \
    models.student.hidden_size=192 models.student.num_heads=12 models.student.intermediate_size=768
  finetune truncated-teacher-3l models.teacher=embedded models.student.init=layers "models.student.layers=[1,2,3]"
fi
