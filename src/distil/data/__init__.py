"""Task data: the GLUE task table, file and hub loaders, tokenisation, padding and batch order."""

from __future__ import annotations

from distil.data.batching import collate, epoch_batches, tokenize
from distil.data.corpus import build_blocks, collate_blocks, corpus_files, iter_documents
from distil.data.sources import infer_label_names, load_custom, load_glue_split, resolve_data_dir, subset
from distil.data.tasks import GLUE_TASKS, GlueLayout, TaskSpec, custom_task, get_task

__all__ = [
    "GLUE_TASKS",
    "GlueLayout",
    "TaskSpec",
    "build_blocks",
    "collate",
    "collate_blocks",
    "corpus_files",
    "custom_task",
    "epoch_batches",
    "get_task",
    "infer_label_names",
    "iter_documents",
    "load_custom",
    "load_glue_split",
    "resolve_data_dir",
    "subset",
    "tokenize",
]
