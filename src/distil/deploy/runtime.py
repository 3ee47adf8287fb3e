"""Find, load and run deployed models: the Hugging Face checkpoint and its ONNX exports side by side.

A *model directory* is a saved checkpoint (``config.json`` + weights + tokenizer). A *run directory* holds
one in ``student/``. Exports live in ``<model directory>/onnx/``: ``model.onnx`` (fp32), ``model.int8.onnx``
(dynamic int8) and ``export.json`` / ``EXPORT.md`` describing how they were made.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

from distil.deploy.cpu import cpu_info
from distil.deploy.int8 import INT8_FORMATS
from distil.errors import ModelError
from distil.models.heads import HEADS, head_of_architectures
from distil.models.loading import load_model, resolve_model_path

__all__ = [
    "EXPORT_FILES",
    "HEAD_OUTPUTS",
    "OnnxModel",
    "find_exports",
    "head_of",
    "int8_format_of",
    "load_classifier",
    "load_exportable",
    "resolve_model_dir",
]

# Runtime variant -> file name inside <model>/onnx/.
EXPORT_FILES: dict[str, str] = {"onnx-fp32": "model.onnx", "onnx-int8": "model.int8.onnx"}


def resolve_model_dir(run_or_model: str | Path) -> Path:
    """The model directory of a run directory (its ``student/``) or of a saved model directory.

    ``"embedded"`` and its aliases resolve to the bundled all-MiniLM-L6-v2 directory.

    Raises:
        ModelError: Neither ``<path>/config.json`` nor ``<path>/student/config.json`` exists.
    """
    path = Path(resolve_model_path(str(run_or_model)))
    if (path / "student" / "config.json").is_file():
        return path / "student"
    if (path / "config.json").is_file():
        return path
    raise ModelError(
        f"{str(run_or_model)!r} is neither a run directory (with student/config.json) nor a saved model "
        "directory (with config.json). Pass RUN_DIR or RUN_DIR/student of a finished run."
    )


# A saved model's head (from its architectures) -> the outputs an export keeps, in order.
HEAD_OUTPUTS: dict[str, tuple[str, ...]] = {head: record.onnx_outputs for head, record in HEADS.items()}


def head_of(config: PretrainedConfig) -> str:
    """The head a saved model carries: ``seq``, ``qa``, ``lm``, ``mlm`` or ``base`` (a bare encoder)."""
    return head_of_architectures(getattr(config, "architectures", None) or ())


def _attention_for(model_dir: Path) -> str:
    # Some families (DeBERTa-v2) refuse sdpa outright; pick what the class supports instead of failing.
    config = AutoConfig.from_pretrained(model_dir)
    cls = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING.get(type(config), None)
    return "sdpa" if getattr(cls, "_supports_sdpa", False) else "eager"


def load_exportable(model_dir: str | Path) -> tuple[PreTrainedModel, str]:
    """Load a saved model of any head for export: fp32, eval mode, no gradients; returns it and its head.

    Raises:
        ModelError: The directory cannot be loaded.
    """
    path = resolve_model_dir(model_dir)
    head = head_of(AutoConfig.from_pretrained(path))
    if head == "seq":
        return load_classifier(path), head
    model = load_model(str(path), head=head, attn_implementation=_attention_for(path))
    return model.float().eval().requires_grad_(False), head


def load_classifier(model_dir: str | Path) -> PreTrainedModel:
    """Load a saved sequence classifier for inference: fp32, eval mode, no gradients, sdpa when supported.

    Raises:
        ModelError: The directory cannot be loaded.
    """
    path = resolve_model_dir(model_dir)
    model = load_model(str(path), head="seq", attn_implementation=_attention_for(path))
    return model.float().eval().requires_grad_(False)


def find_exports(model_dir: str | Path) -> dict[str, Path]:
    """The ONNX files exported beside a model: variant name (``onnx-fp32``, ``onnx-int8``) -> path."""
    onnx_dir = Path(model_dir) / "onnx"
    return {name: onnx_dir / f for name, f in EXPORT_FILES.items() if (onnx_dir / f).is_file()}


def int8_format_of(path: str | Path) -> str | None:
    """The int8 format ``export.json`` records for the graph at ``path`` (``None``: not an int8 export).

    Exports made before formats were recorded used full-range int8 weights: ``u8s8``.
    """
    path = Path(path)
    if path.name != EXPORT_FILES["onnx-int8"]:
        return None
    try:
        record = json.loads((path.parent / "export.json").read_text(encoding="utf-8"))
        entry = record["files"]["onnx-int8"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    fmt = entry.get("format", "u8s8") if isinstance(entry, dict) else None
    return fmt if fmt in INT8_FORMATS else None


class OnnxModel:
    """An onnxruntime session over an exported classifier, fed with the same batches as the PyTorch model.

    Args:
        path: An ``.onnx`` file written by `distil.deploy.export_onnx`.
        threads: Intra-op threads (``None``: as many as torch uses, so the two runtimes compete fairly).
        spin: Let idle intra-op threads spin between ops (onnxruntime's own default, what a serving
            process runs with). Off by default: spinning threads starve a PyTorch model timed right after.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        spin: bool = False,
        outputs: tuple[str, ...] = ("logits",),
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # One op at a time, each on intra_op threads: the same parallelism PyTorch uses on CPU.
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Spinning idle threads starve a PyTorch model timed right after a run (300x slower forward
        # passes on a 2-core machine), so it is off unless the caller times in blocks.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.outputs = list(outputs)
        self.int8_format = int8_format_of(self.path)
        cpu = cpu_info()
        fmt = INT8_FORMATS.get(self.int8_format or "")
        if fmt is not None and not fmt.portable and not cpu.u8s8_exact:
            warnings.warn(
                f"{self.path} uses int8 format {self.int8_format}, whose products saturate on this CPU "
                f"({cpu.describe()}): its outputs may be far from the exported check. Export again with "
                "--int8-format u8s8-reduced (the default) to run it here.",
                stacklevel=2,
            )

    def feeds(self, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """The session inputs from a collated batch (int64 arrays; extra keys are dropped).

        A missing ``token_type_ids`` is zeros and a missing ``attention_mask`` is ones, the defaults the
        PyTorch model applies itself (RoBERTa tokenizers emit no token types, yet the graph takes them).

        Raises:
            ModelError: The batch has no ``input_ids``.
        """
        if "input_ids" not in batch:
            raise ModelError(f"{self.path} needs input_ids, which the batch does not have.")
        ids = batch["input_ids"]
        defaults = {"token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids)}
        return {
            n: batch.get(n, defaults.get(n, ids)).detach().cpu().numpy().astype(np.int64)
            for n in self.input_names
        }

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Logits ``(B, num_labels)`` for prepared ``feeds`` (see `feeds`): the first output."""
        return self.session.run(self.outputs[:1], feeds)[0]

    def run_all(self, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """Every output of the session, in ``outputs`` order, for a collated batch."""
        return list(self.session.run(self.outputs, self.feeds(batch)))

    def __call__(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """Logits ``(B, num_labels)`` of a collated batch."""
        return self.run(self.feeds(batch))
