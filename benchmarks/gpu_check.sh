#!/usr/bin/env bash
# GPU check (issue 14): distil's training step beside a plain PyTorch floor, as samples/s and peak memory,
# for bf16 KD Llama ~1.1B -> ~0.3B at sequence 1024, MiniLMv2 BERT-base -> 6x384 at 32 x 512, and the fp16
# path (KD, BERT-base -> 6 layers, 32 x 128). Random-weight models from configs, no downloads; under 8
# minutes on one H200. Then an on-policy distillation step (GKD) beside its floor, and HomoDistil pruning a
# Llama-style decoder while distilling it. Each measurement runs in a fresh process, so peak memory is its own.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine; results in $OUT (or /tmp/gpu_check)
#   bash benchmarks/gpu_check.sh tiny       # tiny sizes: a CPU check of syntax and shapes
#
# The GPU machine's image has PyTorch and transformers but not `datasets` (or its dill and multiprocess):
# carry them as wheels in .whl (see the device tool's README); they are installed here when present.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-full}
RESULTS_DIR=${OUT:-/tmp/gpu_check}
mkdir -p "$RESULTS_DIR"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RESULTS="$RESULTS_DIR/gpu_check-$SIZE.jsonl"
: > "$RESULTS"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
for case in kd_llama_bf16 minilmv2_bert_base kd_bert_fp16; do
  start=$(date +%s)
  "$PY" benchmarks/gpu_check.py prepare --case "$case" --size "$SIZE" --work "$WORK"
  for impl in floor distil; do
    "$PY" benchmarks/gpu_check.py run --case "$case" --impl "$impl" --size "$SIZE" --work "$WORK" \
      2> >(grep -v -e "it/s]" -e "^\s*$" >&2) | tail -n 1 | tee -a "$RESULTS"
  done
  rm -rf "${WORK:?}/$case"
  echo "$case: $(( $(date +%s) - start )) s"
done
"$PY" benchmarks/gpu_check.py report --results "$RESULTS"
# On-policy distillation (issue 23): one GKD step (generate 256 tokens, teacher scores, student step) beside
# a hand-written floor, Llama-style ~0.9B teacher -> 4 of its layers (~0.3B), bf16 mixed precision.
if [ "$SIZE" = tiny ]; then POLICY="--layers 2 --width 64 --new 4 --repeats 1 --warmup 0"
else POLICY="--layers 16 --width 2048 --student-layers 4 --new 256 --repeats 5 --warmup 1 --precision bf16-mixed"; fi
# shellcheck disable=SC2086
"$PY" benchmarks/on_policy_step.py $POLICY 2> >(grep -v -e "it/s]" -e "^\s*$" >&2) | tee -a "$RESULTS_DIR/on_policy-$SIZE.txt"
# Pruning while distilling (issue 24): HomoDistil on a Llama-style ~1.1B teacher (22 x 2048, 32 query heads
# in 4 KV groups, SwiGLU 5632) pruned to 0.7 of every width (~0.5B), bf16 mixed precision, 4 x 1024
# tokens: its step at the target widths beside KD on a fresh student of that config, and one prune event.
if [ "$SIZE" = tiny ]; then PRUNE="layers: 2\nhidden: 64\nheads: 4\nkv_heads: 2\nffn: 128\nbatch: 2\nseq: 32\nrepeats: 1\nwarmup: 0"
else PRUNE="layers: 22\nhidden: 2048\nheads: 32\nkv_heads: 4\nffn: 5632\nbatch: 4\nseq: 1024\nrepeats: 5\nwarmup: 2\nratio: 0.7\nprecision: bf16-mixed"; fi
printf "%b\n" "$PRUNE" > "$WORK/prune.yaml"
"$PY" benchmarks/homodistil_decoder.py --config "$WORK/prune.yaml" --json "$RESULTS_DIR/homodistil_decoder-$SIZE.json" \
  2> >(grep -v -e "it/s]" -e "^\s*$" >&2) | tee "$RESULTS_DIR/homodistil_decoder-$SIZE.txt"
