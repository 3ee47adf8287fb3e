"""Export a saved model to ONNX (fp32, optionally dynamic int8), verified before it is kept.

Every head distil trains exports: a sequence classifier (``logits``), extractive QA (``start_logits``,
``end_logits``), a causal or masked LM (token ``logits``) and a bare encoder (``last_hidden_state``). Both
files are checked against PyTorch on a padded probe batch with a real attention mask, at a batch size and
length other than the traced ones (so the dynamic axes are exercised too), on every output. A file that
fails its tolerance is deleted and `ExportError` names the measured difference.

With ``optimize``, the graph is traced with eager attention and fused by onnxruntime's transformer
optimiser (attention, embedding + LayerNorm, skip LayerNorm, bias GELU) before it is checked and
quantised; the fused graph uses onnxruntime's contrib operators, so it runs on onnxruntime only.

Tolerances (``docs/deploy.md``):
- fp32: ``max|onnx - torch| / max|torch| <= 1e-4`` over the probe logits (measured: about 1e-7).
- int8: ``max|int8 - torch| / max|torch| <= 0.2`` and the argmax agrees on at least 90 % of the probe
  rows (real tokens' rows for token-level outputs; a bare encoder's hidden states have no argmax).
  Dynamic quantisation rounds weights to 7 or 8 bits and activations per batch, so a few per cent of the
  logit scale is expected (measured: 1-6 %); the bound catches broken graphs (saturated int8 products, a
  wrong input order), whose errors reach the logit scale itself.

The int8 format (`distil.deploy.int8`) defaults to one whose integer arithmetic is the same on every CPU,
so the check made on the exporting CPU holds on any other; ``export.json`` records the format and the
exporting CPU's int8 features.
"""

from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel

from distil.deploy.cpu import cpu_info
from distil.deploy.int8 import DEFAULT_INT8_FORMAT, Int8Format, get_int8_format, quantize
from distil.deploy.probe import probe_batches
from distil.deploy.record import versions, write_record
from distil.deploy.runtime import (
    EXPORT_FILES,
    HEAD_OUTPUTS,
    OnnxModel,
    head_of,
    load_exportable,
    resolve_model_dir,
)
from distil.errors import DistilError
from distil.models.families import FAMILIES, family_of
from distil.progress import Phase

__all__ = [
    "FP32_MAX_REL_DIFF",
    "INT8_MAX_REL_DIFF",
    "INT8_MIN_AGREEMENT",
    "OPSET",
    "ExportError",
    "ExportResult",
    "LogitDiff",
    "compare_logits",
    "export_onnx",
]

OPSET = 17
FP32_MAX_REL_DIFF = 1e-4
INT8_MAX_REL_DIFF = 0.2
INT8_MIN_AGREEMENT = 0.9
RECORD_FILES = ("export.json", "EXPORT.md")


class ExportError(DistilError):
    """An export cannot be written, or its outputs differ from PyTorch beyond the tolerance."""


@dataclass(frozen=True)
class LogitDiff:
    """How far exported logits are from PyTorch's on the probe batch.

    Attributes:
        max_abs: Largest absolute difference of any logit.
        max_rel: ``max_abs`` over the largest absolute PyTorch logit.
        agreement: Fraction of the decided rows whose argmax is the same (1.0 when none is decided).
        rows: Rows compared.
        decided: Rows whose PyTorch top-1 beats its runner-up by at least the tie margin (all rows for
            fp32; for int8 the tolerated error, ``INT8_MAX_REL_DIFF`` of the largest logit: a closer
            decision is a tie at int8 precision, which the accepted error may flip either way).
    """

    max_abs: float
    max_rel: float
    agreement: float
    rows: int
    decided: int


@dataclass(frozen=True)
class ExportResult:
    """The files one export wrote and how they compared with PyTorch."""

    model_dir: Path
    fp32_path: Path
    fp32: LogitDiff
    int8_path: Path | None
    int8: LogitDiff | None
    inputs: list[str]
    record_path: Path
    int8_format: str | None = None


