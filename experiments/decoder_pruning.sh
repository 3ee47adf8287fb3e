#!/usr/bin/env bash
# Issue 24's evidence at CPU scale: a 6 x 256 Llama-style teacher (4 query heads of 64 in 2 KV groups,
# SwiGLU 768, an untied LM head, a 4,096-token byte-level BPE trained here) trained on the Wikipedia shards
# of ../shared/data/text, then compressed to the parameter count of its 3-layer truncation five ways at the
# same budget (STEPS steps of 16 x 128 tokens, lr 5e-4, seeds 1 and 2):
#   scratch     a random student of the one-shot width-pruned model's config, KD (T 2, alpha 0.5)
#   truncated   teacher layers 2, 4, 6, KD
#   oneshot     one-shot width pruning (Minitron-style activation importance) to the budget, then KD
#   oneshot_depth  one-shot depth pruning (cosine block importance) to 3 layers, then KD
#   homodistil  HomoDistil pruning its copy of the teacher to the budget while distilling (t_i 5 %,
#               t_f 50 % of the steps, every 10 steps; the method's default objective)
# Held-out perplexity on WikiText-2's test text: a seeded subset of 1,500 of its 128-token windows (stride
# 64), the same for the teacher and every student (`distil eval --subset`). Run from the repository root;
# results under runs/issue24, the table on stdout. About 50 min on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-runs/issue24}
STEPS=${STEPS:-1000}
TEACHER_STEPS=${TEACHER_STEPS:-3000}
D=.venv/bin/distil
PY=.venv/bin/python
TEXT=../shared/data/text/enwiki-2015-wikiextractor/train
DEV=../shared/data/text/wikitext-2-raw/wiki.test.hf-rows-joined.txt
mkdir -p "$OUT"
[ -f "$OUT/tokenizer/tokenizer.json" ] || $PY experiments/train_bpe.py "$OUT/tokenizer" $TEXT --vocab 4096
[ -d "$OUT/init" ] || $D init-model "$OUT/init" --family llama --layers 6 --hidden-size 256 --heads 4 \
  --kv-heads 2 --intermediate-size 768 --tokenizer "$OUT/tokenizer" --seed 0

# The data and training sections every run shares.
common() {  # $1: run_dir, $2: seed, $3: the data section's extra keys
  cat <<YAML
run_dir: $1
data: {task: lm, corpus: [$TEXT], max_length: 128, max_blocks: 60000, cache_dir: $OUT/blocks${3:-}}
train: {batch_size: 16, lr: 5.0e-4, warmup_ratio: 0.05, seed: $2, report_to: [], log_every: 50,
        checkpoint_every: 0}
eval: {select: last}
YAML
}
if [ ! -f "$OUT/teacher/student/recipe.json" ]; then
  { common "$OUT/teacher" 0 ", dev_file: $DEV, eval_stride: 64"; cat <<YAML
models: {teacher: null, student: {init: pretrained, path: $OUT/init}}
method: {name: finetune}
YAML
  } > "$OUT/teacher.yaml"
  $D finetune --config "$OUT/teacher.yaml" train.max_steps=$TEACHER_STEPS train.lr=1.0e-3 --no-progress --overwrite
fi
T=$OUT/teacher/student
# The budget: the parameters of the teacher's 3-layer truncation.
BUDGET=$($PY - "$T" <<'PY'
import sys
from transformers import AutoModelForCausalLM
from distil.models.students import count_parameters, student_from_layers
teacher = AutoModelForCausalLM.from_pretrained(sys.argv[1])
print(count_parameters(student_from_layers(teacher, [2, 4, 6])))
PY
)
echo "teacher $T, budget $BUDGET parameters"
KD="method: {name: kd, temperature: 2.0, alpha: 0.5}"
run() {  # $1: name, $2: seed, $3: YAML lines (models, method, plan)
  local dir=$OUT/$1-s$2
  [ -f "$dir/student/recipe.json" ] && return
  { common "$dir" "$2"; printf '%s\n' "$3"; } > "$OUT/$1-s$2.yaml"
  $D distill --config "$OUT/$1-s$2.yaml" train.max_steps=$STEPS --no-progress --overwrite > "$OUT/$1-s$2.log" 2>&1
}
perplexity() {  # $1: model folder, $2: report
  [ -f "$2" ] || $D eval "$1" --task lm --file $DEV --max-length 128 --eval-stride 64 --subset 1500 \
    --json "$2" > /dev/null
}
perplexity "$T" "$OUT/teacher.json"
for seed in 1 2; do
  run oneshot $seed "models: {teacher: $T, student: {init: copy}}
$KD
plan: {name: oneshot_prune, target_params: $BUDGET, calibration_rows: 256}"
  run oneshot_depth $seed "models: {teacher: $T, student: {init: copy}}
$KD
plan: {name: oneshot_prune, target_num_layers: 3, layer_metric: cosine, calibration_rows: 256}"
  run truncated $seed "models: {teacher: $T, student: {init: layers, layers: [2, 4, 6]}}
$KD"
  if [ ! -d "$OUT/scratch-init" ]; then  # the one-shot width-pruned config, randomly initialised
    $PY - "$OUT/oneshot-s1/stages/prune/student" "$OUT/scratch-init" <<'PY'
import sys
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
torch.manual_seed(0)
config = AutoConfig.from_pretrained(sys.argv[1])
AutoModelForCausalLM.from_config(config).save_pretrained(sys.argv[2])
AutoTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])
PY
  fi
  run scratch $seed "models: {teacher: $T, student: {init: pretrained, path: $OUT/scratch-init}}
$KD"
  run homodistil $seed "models: {teacher: $T, student: {init: copy}}
method: {name: homodistil, target_params: $BUDGET, t_i: $((STEPS / 20)), t_f: $((STEPS / 2)), delta_t: 10}"
  for name in scratch truncated oneshot_depth oneshot homodistil; do
    perplexity "$OUT/$name-s$seed/student" "$OUT/$name-s$seed.json"
  done
done
$PY - "$OUT" <<'PY'
import json
import statistics
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM

from distil.models.students import count_parameters

out = Path(sys.argv[1])
teacher = json.loads((out / "teacher.json").read_text())["metrics"]
print(f"teacher: perplexity {teacher['perplexity']:.2f} on {int(teacher['eval_tokens'])} tokens")
print("| student | layers x hidden, KV groups, SwiGLU | parameters | perplexity seed 1 / 2 | mean |")
print("|---|---|---|---|---|")
for name in ("scratch", "truncated", "oneshot_depth", "oneshot", "homodistil"):
    ppl = [json.loads((out / f"{name}-s{s}.json").read_text())["metrics"]["perplexity"] for s in (1, 2)]
    model = AutoModelForCausalLM.from_pretrained(out / f"{name}-s1" / "student")
    c = model.config
    shape = f"{c.num_hidden_layers} x {c.hidden_size}, {c.num_key_value_heads}, {c.intermediate_size}"
    params = count_parameters(model) / 1e6
    print(f"| {name} | {shape} | {params:.2f}M | {ppl[0]:.2f} / {ppl[1]:.2f} | {statistics.mean(ppl):.2f} |")
PY
