"""Dynamic int8 quantisation formats, and which CPUs compute each one exactly.

Every format quantises weights per output channel and activations per batch (uint8,
``DynamicQuantizeLinear``); they differ in the weights' type and range, which decide the integer kernel
onnxruntime runs (see `distil.deploy.cpu` for why AVX2 without VNNI saturates):

- ``u8s8-reduced`` (default): int8 weights held to 7 bits (-64..64). A pair of products is at most
  ``255 * 64 * 2 = 32640``, inside int16, so AVX2's saturating kernel, VNNI's and ARM's all compute the
  same integers: an export checked on one CPU holds on every CPU. Costs about one bit of weight precision.
- ``u8u8``: uint8 weights, full range. onnxruntime's u8 x u8 kernels widen to 16 bits before multiplying,
  exact on every CPU; slower than u8 x s8 where VNNI would serve it.
- ``u8s8``: int8 weights, full range: the most precise and, with VNNI, the fastest; exact only on CPUs
  with VNNI (or not x86). Exporting it is refused on a CPU whose kernel saturates, and running it there
  warns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_INT8_FORMAT", "INT8_FORMATS", "Int8Format", "get_int8_format", "quantize"]


@dataclass(frozen=True)
class Int8Format:
    """One way to quantise a graph dynamically.

    Attributes:
        name: The format's name (``--int8-format``).
        signed_weights: int8 weights (``QInt8``) rather than uint8 (``QUInt8``).
        reduce_range: Weights held to 7 bits.
        portable: The integer arithmetic is the same on every CPU onnxruntime runs on.
        summary: One sentence for records and cards.
    """

    name: str
    signed_weights: bool
    reduce_range: bool
    portable: bool
    summary: str

    def call(self) -> str:
        """The onnxruntime call that makes this format, as recorded in ``export.json``."""
        weight = "QInt8" if self.signed_weights else "QUInt8"
        return (
            f"onnxruntime.quantization.quantize_dynamic(weight_type={weight}, per_channel=True, "
            f"reduce_range={self.reduce_range})"
        )


INT8_FORMATS: dict[str, Int8Format] = {
    f.name: f
    for f in (
        Int8Format(
            "u8s8-reduced", True, True, True,
            "uint8 activations x int8 weights held to 7 bits, per channel: no int16 overflow in any "
            "kernel, the same integers on every CPU",
        ),
        Int8Format(
            "u8u8", False, False, True,
            "uint8 activations x uint8 weights, per channel: exact on every CPU, slower where VNNI would "
            "serve int8 weights",
        ),
        Int8Format(
            "u8s8", True, False, False,
            "uint8 activations x full-range int8 weights, per channel: exact only on CPUs with VNNI "
            "(AVX512-VNNI, AVX-VNNI) or not x86; AVX2 without VNNI saturates",
        ),
    )
}  # fmt: skip
DEFAULT_INT8_FORMAT = "u8s8-reduced"


def get_int8_format(name: str) -> Int8Format:
    """Look a format up by name.

    Raises:
        ValueError: An unknown name (the message lists the known ones).
    """
    if name not in INT8_FORMATS:
        raise ValueError(f"Unknown int8 format {name!r}; choose one of {', '.join(INT8_FORMATS)}.")
    return INT8_FORMATS[name]


def quantize(
    src: Path,
    dst: Path,
    fmt: Int8Format,
    *,
    op_types: list[str] | None = None,
    exclude: Sequence[str] = (),
) -> None:
    """Dynamic int8 quantisation of ``src`` into ``dst`` in format ``fmt``.

    Every supported op is quantised, or only ``op_types``, less the nodes named in ``exclude``.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser advises "pre-processing" through the root logger, which also installs a root handler as
    # a side effect; the advice concerns static (calibrated) quantisation, not this dynamic one.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        # Per-channel weight scales: per-tensor ones gave 1.5-3.5x the error on MiniLM.
        # Fused contrib ops defeat shape inference; their outputs are float, which the quantiser must be told.
        quantize_dynamic(
            str(src), str(dst), weight_type=QuantType.QInt8 if fmt.signed_weights else QuantType.QUInt8,
            per_channel=True, reduce_range=fmt.reduce_range, op_types_to_quantize=op_types,
            nodes_to_exclude=list(exclude), extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )  # fmt: skip
    finally:
        logging.disable(previous)
