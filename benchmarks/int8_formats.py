"""int8 formats of one classifier side by side: accuracy here and on an emulated AVX2 CPU, and latency.

For a trained classifier (a run directory or model directory) and a GLUE-style TSV dev file
(``sentence<TAB>label``): the fp32 ONNX graph is exported once and quantised in every format of
`distil.deploy.int8`. Accuracy is measured for PyTorch, fp32 ONNX and each int8 graph on this CPU and,
with ``--emulate``, under ``qemu-x86_64 -cpu Haswell`` (AVX2, no AVX-512, no VNNI), where full-range int8
weights saturate. Latency (batch 1 and 32, random ids at ``--seq-length``) is timed interleaved, every
runtime in turn within each repeat, so the ratios stay meaningful under load.

    .venv/bin/python benchmarks/int8_formats.py runs/main/kd ../shared/data/glue/SST-2/dev.tsv --emulate
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from distil.adapters import model_inputs
from distil.deploy import export_onnx, load_classifier, resolve_model_dir
from distil.deploy.cpu import cpu_info
from distil.deploy.int8 import INT8_FORMATS, quantize
from distil.deploy.runtime import OnnxModel
from distil.evaluation.speed import random_batch, time_interleaved
from distil.models.loading import load_tokenizer

_SCORE = """
import json, sys
import numpy as np, onnxruntime as ort
feeds = np.load(sys.argv[1])
out = {}
for path in sys.argv[2:]:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in s.get_inputs()]
    correct, worst = 0, 0.0
    for b in range(int(feeds["batches"])):
        f = {n: feeds[f"{n}_{b}"] for n in names}
        logits, ref = s.run(None, f)[0], feeds[f"torch_{b}"]
        correct += int((logits.argmax(-1) == feeds[f"labels_{b}"]).sum())
        worst = max(worst, float(np.abs(logits - ref).max() / np.abs(ref).max()))
    out[path] = [correct / int(feeds["rows"]), worst]
print(json.dumps(out))
"""


def _dev_batches(
    model_dir: Path, dev_file: Path, batch_size: int, max_length: int, limit: int | None = None
) -> dict[str, np.ndarray]:
    tokenizer = load_tokenizer(str(model_dir))
    with dev_file.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    rows = rows[:limit] if limit else rows
    arrays: dict[str, np.ndarray] = {"rows": np.array(len(rows))}
    batches = 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        enc = tokenizer(
            [r[0] for r in chunk], padding=True, truncation=True, max_length=max_length, return_tensors="np"
        )
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            arrays[f"{name}_{batches}"] = enc.get(name, np.zeros_like(enc["input_ids"])).astype(np.int64)
        arrays[f"labels_{batches}"] = np.array([int(r[1]) for r in chunk])
        batches += 1
    arrays["batches"] = np.array(batches)
    return arrays


def _torch_accuracy(model_dir: Path, feeds: dict[str, np.ndarray]) -> float:
    """PyTorch's accuracy; its logits are kept in ``feeds`` (``torch_<b>``) as the reference."""
    model = load_classifier(model_dir)
    correct = 0
    with torch.inference_mode():
        for b in range(int(feeds["batches"])):
            names = ("input_ids", "attention_mask", "token_type_ids")
            inputs = model_inputs(model, {n: torch.from_numpy(feeds[f"{n}_{b}"]) for n in names})
            logits = model(**inputs).logits.numpy()
            feeds[f"torch_{b}"] = logits
            correct += int((logits.argmax(-1) == feeds[f"labels_{b}"]).sum())
    return correct / int(feeds["rows"])


