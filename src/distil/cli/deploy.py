"""``distil export``, ``distil bench`` and ``distil report``: options and command bodies.

Only argparse is imported at module level, so building the parser stays cheap; the work is imported
inside the command functions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from distil.cli.task_args import add_task_options, task_from_args
from distil.errors import ConfigError

if TYPE_CHECKING:
    from distil.bench import DevSplit

__all__ = [
    "add_bench_options",
    "add_export_options",
    "add_report_options",
    "bench_command",
    "export_command",
    "report_command",
]


def add_export_options(p: argparse.ArgumentParser) -> None:
    """Options of ``distil export``."""
    p.add_argument(
        "model", metavar="RUN_OR_MODEL", help="Run directory (its student/) or saved model directory."
    )
    p.add_argument("--format", choices=["onnx"], default="onnx", help="Export format (default: onnx).")
    p.add_argument("--int8", action="store_true", help="Also write a dynamically quantised int8 model.")
    p.add_argument(
        "--int8-format",
        choices=["u8s8-reduced", "u8u8", "u8s8"],
        default="u8s8-reduced",
        help="int8 weights: u8s8-reduced (default; 7-bit int8 weights, the same result on every CPU), u8u8 "
        "(uint8 weights, exact everywhere, slower with VNNI) or u8s8 (full-range int8 weights, exact only "
        "on CPUs with VNNI; refused elsewhere).",
    )
    p.add_argument(
        "--optimize",
        action="store_true",
        help="Fuse attention/LayerNorm/GELU with onnxruntime's transformer optimiser (BERT-like encoders; "
        "faster on CPU, onnxruntime-only graphs).",
    )
    p.add_argument("--overwrite", action="store_true", help="Replace an existing export.")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17).")
    p.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="Then upload the model folder (weights, tokenizer, ONNX files, model card) to this Hugging Face "
        "Hub repository (created if needed; needs a token: `huggingface-cli login` or HF_TOKEN).",
    )


def add_bench_options(p: argparse.ArgumentParser) -> None:
    """Options of ``distil bench``."""
    p.add_argument("--teacher", required=True, help="Teacher: run dir, model dir or 'embedded'.")
    p.add_argument("--student", required=True, help="Student: run dir or model dir.")
    p.add_argument("--task", help="Task to score on: a GLUE name, or 'custom' with --file (default: none).")
    add_task_options(p, "evaluation")
    p.add_argument("--split", help="Split to score (default: the task's dev split).")
    p.add_argument("--dev-subset", type=int, help="Score on a seeded subset of N examples.")
    p.add_argument(
        "--max-length", type=int, default=128, help="Truncation length for scoring (default: 128)."
    )
    p.add_argument("--seq-length", type=int, default=128, help="Tokens per timed sequence (default: 128).")
    p.add_argument(
        "--batch-sizes", default="1,32", help="Comma-separated batch sizes to time (default: 1,32)."
    )
    p.add_argument("--repeats", type=int, default=10, help="Timed passes per runtime (default: 10).")
    p.add_argument("--warmup", type=int, default=3, help="Untimed passes first (default: 3).")
    p.add_argument("--threads", type=int, help="torch and onnxruntime threads (default: torch's setting).")
    p.add_argument("--no-onnx", action="store_true", help="Skip the ONNX exports found beside the models.")
    p.add_argument(
        "--onnx-spin",
        action="store_true",
        help="onnxruntime threads spin between ops (its default, as in serving); every runtime is then timed "
        "in blocks rather than interleaved call by call.",
    )
    p.add_argument("--json", help="Write the results to this JSON file.")


def add_report_options(p: argparse.ArgumentParser) -> None:
    """Options of ``distil report``."""
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="Run dirs, pipeline dirs or bench JSON files.")
    p.add_argument("--out", default="report", help="Output folder (default: ./report).")
    p.add_argument("--bench", action="append", help="A `distil bench --json` result (repeatable).")
    p.add_argument(
        "--eval", action="append", help="A `distil eval --json` report (repeatable); with --teacher (chat), "
        "its generations are shown beside the teacher's and the reference.",
    )  # fmt: skip


def export_command(args: argparse.Namespace) -> int:
    """Run ``distil export``."""
    from distil.card import write_card
    from distil.deploy import export_onnx, resolve_model_dir
    from distil.deploy.hub import check_hub, push_folder

    if args.push_to_hub:
        check_hub(args.push_to_hub)  # before anything is written: offline or without a token it stops here
    result = export_onnx(
        args.model, int8=args.int8, int8_format=args.int8_format, optimize=args.optimize,
        overwrite=args.overwrite, opset=args.opset,
    )  # fmt: skip
    model_dir = resolve_model_dir(args.model)
    if (model_dir / "recipe.json").is_file():
        print(f"[distil] model card: {write_card(model_dir)}")
    print(f"[distil] {result.fp32_path}: max relative difference from PyTorch {result.fp32.max_rel:.2g}")
    if result.int8_path is not None and result.int8 is not None:
        print(
            f"[distil] {result.int8_path} ({result.int8_format}): max relative difference "
            f"{result.int8.max_rel:.2g}, argmax agreement {result.int8.agreement:.0%} of "
            f"{result.int8.decided} decided rows (of {result.int8.rows}; the rest are ties at int8 precision)"
        )
    print(f"[distil] how they were made: {result.record_path.with_name('EXPORT.md')}")
    if args.push_to_hub:
        print(f"[distil] uploaded to {push_folder(model_dir, args.push_to_hub)}")
    return 0


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"--batch-sizes must be positive integers separated by commas; got {text!r}.")
    return sizes


def _dev_split(args: argparse.Namespace) -> DevSplit | None:
    from distil.bench import DevSplit
    from distil.tasks.classification import ClassificationTask

    if not args.task:
        return None
    labels = None
    if args.task == "custom" and not args.regression:  # both models are scored in the student's class order
        from distil.deploy import resolve_model_dir
        from distil.models.loading import model_label_names

        labels = model_label_names(str(resolve_model_dir(args.student)))
        teacher = model_label_names(str(resolve_model_dir(args.teacher)))
        if labels and teacher and teacher != labels:
            raise ConfigError(
                f"The teacher's classes {teacher} are not the student's {labels}: they cannot be scored "
                "on one file together."
            )
    task, data = task_from_args(
        args, eval_only=True, max_length=args.max_length, dev_subset=args.dev_subset, label_names=labels
    )
    if not isinstance(task, ClassificationTask):
        raise ConfigError(f"--task {args.task}: distil bench scores classification and regression tasks.")
    if args.split:
        task.use_split(args.split)
    return DevSplit(task, max_length=data.max_length)


def bench_command(args: argparse.Namespace) -> int:
    """Run ``distil bench``."""
    from distil.bench import run_bench
    from distil.card import write_card
    from distil.deploy import resolve_model_dir
    from distil.evaluation.bench_table import format_bench

    for name in ("seq_length", "repeats"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1.")
    result = run_bench(
        {"teacher": args.teacher, "student": args.student},
        seq_length=args.seq_length,
        batch_sizes=_batch_sizes(args.batch_sizes),
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        onnx=not args.no_onnx,
        onnx_spin=args.onnx_spin,
        dev=_dev_split(args),
    )
    print(format_bench(result))
    student_dir = resolve_model_dir(args.student)
    if (student_dir / "recipe.json").is_file():
        print(f"[distil] model card: {write_card(student_dir, bench=result)}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"[distil] results written to {path}")
    return 0


def report_command(args: argparse.Namespace) -> int:
    """Run ``distil report``."""
    from distil.reporting import build_report

    report = build_report(list(args.runs), args.out, bench=args.bench, evals=args.eval)
    print(f"[distil] report written to {report}")
    return 0
