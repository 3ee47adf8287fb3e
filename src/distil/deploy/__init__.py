"""Deployment: ONNX export (fp32 and dynamic int8) verified against PyTorch, and running the exports."""

from __future__ import annotations

from distil.deploy.onnx import (
    FP32_MAX_REL_DIFF,
    INT8_MAX_REL_DIFF,
    INT8_MIN_AGREEMENT,
    ExportError,
    ExportResult,
    LogitDiff,
    compare_logits,
    export_onnx,
)
from distil.deploy.runtime import OnnxModel, find_exports, load_classifier, resolve_model_dir

__all__ = [
    "FP32_MAX_REL_DIFF",
    "INT8_MAX_REL_DIFF",
    "INT8_MIN_AGREEMENT",
    "ExportError",
    "ExportResult",
    "LogitDiff",
    "OnnxModel",
    "compare_logits",
    "export_onnx",
    "find_exports",
    "load_classifier",
    "resolve_model_dir",
]