def _score(feeds_path: Path, graphs: list[Path], emulator: str | None) -> dict[str, list[float]]:
    command = [sys.executable, "-c", _SCORE, str(feeds_path), *map(str, graphs)]
    if emulator:
        command = [emulator, "-cpu", "Haswell", *command]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="Run directory or model directory of a classifier.")
    parser.add_argument("dev_file", type=Path, help="TSV with a header, sentence then integer label.")
    parser.add_argument("--emulate", action="store_true", help="Also score the int8 graphs under qemu.")
    parser.add_argument(
        "--emulate-rows", type=int, default=256, help="Dev rows scored under emulation (about 100x slower)."
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    emulator = (shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")) if args.emulate else None
    if args.emulate and emulator is None:
        raise SystemExit("--emulate needs qemu-x86_64 (apt-get install qemu-user-static)")
    print(f"CPU: {cpu_info().describe()}; torch threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "model"
        shutil.copytree(resolve_model_dir(args.model), work, ignore=shutil.ignore_patterns("onnx"))
        fp32 = export_onnx(work).fp32_path
        graphs = {"onnx-fp32": fp32}
        for fmt in INT8_FORMATS.values():
            graphs[f"int8 {fmt.name}"] = fp32.with_name(f"{fmt.name}.onnx")
            quantize(fp32, graphs[f"int8 {fmt.name}"], fmt)
        feeds = _dev_batches(work, args.dev_file, 32, args.max_length)
        feeds_path = Path(tmp) / "feeds.npz"
        accuracy = {"pytorch": _torch_accuracy(work, feeds)}
        np.savez(feeds_path, **feeds)
        native = _score(feeds_path, list(graphs.values()), None)
        emulated: dict[str, list[float]] = {}
        few_native: dict[str, list[float]] = {}
        if emulator:
            # Emulation is about 100x slower: the first rows only, every runtime scored on them here too.
            few = _dev_batches(work, args.dev_file, 32, args.max_length, limit=args.emulate_rows)
            few_path = Path(tmp) / "few.npz"
            _torch_accuracy(work, few)
            np.savez(few_path, **few)
            int8 = [g for name, g in graphs.items() if name.startswith("int8")]
            emulated = _score(few_path, int8, emulator)
            few_native = _score(few_path, int8, None)
        model = load_classifier(work)
        sessions = {name: OnnxModel(path, threads=args.threads) for name, path in graphs.items()}
        vocab = int(model.config.vocab_size)
        latency = {}
        for bs in (1, 32):
            batch = random_batch(vocab, bs, args.seq_length)
            fns = {"pytorch": _bind_torch(model, batch)}
            fns |= {name: _bind_onnx(s, s.feeds(batch)) for name, s in sessions.items()}
            repeats = args.repeats if bs == 1 else max(5, args.repeats // 4)
            latency[bs] = time_interleaved(fns, repeats=repeats)
    rows = int(feeds["rows"])
    if emulated:
        print(f"\nemulated: qemu -cpu Haswell on the first {args.emulate_rows} dev rows")
    print(f"\n{rows} dev rows; latency: median ms over interleaved repeats, sequence {args.seq_length}\n")
    head = "| runtime | accuracy | max rel diff | first rows: accuracy, max rel diff here / emulated AVX2 "
    head += "| b=1 ms | b=32 ms | PyTorch/it b=1 | b=32 |"
    print(head + "\n|---|---|---|---|---|---|---|---|")
    for name in ["pytorch", *graphs]:
        here, diff = (accuracy["pytorch"], 0.0) if name == "pytorch" else native[str(graphs[name])]
        key = str(graphs.get(name, ""))
        emu = ""
        if key in emulated:
            (a, d), (ea, ed) = few_native[key], emulated[key]
            emu = f"{a:.4f}, {d:.3f} / {ea:.4f}, {ed:.3f}"
        t1, t32 = latency[1][name].median_ms, latency[32][name].median_ms
        r1 = latency[1]["pytorch"].median_ms / t1
        r32 = latency[32]["pytorch"].median_ms / t32
        print(f"| {name} | {here:.4f} | {diff:.3f} | {emu} | {t1:.2f} | {t32:.1f} | {r1:.2f}x | {r32:.2f}x |")


def _bind_torch(model: torch.nn.Module, batch: dict[str, torch.Tensor]):  # noqa: ANN202
    inputs = model_inputs(model, batch)

    @torch.inference_mode()
    def call() -> object:
        return model(**inputs).logits

    return call


def _bind_onnx(session: OnnxModel, feeds: dict[str, np.ndarray]):  # noqa: ANN202
    return lambda: session.run(feeds)


if __name__ == "__main__":
    main()