def compare_logits(reference: np.ndarray, candidate: np.ndarray, tie: float = 0.0) -> LogitDiff:
    """Compare candidate logits ``(B, C)`` with reference logits of the same shape.

    Args:
        reference: PyTorch's logits.
        candidate: The exported graph's.
        tie: Argmax agreement counts the rows whose reference margin (top-1 minus runner-up) is at least
            ``tie`` times the largest absolute reference logit; closer rows are ties.

    Raises:
        ExportError: The shapes differ.
    """
    if reference.shape != candidate.shape:
        raise ExportError(f"Exported logits have shape {candidate.shape}, PyTorch's {reference.shape}.")
    abs_diff = float(np.abs(candidate.astype(np.float64) - reference).max())
    scale = max(float(np.abs(reference).max()), 1e-12)
    same = candidate.argmax(-1) == reference.argmax(-1)
    if reference.shape[-1] > 1:
        top = np.sort(reference, axis=-1)
        decided = top[..., -1] - top[..., -2] >= tie * scale
    else:
        decided = np.ones(same.shape, dtype=bool)
    agree = float(same[decided].mean()) if decided.any() else 1.0
    return LogitDiff(abs_diff, abs_diff / scale, agree, int(reference.shape[0]), int(decided.sum()))


class _Outputs(nn.Module):
    """Positional tensors in, the head's outputs out: the signature the TorchScript exporter can trace."""

    def __init__(self, model: PreTrainedModel, names: list[str], outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names, self.outputs = model, names, outputs
        self.extra = {"use_cache": False} if family_of(model).causal else {}

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.names, inputs, strict=True)), **self.extra, return_dict=True)
        return tuple(out[name] for name in self.outputs)


def _trace(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], path: Path, opset: int, outputs: tuple[str, ...]
) -> None:
    names = list(batch)
    pooled = outputs == ("logits",) and _head(model) == "seq"  # one row per example
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes |= {o: ({0: "batch"} if pooled else {0: "batch", 1: "sequence"}) for o in outputs}
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter warns that it is deprecated and that traced shapes may be constant; both are
        # covered by the verification below, which runs other shapes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Outputs(model, names, outputs),
            tuple(batch.values()),
            str(path),
            input_names=names,
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )


def _head(model: PreTrainedModel) -> str:
    return head_of(model.config)


def _rows(array: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Token-level outputs as rows of their last axis, real tokens only (padding is never read)."""
    if array.ndim == 3 and mask is not None:
        return array[mask.astype(bool)]
    return array.reshape(-1, array.shape[-1]) if array.ndim > 1 else array.reshape(1, -1)


def _compare_all(
    references: list[np.ndarray],
    candidates: list[np.ndarray],
    mask: np.ndarray | None,
    argmax: bool,
    tie: float = 0.0,
) -> LogitDiff:
    """The worst difference over every output (QA has two), on real tokens."""
    diffs = []
    for ref, cand in zip(references, candidates, strict=True):
        if ref.shape != cand.shape:
            raise ExportError(f"Exported outputs have shape {cand.shape}, PyTorch's {ref.shape}.")
        if ref.ndim == 2 and mask is not None and ref.shape == mask.shape:  # QA: one score per token
            ref, cand = np.where(mask.astype(bool), ref, 0.0), np.where(mask.astype(bool), cand, 0.0)
        diffs.append(compare_logits(_rows(ref, mask), _rows(cand, mask), tie))
    return LogitDiff(
        max(d.max_abs for d in diffs),
        max(d.max_rel for d in diffs),
        min(d.agreement for d in diffs) if argmax else 1.0,
        sum(d.rows for d in diffs),
        sum(d.decided for d in diffs),
    )


def _check(
    path: Path,
    references: list[np.ndarray],
    probe: dict[str, torch.Tensor],
    int8: bool,
    outputs: tuple[str, ...],
    argmax: bool,
) -> LogitDiff:
    mask = probe["attention_mask"].numpy() if "attention_mask" in probe else None
    # int8: a decision closer than the tolerated error is a tie, which that error may flip either way.
    tie = INT8_MAX_REL_DIFF if int8 else 0.0
    diff = _compare_all(references, OnnxModel(path, outputs=outputs).run_all(probe), mask, argmax, tie)
    limit = INT8_MAX_REL_DIFF if int8 else FP32_MAX_REL_DIFF
    kind = "int8" if int8 else "fp32"
    hint = (
        "Export without --int8 and keep the fp32 graph, which is verified separately."
        if int8
        else "An operator is traced or run differently from PyTorch; please report it with config.json."
    )
    if diff.max_rel > limit or (int8 and diff.agreement < INT8_MIN_AGREEMENT):
        raise ExportError(
            f"The {kind} ONNX model differs from PyTorch on the probe batch: max relative difference "
            f"{diff.max_rel:.3g} (max abs {diff.max_abs:.3g}; tolerance {limit:g}), argmax agreement "
            f"{diff.agreement:.0%} of {diff.decided} decided rows. No file was kept. {hint}"
        )
    return diff


def _optimize(path: Path, model: PreTrainedModel, optimizer_type: str) -> None:
    """Fuse the graph at ``path`` in place with onnxruntime's transformer optimiser of ``optimizer_type``."""
    from onnxruntime.transformers.optimizer import optimize_model

    config = model.config
    fused = optimize_model(
        str(path), model_type=optimizer_type, num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size), opt_level=0,
    )  # fmt: skip
    if not fused.get_fused_operator_statistics().get("Attention"):
        raise ExportError(
            f"onnxruntime's optimiser fused no attention in this {config.model_type} graph; export without "
            "--optimize (the plain graph is verified and runs on any ONNX runtime)."
        )
    fused.save_model_to_file(str(path))


