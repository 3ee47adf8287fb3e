#!/usr/bin/env bash
# Issue 26 evidence, step 2: `distil compare` on each GLUE task and SQuAD v1.1 (task squad): fine-tune only,
# KD, LWD and TED at 2- and 3-layer students of the task's teacher (experiments/compare_teachers.sh, which
# must have written OUT/<task>/teacher/student), 3 seeds. Students: SUBSET seeded training rows (the seed
# draws them), 500 training rows held out (split seed 0) to pick each run's best end-of-epoch checkpoint,
# the official dev set as the test set that every interval is computed on; SQuAD: its teacher's held-out
# articles are the test set and each run keeps its last checkpoint (experiments/compare_budget.sh).
# LWD and TED rows take the method sections of the bundled glue/<task>/lwd and glue/<task>/ted configs
# (squad/lwd, squad/ted: the released scripts' weights); KD is TED's released definition of it (task +
# kl_alpha * T^2 KL: the LWD section with mse_alpha 0; CoLA's released sections set kl_alpha 0, which
# would make that row plain fine-tuning, so CoLA's KD takes the 20 of the other tasks' sections). Students
# take teacher layers by the paper's M(k) map at 3 layers ([1, 4, 6]) and the uniform map at 2 ([3, 6];
# M(k) is defined for halving only), and every row matches those layers.
# Usage: [TASKS='stsb mrpc rte cola sst2 squad'] [SEEDS='1, 2, 3'] [SUBSET=1500] [EPOCHS=2] [JOBS=2]
#        [THREADS=]
#        bash experiments/compare_glue.sh OUT_DIR
set -euo pipefail
out=${1:?usage: compare_glue.sh OUT_DIR}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
d=${DISTIL:-.venv/bin/distil}
source experiments/compare_budget.sh
for task in ${TASKS:-stsb mrpc rte cola sst2}; do
  teacher=$out/$task/teacher/student
  until [ -f "$teacher/recipe.json" ]; do sleep 30; done  # written by compare_teachers.sh
  cfg=$out/$task/compare.yaml
  methods=$(${PYTHON:-.venv/bin/python} - "$task" <<'PY'
import json, sys
from distil.config import bundled_configs, read_yaml
task = sys.argv[1]
family = "squad" if task == "squad" else f"glue/{task}"
lwd = read_yaml(bundled_configs()[f"{family}/lwd"])["method"]
ted = read_yaml(bundled_configs()[f"{family}/ted"])["method"]
for section in (lwd, ted):
    section.pop("layer_map")  # each row follows its student's map: paper for 3 layers, uniform for 2
kd = {**lwd, "mse_alpha": 0.0, "kl_alpha": lwd["kl_alpha"] or 20.0}  # CoLA: released kl_alpha 0
rows = {"finetune": {"name": "finetune"}, "kd": kd, "lwd": lwd, "ted": ted}
print(json.dumps(rows))
PY
)
  shapes='{2-layer: {init: layers, num_layers: 2, layer_map: uniform}, 3-layer: {init: layers, num_layers: 3, layer_map: paper}}'
  compare_config "$out/$task/compare" "$task" "$teacher" "$shapes" "$methods" > "$cfg"
  $d compare --config "$cfg" --no-progress --jobs "${JOBS:-2}" ${THREADS:+--threads "$THREADS"}
done
