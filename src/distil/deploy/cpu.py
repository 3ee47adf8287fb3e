"""The CPU an export is made or run on: the instruction-set features that decide int8 arithmetic.

onnxruntime multiplies uint8 activations by int8 weights (``U8S8``) with VNNI's ``vpdpbusd`` where the
CPU has it, which accumulates exactly in 32 bits. x86 CPUs without VNNI (many AMD EPYC/Ryzen before Zen 4,
Intel before Cascade Lake) use AVX2's ``vpmaddubsw``, which adds two ``u8 x s8`` products into a
*saturating* int16: ``255 * 127 * 2 = 64770`` overflows it, so the same graph computes different integers
there. Which features a machine has is read from ``/proc/cpuinfo`` (Linux); elsewhere they are unknown.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuInfo", "cpu_info"]

# The flags that select onnxruntime's int8 kernels, in the order they are reported.
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
_X86 = ("x86_64", "amd64", "i386", "i686")


@dataclass(frozen=True)
class CpuInfo:
    """What an int8 graph's arithmetic depends on.

    Attributes:
        machine: ``platform.machine()`` (``x86_64``, ``aarch64``, ...).
        model: The CPU's model name, or ``""`` where it cannot be read.
        flags: The `INT8_FLAGS` this CPU has (``None`` where they cannot be read).
    """

    machine: str
    model: str
    flags: tuple[str, ...] | None

    @property
    def x86(self) -> bool:
        """An x86 CPU, whose int8 kernels differ with and without VNNI."""
        return self.machine.lower() in _X86

    @property
    def vnni(self) -> bool | None:
        """Whether u8 x s8 products accumulate exactly (VNNI), ``None`` where the flags are unknown."""
        if self.flags is None:
            return None
        return "avx512_vnni" in self.flags or "avx_vnni" in self.flags or "amx_int8" in self.flags

    @property
    def u8s8_exact(self) -> bool | None:
        """Whether full-range u8 x s8 products are exact here: any non-x86 CPU, or x86 with VNNI."""
        return True if not self.x86 else self.vnni

    def describe(self) -> str:
        """One line for logs and records: model, architecture and int8 flags."""
        flags = "unknown flags" if self.flags is None else (", ".join(self.flags) or "no AVX2")
        return f"{self.model or 'unknown CPU'} ({self.machine}; {flags})"

    def as_dict(self) -> dict[str, object]:
        """The JSON form recorded in ``export.json`` and ``bench.json``."""
        flags = None if self.flags is None else list(self.flags)
        return {"machine": self.machine, "model": self.model, "int8_flags": flags, "vnni": self.vnni}


def _read_cpuinfo(path: Path) -> tuple[str, tuple[str, ...] | None]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "", None
    model, flags = "", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and flags is None:
            present = set(value.split())
            flags = tuple(f for f in INT8_FLAGS if f in present)
    return model, flags


@functools.cache
def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """This machine's `CpuInfo` (read once per process)."""
    model, flags = _read_cpuinfo(cpuinfo)
    return CpuInfo(platform.machine(), model or platform.processor(), flags)
