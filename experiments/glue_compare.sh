#!/usr/bin/env bash
# Issue 3 comparison: fine-tune only, KD, LWD and TED for the 3-layer student (teacher layers M(k) =
# [1, 4, 6]) of all-MiniLM-L6-v2, on GLUE tasks, same budget and seed for every row of a task.
#   1. teacher: all-MiniLM-L6-v2 fine-tuned on the task (once per task, first seed)
#   2. per seed: finetune-only, kd, lwd (glue/<task>/lwd), ted (glue/<task>/ted; Stage 0 of the student and
#      Stage I of both sides, Stage II; the teacher of step 1 is shared: method.finetune_teacher=false)
# Every run gets the same CPU-scale budget overrides (EPOCHS, MAXLEN, BATCH, LR), which replace the
# bundled configs' paper values; TED's stages each run that budget.
# Usage: [TASKS='rte mrpc stsb cola sst2'] [SEEDS='1 2'] [EPOCHS=3] [MAXLEN=128] [BATCH=16] [LR=6e-5]
#        [SUBSET=N (training examples per task; SST-2 needs one on CPU)] [DEV_SUBSET=N]
#        bash experiments/glue_compare.sh OUT_DIR
set -euo pipefail
out=${1:?usage: glue_compare.sh OUT_DIR}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
d=.venv/bin/distil
student=(models.student.init=layers models.student.num_layers=3 models.student.layer_map=paper)

done_run() { [ -f "$1/student/recipe.json" ]; }
for task in ${TASKS:-rte mrpc stsb cola sst2}; do
  budget=(--no-progress data.task="$task" data.max_length="${MAXLEN:-128}" train.epochs="${EPOCHS:-3}"
    train.batch_size="${BATCH:-16}" train.lr="${LR:-6e-5}")
  [ -n "${SUBSET:-}" ] && budget+=(data.train_subset="$SUBSET")
  [ -n "${DEV_SUBSET:-}" ] && budget+=(data.dev_subset="$DEV_SUBSET")
  seeds=(${SEEDS:-1 2})
  teacher=$out/$task/teacher
  done_run "$teacher" || $d finetune --run-dir "$teacher" "${budget[@]}" train.seed="${seeds[0]}" \
    models.teacher=null models.student.init=pretrained models.student.path=embedded
  for seed in "${seeds[@]}"; do
    run=("${budget[@]}" train.seed="$seed" models.teacher="$teacher/student" "${student[@]}")
    dir=$out/$task/seed$seed
    done_run "$dir/finetune" || $d finetune --run-dir "$dir/finetune" "${run[@]}"
    done_run "$dir/kd" || $d distill --method kd --run-dir "$dir/kd" "${run[@]}" method.temperature=2.0
    done_run "$dir/lwd" || $d distill --config "glue/$task/lwd" --run-dir "$dir/lwd" "${run[@]}"
    done_run "$dir/ted" || $d distill --config "glue/$task/ted" --run-dir "$dir/ted" "${run[@]}" \
      method.finetune_teacher=false
  done
done
