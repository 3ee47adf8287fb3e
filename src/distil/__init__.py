"""distil: knowledge distillation of Hugging Face Transformers on one training loop.

The public API, importable from the package itself (each name loads its module on first use, so
``import distil`` stays cheap)::

    import distil

    cfg = distil.load_config("glue/sst2/kd", ["train.epochs=2"])  # a bundled name or a YAML file
    result = distil.run(cfg)  # any run: its plan's steps, in order
    distil.export_onnx(result.run_dir, int8=True)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_API = {
    "load_config": "distil.config",
    "build_run_config": "distil.config",
    "run": "distil.plans",
    "plan_for": "distil.plans",
    "train": "distil.training.loop",
    "RunResult": "distil.training.loop",
    "export_onnx": "distil.deploy.onnx",
    "OnnxModel": "distil.deploy.runtime",
    "run_bench": "distil.bench",
    "DistilError": "distil.errors",
}
__all__ = [
    "DistilError",
    "OnnxModel",
    "RunResult",
    "__version__",
    "build_run_config",
    "export_onnx",
    "load_config",
    "plan_for",
    "run",
    "run_bench",
    "train",
]

if TYPE_CHECKING:
    from distil.bench import run_bench
    from distil.config import build_run_config, load_config
    from distil.deploy.onnx import export_onnx
    from distil.deploy.runtime import OnnxModel
    from distil.errors import DistilError
    from distil.plans import plan_for, run
    from distil.training.loop import RunResult, train


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'distil' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
