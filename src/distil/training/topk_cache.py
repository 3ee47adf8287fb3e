"""The top-k teacher cache of token-level KD: one pass of the teacher, reused by epochs, resumes and runs.

Per training token: the teacher's k largest logits (float32) and their ids (int32), and the log-mass of
its other tokens at the loss's temperature T (``logsumexp`` of their logits / T, float32): ``8 k + 4``
bytes a token, in memory-mapped ``.npy`` files under ``<cache root>/teacher-topk/<key>/``. The key hashes
the teacher (its config and weight files), the training rows' tokens, k and T, so a later run of the same
teacher on the same data (another student, a resume) reads the cache instead of running the teacher. The
folder is written under a temporary name and renamed when complete; every process writes its share of
the rows. The loss on it is `distil.losses.topk.topk_kd_kl`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset
from transformers import PreTrainedModel

from distil.adapters import model_inputs
from distil.evaluation.shards import Shard
from distil.files import atomic_write_text
from distil.progress import Phase
from distil.types import Batch, Features, TopK

__all__ = ["TopKCache", "cache_key"]

_FORMAT = 2  # 2: the tail log-mass at the loss temperature


def _file_digest(path: Path, sha: Any) -> None:
    """Name, size, and the first and last MiB of a file (weights files run to gigabytes)."""
    size = path.stat().st_size
    sha.update(f"{path.name}:{size}".encode())
    with path.open("rb") as handle:
        sha.update(handle.read(2**20))
        if size > 2**21:
            handle.seek(-(2**20), os.SEEK_END)
            sha.update(handle.read(2**20))


def cache_key(teacher_dir: Path, dataset: Dataset, k: int, temperature: float) -> str:
    """A digest of the teacher's files, the training rows' token ids, k and the temperature."""
    sha = hashlib.sha256(f"format {_FORMAT} k {k} T {temperature!r} rows {len(dataset)}".encode())
    for path in sorted(teacher_dir.glob("*.json")) + sorted(teacher_dir.glob("*.safetensors")):
        _file_digest(path, sha)
    column = dataset.with_format("arrow")["input_ids"]
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    sha.update(np.asarray(array.value_lengths()).tobytes())
    sha.update(np.asarray(array.flatten()).tobytes())
    sha.update(np.asarray(dataset["idx"][:], dtype=np.int64).tobytes())
    return sha.hexdigest()[:24]


class TopKCache:
    """A complete cache, memory-mapped read-only; `features` reads a batch's rows."""

    def __init__(self, folder: Path, device: torch.device) -> None:
        self.folder, self.device = folder, device
        self.index = np.load(folder / "index.npy", mmap_mode="r")
        self.values = np.load(folder / "values.npy", mmap_mode="r")
        self.rest = np.load(folder / "rest.npy", mmap_mode="r")
        self.meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))

    @property
    def bytes_per_token(self) -> int:
        """``8 k + 4``."""
        return int(self.index.shape[-1]) * 8 + 4

    def features(self, batch: Batch) -> Features:
        """The cached teacher of a batch's rows (by ``idx``), as a forward pass would give it."""
        assert batch.idx is not None
        idx = batch.idx.cpu().numpy()
        rows = np.sort(idx)
        order = np.argsort(np.argsort(idx))  # back to the batch's row order
        seq = batch.input_ids.shape[1]

        def read(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array[rows][order][:, :seq])).to(self.device)

        topk = TopK(index=read(self.index).long(), values=read(self.values), rest=read(self.rest))
        return Features(attention_mask=batch.attention_mask, topk=topk)

    @classmethod
    @torch.no_grad()
    def open_or_build(
        cls,
        teacher: PreTrainedModel,
        teacher_dir: Path,
        dataset: Dataset,
        collate: Callable[[list[dict[str, Any]]], Batch],
        *,
        k: int,
        temperature: float,
        root: Path,
        batch_size: int,
        device: torch.device,
        shard: Shard | None = None,
        barrier: Callable[[], None] = lambda: None,
        is_main: bool = True,
    ) -> tuple[TopKCache, bool]:
        """The cache of ``teacher`` on ``dataset``: opened when a complete one exists, else built.

        Every process calls it; each runs the teacher on its share of the rows (``shard``), and process 0
        publishes the folder. Returns the cache and whether it was built now.
        """
        shard = shard or Shard()
        folder = root / cache_key(teacher_dir, dataset, k, temperature)
        if (folder / "meta.json").is_file():
            problem = _damage(folder)
            if problem is None:
                return cls(folder, device), False
            if is_main:  # every process sees the same files, so all of them build it again together
                print(f"[distil] teacher top-k cache {folder} is damaged ({problem}); building it again.")
        vocab = int(teacher.get_output_embeddings().weight.shape[0])
        k = min(k, vocab)
        rows, seq = len(dataset), int(_lengths(dataset).max())
        slots = int(np.asarray(dataset["idx"][:]).max()) + 1  # rows are stored at their idx
        tmp = folder.with_name(f".{folder.name}.tmp")
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            np.lib.format.open_memmap(tmp / "index.npy", "w+", np.int32, (slots, seq, k))
            np.lib.format.open_memmap(tmp / "values.npy", "w+", np.float32, (slots, seq, k))
            np.lib.format.open_memmap(tmp / "rest.npy", "w+", np.float32, (slots, seq))
        barrier()
        index = np.load(tmp / "index.npy", mmap_mode="r+")
        values = np.load(tmp / "values.npy", mmap_mode="r+")
        rest = np.load(tmp / "rest.npy", mmap_mode="r+")
        teacher.eval()
        batches = [list(range(i, min(i + batch_size, rows))) for i in range(0, rows, batch_size)]
        mine, padding = shard.take(batches)
        todo = [*mine, *batches[:1] * padding]
        phase = Phase("caching the teacher's top-k token logits", len(todo), enabled=is_main)
        for n, chosen in enumerate(todo):
            batch = collate([dataset[i] for i in chosen])
            logits = teacher(**{key: v.to(device) for key, v in model_inputs(teacher, batch).items()}).logits
            phase.update()
            if n >= len(mine):
                continue  # padding passes keep every process's forward passes in step (FSDP)
            logits = logits.float()
            top, ids = logits.topk(k, dim=-1)
            tail = torch.logsumexp(logits.scatter(-1, ids, float("-inf")) / temperature, dim=-1)
            length = logits.shape[1]
            assert batch.idx is not None
            where = batch.idx.cpu().numpy()
            index[where, :length] = ids.cpu().numpy().astype(np.int32)
            values[where, :length] = top.cpu().numpy()
            rest[where, :length] = tail.cpu().numpy()
        phase.close()
        for array in (index, values, rest):
            array.flush()
        del index, values, rest
        barrier()
        if is_main:
            meta = {
                "format": _FORMAT, "k": k, "temperature": temperature, "rows": rows, "seq": seq,
                "teacher": str(teacher_dir),
            }  # fmt: skip
            atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1))
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        barrier()
        return cls(folder, device), True


def _damage(folder: Path) -> str | None:
    """What is wrong with a finished cache folder (``None``: its files load and agree with its meta)."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        # Never unpickled: np.load refuses object arrays (allow_pickle is off).
        index, values, rest = (
            np.load(folder / f"{n}.npy", mmap_mode="r") for n in ("index", "values", "rest")
        )
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return f"{type(err).__name__}: {err}"
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT or not isinstance(meta.get("k"), int):
        return "meta.json is not this cache format's"
    k = meta["k"]
    if index.dtype != np.int32 or values.dtype != np.float32 or rest.dtype != np.float32:
        return "unexpected array types"
    if (
        index.ndim != 3
        or index.shape != values.shape
        or index.shape[-1] != k
        or rest.shape != index.shape[:2]
    ):
        return f"array shapes {index.shape}, {values.shape}, {rest.shape} do not fit k = {k}"
    return None


def _lengths(dataset: Dataset) -> np.ndarray:
    column = dataset.with_format("arrow")["input_ids"]
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return np.asarray(array.value_lengths())
