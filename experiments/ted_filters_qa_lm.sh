#!/usr/bin/env bash
# Issue 28: per-layer quality of TED's Stage-I filters with per-token heads (extractive QA span heads,
# causal-LM next-token heads), each head's loss next to chance (the loss of predicting the training labels'
# prior). Teachers trained here: all-MiniLM-L6-v2 fine-tuned on SQuAD v1.1 (the dev file split by article,
# as squad/finetune), and a 4 x 256 GPT-2 language model trained from scratch on Wikipedia text (no decoder
# weights are reachable offline). Run from the repository root; results go to runs/issue28 and the tables
# to stdout. About 90 min on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-runs/issue28}
D=.venv/bin/distil
P=".venv/bin/python experiments/ted_filter_probe.py"
squad=(data.dev_file=squad/v1.1/dev-v1.1.json data.split_dev=0.2 data.split_seed=0 data.doc_stride=64
  data.dev_subset=600)
if [ ! -f "$OUT/squad-teacher/student/recipe.json" ]; then
  $D finetune --config squad/finetune run_dir=$OUT/squad-teacher data.train_subset=3000 data.max_length=192 \
    data.doc_stride=64 data.dev_subset=600 train.epochs=2 train.batch_size=16 --no-progress
fi
$P "$OUT/squad-teacher/student" --task squad --out "$OUT" --max-length 192 --train-subset 2000 \
  --epochs 2 --batch-size 16 --lr 1e-3 "${squad[@]}"
lm=(data.corpus=[../shared/data/text/enwiki-2015-wikiextractor/train]
  data.dev_file=../shared/data/text/wikitext-2-raw/wiki.test.hf-rows-joined.txt data.eval_stride=64
  data.dev_subset=300)
if [ ! -f "$OUT/lm-teacher/student/recipe.json" ]; then
  .venv/bin/python experiments/tiny_decoder.py "$OUT/lm-init" --head lm --positions 128
  $D finetune --config lm/kd run_dir=$OUT/lm-teacher models.teacher=null models.student.init=pretrained \
    models.student.path="$OUT/lm-init" method.name=finetune data.max_length=128 data.max_blocks=5000 \
    train.batch_size=16 train.grad_accum=1 train.lr=1e-3 train.eval_every=0 "${lm[@]}" --no-progress
fi
$P "$OUT/lm-teacher/student" --task lm --out "$OUT" --max-length 128 --train-subset 1000 --epochs 1 \
  --batch-size 16 --lr 5e-4 "${lm[@]}"
# The same LM trained further (12,000 blocks, 750 steps), then its filters again: the first teacher is at
# unigram level, so all its filters are (rightly) flagged at chance.
if [ ! -f "$OUT/lm-teacher2/student/recipe.json" ]; then
  $D finetune --config lm/kd run_dir=$OUT/lm-teacher2 models.teacher=null models.student.init=pretrained \
    models.student.path="$OUT/lm-teacher/student" method.name=finetune data.max_length=128 \
    data.max_blocks=12000 train.batch_size=16 train.grad_accum=1 train.lr=1e-3 train.warmup_ratio=0.02 \
    train.eval_every=0 train.seed=1 "${lm[@]}" --no-progress
fi
$P "$OUT/lm-teacher2/student" --task lm --out "$OUT/lm2" --max-length 128 --train-subset 1000 --epochs 1 \
  --batch-size 16 --lr 5e-4 "${lm[@]}"
