#!/usr/bin/env bash
# Issue 23's evidence at CPU scale: a 4 x 256 Llama-style chat teacher trained here (no decoder weights are
# reachable offline) on the bundled chat set (tests/assets/data/chat: arithmetic, comparisons, spelling;
# 400 training and 60 held-out conversations), distilled into a student of half its depth (teacher
# layers 2 and 4) four ways at the same budget: forward KL, reverse KL and generalized JSD (beta 0.5) on
# the dataset's answers (method gkd with lmbda 0: the divergence alone, no cross-entropy), and on-policy
# JSD (lmbda 0.5: half of the steps on the student's own samples). Seeds 1 and 2. Each student is scored
# on the held-out conversations: assistant-token perplexity, top-1 agreement with the teacher, greedy
# agreement, exact answers. Run from the repository root; results under runs/issue23, one JSON report per
# student, the table on stdout. About 25 min on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-runs/issue23}
D=.venv/bin/distil
DEV=tests/assets/data/chat/chat-test.jsonl
if [ ! -f "$OUT/teacher/student/recipe.json" ]; then
  [ -d "$OUT/init" ] || $D init-model "$OUT/init" --family llama --layers 4 --hidden-size 256 --heads 4
  $D finetune --config chat/teacher run_dir=$OUT/teacher models.student.path=$OUT/init train.epochs=12 \
    --no-progress
fi
$D eval "$OUT/teacher/student" --task chat --file $DEV --json "$OUT/teacher.json" > /dev/null
declare -A SETTINGS=(
  [forward_kl]="method.lmbda=0 method.divergence=forward_kl"
  [reverse_kl]="method.lmbda=0 method.divergence=reverse_kl"
  [jsd]="method.lmbda=0 method.divergence=jsd"
  [on_policy_jsd]="method.lmbda=0.5 method.divergence=jsd"
)
for seed in 1 2; do
  for name in forward_kl reverse_kl jsd on_policy_jsd; do
    run=$OUT/$name-s$seed
    if [ ! -f "$run/student/recipe.json" ]; then
      # shellcheck disable=SC2086
      $D distill --config chat/gkd run_dir=$run models.teacher=$OUT/teacher/student train.epochs=4 \
        train.seed=$seed ${SETTINGS[$name]} --no-progress --overwrite > /dev/null
    fi
    $D eval "$run/student" --task chat --file $DEV --teacher "$OUT/teacher/student" --max-new-tokens 24 \
      --json "$OUT/$name-s$seed.json" > /dev/null
  done
done
.venv/bin/python - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
teacher = json.loads((out / "teacher.json").read_text())["metrics"]
print(f"teacher: perplexity {teacher['perplexity']:.3f}")
keys = ["perplexity", "top1_agreement", "greedy_exact_match", "greedy_token_f1", "student_reference_exact_match"]
print("| student | " + " | ".join(keys) + " |")
print("|---|" + "---|" * len(keys))
for name in ("forward_kl", "reverse_kl", "jsd", "on_policy_jsd"):
    runs = [json.loads((out / f"{name}-s{s}.json").read_text())["metrics"] for s in (1, 2)]
    cells = [" / ".join(f"{r[k]:.3f}" for r in runs) + f" (mean {statistics.mean(r[k] for r in runs):.3f})" for k in keys]
    print(f"| {name} | " + " | ".join(cells) + " |")
print(f"teacher exact answers: {runs[0]['teacher_reference_exact_match']:.3f}")
PY
