"""Seeding, the per-process random streams, and the random state a checkpoint carries for an exact resume.

Models are built after seeding every process alike (identical initialisation); training then draws from
a stream of its own per process (`process_seed`), so dropout and MLM masking differ from rank to rank.
The state is stored as tensors (safetensors) and JSON: nothing a run directory holds is unpickled.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from distil.errors import DataError
from distil.files import atomic_write_text

__all__ = ["load_rng_state", "process_seed", "save_rng_state", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def process_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``'s training stream: distinct per rank, a function of both only."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def save_rng_state(folder: Path, rank: int) -> None:
    """Write this process's generators as ``rng-<rank>.safetensors`` (torch) and ``rng-<rank>.json``."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    save_file(tensors, str(folder / f"rng-{rank}.safetensors"))
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    plain: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
    }
    atomic_write_text(folder / f"rng-{rank}.json", json.dumps(plain))


def load_rng_state(folder: Path, rank: int) -> bool:
    """Restore what `save_rng_state` wrote for ``rank``; ``False`` when the checkpoint has none for it.

    Raises:
        DataError: The files exist but do not hold a random state.
    """
    tensor_file, json_file = folder / f"rng-{rank}.safetensors", folder / f"rng-{rank}.json"
    if not tensor_file.is_file() or not json_file.is_file():
        return False
    try:
        tensors = load_file(str(tensor_file))
    except (OSError, SafetensorError) as err:
        raise DataError(f"{tensor_file}: not a random state distil wrote ({err}).") from err
    try:
        plain = json.loads(json_file.read_text(encoding="utf-8"))
        version, internal, gauss = plain["python"]
        kind, keys, pos, has_gauss, cached = plain["numpy"]
        torch.set_rng_state(tensors["torch"])
        random.setstate((version, tuple(internal), gauss))
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    except (KeyError, ValueError, TypeError, RuntimeError, SafetensorError) as err:
        raise DataError(f"{json_file}: not a random state distil wrote ({err}).") from err
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    return True
