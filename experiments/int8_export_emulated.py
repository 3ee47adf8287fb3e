"""`export_onnx(..., int8=True)` itself, run on an emulated AVX2 CPU without VNNI: trace, quantise, check.

    cp -r runs/main/kd/student /tmp/emu-student && rm -rf /tmp/emu-student/onnx
    qemu-x86_64-static -cpu Haswell .venv/bin/python experiments/int8_export_emulated.py

Exports the test suite's tiny BERT, DeBERTa-v2 and GPT-2 classifiers (3 classes) and the main job's KD
student with the default int8 format; every check runs on the emulated CPU's kernels (about 10 minutes).
``export.json`` records the host's /proc/cpuinfo flags, which qemu does not change.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from distil.deploy import ExportResult, export_onnx
from factories import save_tiny_pair


def _line(name: str, r: ExportResult) -> str:
    assert r.int8 is not None
    int8 = f"int8 {r.int8.max_rel:.3f}, argmax agreement {r.int8.agreement:.0%}"
    return f"{name}: fp32 {r.fp32.max_rel:.2g}; {int8}"


for family in ("bert", "deberta-v2", "gpt2"):
    folder = save_tiny_pair(Path(f"/tmp/emu-tiny/{family}"), family, num_labels=3)
    print(_line(family, export_onnx(folder, int8=True, overwrite=True)), flush=True)
print(_line("main-job student", export_onnx("/tmp/emu-student", int8=True, overwrite=True)), flush=True)
