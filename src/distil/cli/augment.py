"""``distil augment``: write a task's training set with perturbed copies added, for KD on more inputs."""

from __future__ import annotations

import argparse

from distil.cli.task_args import add_task_options, task_from_args
from distil.errors import ConfigError

__all__ = ["add_augment_options", "augment_command"]


def add_augment_options(p: argparse.ArgumentParser) -> None:
    """Options of ``distil augment``."""
    p.add_argument("--task", required=True, help="GLUE task name, or 'custom' with --file.")
    p.add_argument("--out", required=True, help="The .tsv file to write (then: data.train_file=OUT).")
    p.add_argument(
        "--model",
        default="embedded",
        help="Model whose tokenizer and input embeddings pick the replacement words: the teacher "
        "(default: embedded).",
    )
    add_task_options(p, "training")
    p.add_argument("--copies", type=int, default=4, help="Perturbed copies per example (default: 4).")
    p.add_argument("--p-mask", type=float, default=0.1, help="Chance a word is masked (default: 0.1).")
    p.add_argument(
        "--p-replace", type=float, default=0.1, help="Chance a word becomes a neighbour (default: 0.1)."
    )
    p.add_argument(
        "--p-ngram", type=float, default=0.25, help="Chance a copy is cut to an n-gram (default: 0.25)."
    )
    p.add_argument("--max-ngram", type=int, default=5, help="Longest n-gram kept (default: 5).")
    p.add_argument("--neighbours", type=int, default=15, help="Candidates per replaced word (default: 15).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the perturbations (default: 0).")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing --out file.")


def augment_command(args: argparse.Namespace) -> int:
    """Load the training split, perturb it, write the TSV and say how to train on it."""
    from torch import nn

    from distil.data.augment import (
        AugmentOptions,
        augment_rows,
        check_output,
        embedding_neighbours,
        write_task_file,
    )
    from distil.models.loading import load_model, load_tokenizer

    opts = AugmentOptions(
        copies=args.copies, p_mask=args.p_mask, p_replace=args.p_replace, p_ngram=args.p_ngram,
        max_ngram=args.max_ngram, neighbours=args.neighbours, seed=args.seed,
    )  # fmt: skip
    out = check_output(args.out, args.overwrite)
    from distil.tasks.classification import ClassificationTask

    task, _ = task_from_args(args, eval_only=False)
    if not isinstance(task, ClassificationTask):
        raise ConfigError(f"--task {args.task}: distil augment perturbs classification and regression tasks.")
    spec, train = task.spec, task.raw_train
    tokenizer = load_tokenizer(args.model)
    table = load_model(args.model, head="base").get_input_embeddings()
    assert isinstance(table, nn.Embedding)
    embeddings = table.weight.detach()
    words = {w.lower() for c in spec.text_columns for text in train[c][:] for w in text.split()}
    neighbours = embedding_neighbours(embeddings, tokenizer, words, opts.neighbours)
    mask = tokenizer.mask_token or tokenizer.unk_token or ""
    rows = augment_rows(train, spec, neighbours, mask, opts)
    write_task_file(out, spec, rows, overwrite=args.overwrite)
    print(
        f"wrote {out}: {len(train)} examples + {len(rows) - len(train)} perturbed copies "
        f"({len(neighbours)} words with neighbours). Distil on it with data.train_file={out} method.alpha=1."
    )
    return 0
