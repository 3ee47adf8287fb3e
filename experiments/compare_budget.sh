# The student budget of the issue-26 compares, sourced by compare_glue.sh and compare_agnostic.sh:
# SUBSET seeded training rows, 500 held out (split seed 0) to pick each run's best end-of-epoch checkpoint,
# EPOCHS epochs, batch 32, lr 1e-4, warm-up 0.1, length 64 (CoLA, SST-2) or 128, SEEDS, the official dev
# set as the test set, the task's fine-tuned teacher shared (not trained again).
# compare_config RUN_DIR TASK TEACHER STUDENTS METHODS prints the config; STUDENTS and METHODS are YAML
# mappings (shape -> models.student section, row -> method section).
compare_config() {
  local run_dir=$1 task=$2 teacher=$3 students=$4 methods=$5 len=128
  case $task in sst2 | cola) len=64 ;; esac
  cat <<YAML
run_dir: $run_dir
models:
  teacher: $teacher
data:
  task: $task
  max_length: $len
  split_dev: 500
  split_seed: 0
  train_subset: ${SUBSET:-1500}
train:
  epochs: ${EPOCHS:-2}
  batch_size: 32
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
