"""The precision policy: the dtypes of the student's weights, of its compute, and of the teacher.

==============  ======================  ================  ========================  ==================
policy          student weights         student compute   teacher (default)         loss scaling
==============  ======================  ================  ========================  ==================
``fp32``        float32                 float32           float32                   no
``bf16-mixed``  float32 (master)        bfloat16          bfloat16                  no
``bf16-pure``   bfloat16                bfloat16          bfloat16                  no
``fp16-mixed``  float32 (master)        float16           float16                   dynamic (GradScaler)
==============  ======================  ================  ========================  ==================

Mixed compute is autocast without FSDP and FSDP2's ``MixedPrecisionPolicy`` (gradients reduced in
float32) with it. The models are loaded in these dtypes whatever their checkpoints store, so a bfloat16
checkpoint does not silently give a pure-bfloat16 student. Losses that need float32 compute in float32
under every policy (they cast their inputs).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from distil.errors import ConfigError

__all__ = ["DTYPES", "Precision", "precision_policy"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_COMPUTE = {
    "fp32": None,
    "bf16-mixed": torch.bfloat16,
    "bf16-pure": torch.bfloat16,
    "fp16-mixed": torch.float16,
}


@dataclass(frozen=True)
class Precision:
    """A resolved precision policy.

    Attributes:
        name: ``train.precision``.
        param_dtype: The student's (and the method's trainable modules') weights.
        compute_dtype: The dtype of the student's matrix work (``None``: its weights' dtype).
        teacher_dtype: The teacher's weights and compute.
    """

    name: str
    param_dtype: torch.dtype
    compute_dtype: torch.dtype | None
    teacher_dtype: torch.dtype

    @property
    def mixed(self) -> bool:
        """Compute in a lower precision than the weights."""
        return self.compute_dtype is not None and self.compute_dtype != self.param_dtype

    @property
    def scaled(self) -> bool:
        """float16 compute needs dynamic loss scaling."""
        return self.compute_dtype == torch.float16

    @contextmanager
    def autocast(self, device: torch.device, *, cast: bool) -> Iterator[None]:
        """Autocast for mixed compute where ``cast`` (false: the engine computes in the low dtype itself)."""
        if self.mixed and cast:
            with torch.autocast(device.type, dtype=self.compute_dtype):
                yield
        else:
            with nullcontext():
                yield


def precision_policy(name: str, teacher_dtype: str | None, device: torch.device) -> Precision:
    """Resolve ``train.precision`` and ``models.teacher_dtype`` for ``device``.

    Raises:
        ConfigError: float16 on a machine without a GPU (CPU autocast has no loss scaling and the policy
            would do nothing useful), or bfloat16 on a GPU that lacks it. (float16 with FSDP is refused by
            the config.)
    """
    compute = _COMPUTE[name]
    if compute == torch.float16 and device.type != "cuda":
        raise ConfigError(
            "train.precision=fp16-mixed needs a CUDA GPU (loss scaling is a GPU feature); this machine has "
            "none. Use train.precision=bf16-mixed (CPUs with AVX-512 BF16 run it) or fp32."
        )
    if compute == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.precision={name}: this GPU has no bfloat16; use fp16-mixed or fp32.")
    param = torch.bfloat16 if name == "bf16-pure" else torch.float32
    teacher = DTYPES[teacher_dtype] if teacher_dtype else (compute or torch.float32)
    return Precision(name=name, param_dtype=param, compute_dtype=compute, teacher_dtype=teacher)
