#!/usr/bin/env bash
# Issue 28: per-layer quality of TED's Stage-I filters (token-0 vs mean pooling) next to linear probes,
# on SST-2, MRPC, STS-B and the bundled topics file. Teachers: all-MiniLM-L6-v2 fine-tuned on each task
# (SST-2: the main job's teacher, `bash scripts/main.sh --run-dir runs/main`). Run from the repository root;
# results go to runs/issue28 and the tables to stdout. About 40 min on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-runs/issue28}
D=.venv/bin/distil
P=".venv/bin/python experiments/ted_filter_probe.py"
for task in mrpc stsb; do
  if [ ! -f "$OUT/$task-teacher/student/recipe.json" ]; then
    $D finetune --config glue/sst2/finetune data.task=$task data.max_length=128 train.epochs=2 \
      run_dir=$OUT/$task-teacher --no-progress
  fi
done
if [ ! -f "$OUT/topics-teacher/student/recipe.json" ]; then
  $D finetune --config custom/finetune run_dir=$OUT/topics-teacher --no-progress
fi
$P runs/main/teacher/student --task sst2 --out "$OUT" --train-subset 4000 --max-length 64
$P "$OUT/mrpc-teacher/student" --task mrpc --out "$OUT" --max-length 128
$P "$OUT/stsb-teacher/student" --task stsb --out "$OUT" --max-length 128
$P "$OUT/topics-teacher/student" --task custom --out "$OUT" --max-length 32 --epochs 8 --batch-size 16 \
  --probe-rows 48 data.train_file=tests/assets/data/custom/topics.tsv data.header=false \
  "data.text_columns=[0]" data.label_column=1 data.split_dev=0.2
# A decoder: no pretrained decoder is reachable offline, so a 4 x 256 GPT-2 classifier is trained from
# scratch on 8,000 SST-2 rows, then its filters pool the last real token (auto for decoders) or the mean.
dec=$OUT/sst2-decoder
if [ ! -f "$dec-teacher/student/recipe.json" ]; then
  .venv/bin/python experiments/tiny_decoder.py "$dec-init"
  $D finetune --config glue/sst2/finetune models.student.path="$dec-init" data.train_subset=8000 \
    train.epochs=2 train.lr=5e-4 run_dir="$dec-teacher" --no-progress
fi
$P "$dec-teacher/student" --task sst2 --out "$OUT/decoder" --train-subset 4000 --max-length 64 \
  --poolings last,mean