def _int8_format(name: str) -> Int8Format:
    try:
        fmt = get_int8_format(name)
    except ValueError as err:
        raise ExportError(f"{err} (--int8-format)") from None
    cpu = cpu_info()
    if not fmt.portable and not cpu.u8s8_exact:
        # The check would run on the saturating kernel: it may refuse the model, or pass a graph that is
        # less accurate here than it would be on a VNNI machine. Either way the record would mislead.
        raise ExportError(
            f"int8 format {fmt.name} is exact only on CPUs with VNNI, and this one is "
            f"{cpu.describe()}; use --int8-format {DEFAULT_INT8_FORMAT} (the default, exact on every CPU) "
            "or u8u8."
        )
    return fmt


def _prepare_dir(onnx_dir: Path, int8: bool, overwrite: bool) -> None:
    wanted = [EXPORT_FILES["onnx-fp32"], *([EXPORT_FILES["onnx-int8"]] if int8 else [])]
    existing = [name for name in wanted if (onnx_dir / name).exists()]
    if existing and not overwrite:
        raise ExportError(
            f"{onnx_dir} already holds {', '.join(existing)}. Pass --overwrite (overwrite=True) to replace "
            "the export."
        )
    onnx_dir.mkdir(parents=True, exist_ok=True)
    # A replaced fp32 graph makes an older int8 file and record stale, so they go too.
    for name in [*EXPORT_FILES.values(), *RECORD_FILES]:
        (onnx_dir / name).unlink(missing_ok=True)


