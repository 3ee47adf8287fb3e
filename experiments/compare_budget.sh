# The student budget of the issue-26 compares, sourced by compare_glue.sh and compare_agnostic.sh:
# SUBSET seeded training rows, 500 held out (split seed 0) to pick each run's best end-of-epoch checkpoint,
# EPOCHS epochs, batch 32, lr 1e-4, warm-up 0.1, length 64 (CoLA, SST-2) or 128, SEEDS, the official dev
# set as the test set, the task's fine-tuned teacher shared (not trained again).
# compare_config RUN_DIR TASK TEACHER STUDENTS METHODS prints the config; STUDENTS and METHODS are YAML
# mappings (shape -> models.student section, row -> method section).
# SQuAD v1.1 (only its dev file is offline) keeps its teacher's article split
# (experiments/compare_teachers.sh: 20 % of the articles held out, split seed 0): SUBSET seeded questions of the other articles train, every
# held-out question is the test set, and since no second held-out set is left to pick a checkpoint on,
# each run exports its last (eval.select: last); length 192, doc stride 64, batch 16, as its teacher.
compare_config() {
  local run_dir=$1 task=$2 teacher=$3 students=$4 methods=$5 len=128 batch=32
  case $task in sst2 | cola) len=64 ;; squad) batch=16 ;; esac
  cat <<YAML
run_dir: $run_dir
models:
  teacher: $teacher
YAML
  if [ "$task" = squad ]; then
    cat <<YAML
data:
  task: squad
  dev_file: squad/v1.1/dev-v1.1.json
  max_length: 192
  doc_stride: 64
  split_dev: 0.2
  split_seed: 0
  train_subset: ${SUBSET:-1500}
eval:
  select: last
YAML
  else
    cat <<YAML
data:
  task: $task
  max_length: $len
  split_dev: 500
  split_seed: 0
  train_subset: ${SUBSET:-1500}
YAML
  fi
  cat <<YAML
train:
  epochs: ${EPOCHS:-2}
  batch_size: $batch
  lr: 1.0e-4
  warmup_ratio: 0.1
  report_to: []
compare:
  seeds: [${SEEDS:-1, 2, 3}]
  teacher: {finetune: false}
  students: $students
  methods: $methods
  latency: {seq_length: 128, batch_sizes: [1, 32], repeats: 20}
YAML
}
