"""Every int8 format of the test suite's tiny models, run here and on an emulated AVX2 CPU without VNNI.

Builds the tiny BERT / DeBERTa-v2 / GPT-2 classifiers, the GPT-2 LM and BERT MLM and QA heads from
``tests/factories.py`` (seeded), exports each to ONNX fp32 once, quantises it in every format of
`distil.deploy.int8` and prints, per model and format, the max relative logit difference from PyTorch and
the argmax agreement on the export's probe rows (real tokens only), every row counted (the export's own
check leaves out rows tied at int8 precision, so this is the stricter figure): on this CPU and under
``qemu-x86_64-static -cpu Haswell`` (AVX2, FMA, no AVX-512, no VNNI).

    apt-get install qemu-user-static   # once
    .venv/bin/python benchmarks/int8_cpus.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering

from distil.deploy.cpu import cpu_info
from distil.deploy.int8 import INT8_FORMATS, quantize
from distil.deploy.onnx import _trace
from distil.deploy.probe import probe_batches
from distil.deploy.runtime import HEAD_OUTPUTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from factories import tiny_config, tiny_model, tiny_tokenizer

MODELS = [
    ("bert", "seq"),
    ("deberta-v2", "seq"),
    ("gpt2", "seq"),
    ("gpt2", "lm"),
    ("bert", "mlm"),
    ("bert", "qa"),
]
_CHECK = """
import json, os, sys
import numpy as np, onnxruntime as ort
out = {}
for d in sys.argv[1:]:
    probe = dict(np.load(d + "/probe.npz")); ref = dict(np.load(d + "/ref.npz"))
    names = json.load(open(d + "/outputs.json")); mask = probe["attention_mask"].astype(bool)
    for f in sorted(p for p in os.listdir(d) if p.endswith(".onnx")):
        s = ort.InferenceSession(d + "/" + f, providers=["CPUExecutionProvider"])
        got = s.run(names, {i.name: probe[i.name] for i in s.get_inputs()})
        rel, agree = 0.0, 1.0
        for n, g in zip(names, got):
            r = ref[n]
            if r.ndim == 3:
                r, g = r[mask], g[mask]
            elif r.ndim == 2 and r.shape == mask.shape:
                r, g = np.where(mask, r, 0), np.where(mask, g, 0)
            rel = max(rel, float(np.abs(g - r).max() / np.abs(r).max()))
            agree = min(agree, float((g.argmax(-1) == r.argmax(-1)).mean()))
        out[d + "/" + f] = [rel, agree]
print(json.dumps(out))
"""


def _build(root: Path) -> list[Path]:
    dirs = []
    for family, head in MODELS:
        torch.manual_seed(0)
        if head == "qa":
            model = AutoModelForQuestionAnswering.from_config(tiny_config(family)).eval()
        else:
            model = tiny_model(family, head)
        folder = root / f"{family}-{head}"
        folder.mkdir(parents=True)
        tiny_tokenizer().save_pretrained(folder)
        trace, probe = probe_batches(model, folder)
        outputs = HEAD_OUTPUTS[head]
        with torch.no_grad():
            out = model(**probe, **({"use_cache": False} if family == "gpt2" else {}), return_dict=True)
        np.savez(folder / "probe.npz", **{k: v.numpy() for k, v in probe.items()})
        np.savez(folder / "ref.npz", **{n: out[n].float().numpy() for n in outputs})
        (folder / "outputs.json").write_text(json.dumps(list(outputs)))
        _trace(model, trace, folder / "fp32.onnx", 17, outputs)
        for fmt in INT8_FORMATS.values():
            quantize(folder / "fp32.onnx", folder / f"{fmt.name}.onnx", fmt)
        dirs.append(folder)
    return dirs


def _run(dirs: list[Path], emulator: str | None) -> dict[str, list[float]]:
    command = [sys.executable, "-c", _CHECK, *map(str, dirs)]
    if emulator:
        command = [emulator, "-cpu", "Haswell", *command]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    emulator = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    if emulator is None:
        raise SystemExit("needs qemu-x86_64 (apt-get install qemu-user-static)")
    print(f"here: {cpu_info().describe()}; emulated: qemu -cpu Haswell (AVX2, no AVX-512, no VNNI)\n")
    with tempfile.TemporaryDirectory() as tmp:
        dirs = _build(Path(tmp))
        here, emulated = _run(dirs, None), _run(dirs, emulator)
        names = ["fp32", *INT8_FORMATS]
        print("| model | " + " | ".join(f"{n}: here / emulated" for n in names) + " |")
        print("|---|" + "---|" * len(names))
        for d in dirs:
            cells = []
            for n in names:
                (r, a), (er, ea) = here[f"{d}/{n}.onnx"], emulated[f"{d}/{n}.onnx"]
                cells.append(f"{r:.3f} {a:.0%} / {er:.3f} {ea:.0%}")
            print(f"| {d.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
