#!/usr/bin/env bash
# Issue 26 evidence, step 4: MiniLMv2 against HomoDistil, two task-agnostic 6 x 192 students of the
# embedded teacher made by experiments/pretrain_cpu.sh at STEPS steps x 32 blocks x 128 tokens of the
# Wikipedia shards (variants qq-kk-vv-48: MiniLMv2 Q-Q + K-K + V-V with 48 relation heads from random
# init; homodistil: the teacher's copy pruned to 6 x 192 while it is distilled), then fine-tuned on each
# GLUE task by `distil compare` with the budget of experiments/compare_glue.sh (SUBSET seeded training
# rows, 500 held out for checkpoint selection, EPOCHS epochs, batch 32, lr 1e-4, the official dev set as
# the test set, 3 seeds). Each student is a shape of the compare, fine-tuned by one row (finetune); the
# task's teacher (OUT_GLUE/<task>/teacher/student, experiments/compare_teachers.sh) is the reference of
# the keep column. The claim is read across the two shapes:
#   python experiments/compare_claims.py OUT --claim homodistil/finetune>minilmv2/finetune
# Usage: [TASKS='sst2 mrpc stsb cola'] [STEPS=300] [SEEDS='1, 2, 3'] [SUBSET=1500] [EPOCHS=2] [JOBS=2]
#        [THREADS=]
#        bash experiments/compare_agnostic.sh OUT OUT_GLUE
set -euo pipefail
out=${1:?usage: compare_agnostic.sh OUT OUT_GLUE}
glue=${2:?usage: compare_agnostic.sh OUT OUT_GLUE}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
d=${DISTIL:-.venv/bin/distil}
source experiments/compare_budget.sh
VARIANTS='qq-kk-vv-48 homodistil' FINETUNE=0 BASELINES=0 bash experiments/pretrain_cpu.sh "$out" "${STEPS:-300}"
for task in ${TASKS:-sst2 mrpc stsb cola}; do
  teacher=$glue/$task/teacher/student
  [ -f "$teacher/recipe.json" ] || { echo "$teacher: no teacher (run experiments/compare_teachers.sh)" >&2; exit 2; }
  cfg=$out/$task/compare.yaml
  mkdir -p "$out/$task"
  shapes="{minilmv2: {init: pretrained, path: $out/qq-kk-vv-48/student}, homodistil: {init: pretrained, path: $out/homodistil/student}}"
  compare_config "$out/$task/compare" "$task" "$teacher" "$shapes" '{finetune: {name: finetune}}' > "$cfg"
  $d compare --config "$cfg" --no-progress --jobs "${JOBS:-2}" ${THREADS:+--threads "$THREADS"}
done
