"""Adapters between Hugging Face models and distillation losses: feature capture, projections, MLM masking."""

from __future__ import annotations

from distil.adapters.capture import capture_qkv, forward_features, model_inputs

__all__ = ["capture_qkv", "forward_features", "model_inputs"]