def export_onnx(
    run_or_model: str | Path,
    *,
    int8: bool = False,
    int8_format: str = DEFAULT_INT8_FORMAT,
    optimize: bool = False,
    overwrite: bool = False,
    opset: int = OPSET,
) -> ExportResult:
    """Export a saved model to ``<model>/onnx/model.onnx`` (and ``model.int8.onnx``), verified.

    Args:
        run_or_model: A run directory (its ``student/`` is exported) or a saved model directory.
        int8: Also write a dynamically quantised copy (int8 weights, activations quantised per batch).
        int8_format: How it is quantised (`distil.deploy.int8.INT8_FORMATS`); the default computes the
            same integers on every CPU.
        optimize: Fuse both graphs with onnxruntime's transformer optimiser (families in
            whose `distil.models.families` record names an ``onnx_optimizer``; onnxruntime-only graphs, faster
            on CPU).
        overwrite: Replace an existing export instead of refusing.
        opset: ONNX opset of the graph.

    Returns:
        The written files and their measured differences from PyTorch.

    Raises:
        ModelError: The directory does not hold a loadable model.
        ExportError: An export exists and ``overwrite`` is false, a causal model has no pad token,
            ``optimize`` is asked for another family, the int8 format is unknown or not exact on this CPU,
            or an exported model is outside its tolerance (nothing is kept then).
    """
    fmt = _int8_format(int8_format) if int8 else None
    model_dir = resolve_model_dir(run_or_model)
    model, head = load_exportable(model_dir)
    outputs = HEAD_OUTPUTS[head]
    optimizer_type = family_of(model).onnx_optimizer
    if optimize and optimizer_type is None:
        optimizable = [name for name, f in FAMILIES.items() if f.onnx_optimizer is not None]
        raise ExportError(
            f"--optimize supports {', '.join(optimizable)}, not {model.config.model_type}; export without it."
        )
    if optimize:
        # onnxruntime's fusion patterns match the eager attention graph, not the SDPA one.
        model.set_attn_implementation("eager")
    if head == "seq" and family_of(model).causal and model.config.pad_token_id is None:
        raise ExportError(
            f"{model_dir}: a {model.config.model_type} classifier needs pad_token_id in config.json to "
            "find each row's last token in a padded batch; set it (e.g. to the eos id) and export again."
        )
    onnx_dir = model_dir / "onnx"
    _prepare_dir(onnx_dir, int8, overwrite)
    trace_batch, probe = probe_batches(model, model_dir)
    with torch.no_grad():
        extra = {"use_cache": False} if family_of(model).causal else {}
        out = model(**probe, **extra, return_dict=True)
        references = [out[name].float().numpy() for name in outputs]
    argmax = head != "base"
    fp32_path, int8_path = onnx_dir / EXPORT_FILES["onnx-fp32"], onnx_dir / EXPORT_FILES["onnx-int8"]
    tmp32, tmp8 = onnx_dir / f".tmp{os.getpid()}.onnx", onnx_dir / f".tmp{os.getpid()}.int8.onnx"
    # Steps: trace, (fuse,) check; (quantise, check): a line every 30 s of a long export, and its end.
    phase = Phase(f"exporting {model_dir.name} to ONNX", 2 + bool(optimize) + 2 * (fmt is not None), "steps")
    try:
        _trace(model, trace_batch, tmp32, opset, outputs)
        phase.update()
        if optimizer_type is not None and optimize:
            _optimize(tmp32, model, optimizer_type)
            phase.update()
        fp32 = _check(tmp32, references, probe, False, outputs, argmax)
        phase.update()
        int8_diff = None
        if fmt is not None:
            quantize(tmp32, tmp8, fmt)
            phase.update()
            int8_diff = _check(tmp8, references, probe, True, outputs, argmax)
            phase.update()
            os.replace(tmp8, int8_path)
        os.replace(tmp32, fp32_path)
        phase.close()
    finally:
        tmp32.unlink(missing_ok=True)
        tmp8.unlink(missing_ok=True)
    result = ExportResult(
        model_dir,
        fp32_path,
        fp32,
        int8_path if int8 else None,
        int8_diff,
        list(probe),
        onnx_dir / "export.json",
        fmt.name if fmt is not None else None,
    )
    _write_record(result, model, opset, probe, optimize, head, outputs)
    return result


def _write_record(
    result: ExportResult,
    model: PreTrainedModel,
    opset: int,
    probe: dict[str, Any],
    optimize: bool,
    head: str,
    outputs: tuple[str, ...],
) -> None:
    files: dict[str, Any] = {
        "onnx-fp32": {
            "file": result.fp32_path.name,
            "bytes": result.fp32_path.stat().st_size,
            "check": asdict(result.fp32),
            "tolerance": {"max_rel": FP32_MAX_REL_DIFF},
        }
    }
    if result.int8_path is not None and result.int8 is not None and result.int8_format is not None:
        fmt = get_int8_format(result.int8_format)
        files["onnx-int8"] = {
            "file": result.int8_path.name,
            "bytes": result.int8_path.stat().st_size,
            "format": fmt.name,
            "format_summary": fmt.summary,
            "portable": fmt.portable,
            "quantization": fmt.call(),
            "check": asdict(result.int8),
            "tolerance": {"max_rel": INT8_MAX_REL_DIFF, "min_agreement": INT8_MIN_AGREEMENT},
        }
    record = {
        "format": "onnx",
        "exporter": "torch.onnx.export(dynamo=False), the TorchScript-based exporter",
        "opset": opset,
        "optimizer": "onnxruntime.transformers.optimizer.optimize_model("
        f"model_type={family_of(model).onnx_optimizer!r}, opt_level=0)"
        if optimize
        else None,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "cpu": cpu_info().as_dict(),  # the exporting CPU: the int8 check ran on its kernels
        "model_type": model.config.model_type,
        "attn_implementation": model.config._attn_implementation,
        "head": head,
        "inputs": result.inputs,
        "outputs": list(outputs),
        "dynamic_axes": {
            **{n: ["batch", "sequence"] for n in result.inputs},
            **{o: ["batch"] if head == "seq" else ["batch", "sequence"] for o in outputs},
        },
        "probe": {"rows": int(probe["input_ids"].shape[0]), "length": int(probe["input_ids"].shape[1])},
        "files": files,
    }
    write_record(result.record_path, record)
