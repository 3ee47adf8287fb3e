"""The ``distil`` command: a thin table of subcommands over the Python API."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distil.cli.augment import add_augment_options
from distil.cli.deploy import add_bench_options, add_export_options, add_report_options
from distil.cli.generate import add_generate_options
from distil.cli.init_model import add_init_model_options
from distil.cli.task_args import add_task_options
from distil.errors import ConfigError, DistilError

__all__ = ["COMMANDS", "main"]


def _run_options(p: argparse.ArgumentParser, *, reruns: bool = True) -> None:
    """The options of the commands that train.

    ``reruns``: ``--overwrite`` and ``--resume`` (``distil compare`` always reuses and resumes its runs).
    """
    p.add_argument("--config", help="YAML run config: a file, or a bundled config name (see `distil ls`).")
    p.add_argument("--run-dir", help="Output folder (same as run_dir=...).")
    p.add_argument("--data-dir", help="Folder with glue/<TASK>/*.tsv (same as data.data_dir=...).")
    if reruns:
        group = p.add_mutually_exclusive_group()
        group.add_argument("--overwrite", action="store_true", help="Replace a run already in the run dir.")
        group.add_argument(
            "--resume", action="store_true", help="Continue the unfinished run in the run dir."
        )
    p.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    p.add_argument(
        "--threads", type=int, help="torch CPU threads per process (same as train.threads=...; default: one "
        "per core). On a shared or 2-core machine, 1 is often faster.",
    )  # fmt: skip
    p.add_argument("overrides", nargs="*", metavar="key=value", help="Dotted overrides, e.g. train.lr=3e-5.")


def _main_process() -> bool:
    """Process 0 of a launcher (``RANK``, as torchrun sets it), or a process started alone."""
    return os.environ.get("RANK", "0") == "0"


def _overrides(
    args: argparse.Namespace, extra: Sequence[str] = (), train_sections: Sequence[str] = ("train",)
) -> list[str]:
    out = list(extra)
    if args.run_dir:
        out.append(f"run_dir={args.run_dir}")
    if args.data_dir:
        out.append(f"data.data_dir={args.data_dir}")
    if getattr(args, "threads", None) is not None:
        out += [f"{section}.threads={args.threads}" for section in train_sections]
    return out + list(args.overrides)


def _train_command(args: argparse.Namespace, method: str | None) -> int:
    from distil.cli.configs import load_run_config
    from distil.plans import run

    cfg = load_run_config(args.config, _overrides(args), method=method)
    result = run(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if not _main_process():
        return 0  # under a launcher, process 0 prints the summary
    print(
        f"[distil] {cfg.method_name}: {result.steps} steps in {result.train_seconds:.0f} s; "
        f"dev {result.metrics}; student saved to {result.student_dir}"
    )
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune a model on a task without a teacher."""
    return _train_command(args, "finetune")


def cmd_distill(args: argparse.Namespace) -> int:
    """Distil a teacher into a student with the chosen method."""
    return _train_command(args, args.method)


def cmd_pipeline(args: argparse.Namespace) -> int:
    """The main job: fine-tune the teacher, distil it with KD, compare both."""
    from distil.cli.configs import load_pipeline_config
    from distil.plans.pipeline import run_pipeline

    extra = ["data.train_subset=null"] if args.full else []
    cfg = load_pipeline_config(args.config, _overrides(args, extra, ("teacher_train", "student_train")))
    run_pipeline(cfg, overwrite=args.overwrite, progress=not args.no_progress)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Which method at which student size for my data: a seeded grid, with intervals and a recommendation."""
    from distil.cli.configs import load_compare_config
    from distil.compare import run_compare

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}.")
    if args.min_keep is not None and not 0 < args.min_keep <= 1:
        raise ConfigError(f"--min-keep is a share of the teacher's metric in (0, 1], got {args.min_keep}.")
    if args.max_latency_ms is not None and not args.max_latency_ms > 0:
        raise ConfigError(f"--max-latency-ms must be > 0, got {args.max_latency_ms}.")
    if args.config is None:
        raise ConfigError("distil compare needs --config (e.g. custom/compare; `distil ls` lists them).")
    setup = load_compare_config(args.config, _overrides(args))
    run_compare(
        setup, jobs=args.jobs, progress=not args.no_progress, max_latency_ms=args.max_latency_ms,
        min_keep=args.min_keep, runtime=args.runtime,
    )  # fmt: skip
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a saved model on a task's dev split."""
    import json

    from distil.cli.evaluate import evaluate_checkpoint, format_report
    from distil.files import atomic_write_text

    if args.task is None and not args.lm_eval:
        raise ConfigError(
            "distil eval needs --task (a task's dev data) or --lm-eval (harness tasks), or both."
        )
    report: dict[str, Any] = {"model": str(args.model), "metrics": {}, "rows": {}}
    if args.task is not None:
        report = evaluate_checkpoint(args)
    if args.lm_eval:
        from distil.evaluation.harness import harness_metrics

        tasks = [t.strip() for t in args.lm_eval.split(",") if t.strip()]
        report["metrics"] |= harness_metrics(str(args.model), tasks, args.batch_size, args.lm_eval_limit)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    """List methods, tasks and bundled configs."""
    from distil.cli.configs import describe_registry

    print(describe_registry())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate a config file without training."""
    from distil.cli.configs import validate

    if args.time and args.no_models:
        raise ConfigError("--time builds and times the models; drop --no-models.")
    result = validate(
        args.config, list(args.overrides), check_data=args.check_data, models=not args.no_models,
        time_steps=args.time or 0,
    )  # fmt: skip
    print(result)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a trained model to ONNX (fp32, optionally int8), verified against PyTorch."""
    from distil.cli.deploy import export_command

    return export_command(args)


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark teacher and student side by side: size, FLOPs, latency, throughput, task metric."""
    from distil.cli.deploy import bench_command

    return bench_command(args)


def cmd_augment(args: argparse.Namespace) -> int:
    """Write a task's training set with perturbed copies added: a larger transfer set for KD."""
    from distil.cli.augment import augment_command

    return augment_command(args)


def cmd_generate(args: argparse.Namespace) -> int:
    """Write a model's completions of a prompt file (sequence-level KD data), resumable, over processes."""
    from distil.cli.generate import generate_command

    return generate_command(args)


def cmd_init_model(args: argparse.Namespace) -> int:
    """Write a randomly initialised decoder of a family, with a tokenizer, to train from scratch."""
    from distil.cli.init_model import init_model_command

    return init_model_command(args)


def cmd_report(args: argparse.Namespace) -> int:
    """Write a markdown report with plots from runs, pipeline folders and bench results."""
    from distil.cli.deploy import report_command

    return report_command(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "finetune": cmd_finetune,
    "distill": cmd_distill,
    "pipeline": cmd_pipeline,
    "compare": cmd_compare,
    "eval": cmd_eval,
    "ls": cmd_ls,
    "validate": cmd_validate,
    "export": cmd_export,
    "bench": cmd_bench,
    "report": cmd_report,
    "augment": cmd_augment,
    "generate": cmd_generate,
    "init-model": cmd_init_model,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="distil", description="Knowledge distillation of Transformers.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in COMMANDS.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").strip(), description=(fn.__doc__ or "").strip())
        if name in ("finetune", "distill", "pipeline"):
            _run_options(p)
        if name == "distill":
            p.add_argument(
                "--method", help="Method name (see `distil ls`); defaults to the config's method.name."
            )
        if name == "compare":
            _run_options(p, reruns=False)
            p.add_argument(
                "--jobs", type=int, default=1, help="Runs at once, each in its own process with its share of "
                "the cores (default 1: one after another).",
            )  # fmt: skip
            p.add_argument(
                "--max-latency-ms", type=float, help="Recommend the most accurate student within this "
                "latency (at the first timed batch size, see --runtime).",
            )  # fmt: skip
            p.add_argument(
                "--min-keep", type=float, help="Recommend the fastest student keeping this share of the "
                "teacher's metric (e.g. 0.98).",
            )  # fmt: skip
            p.add_argument(
                "--runtime", choices=["pytorch-fp32", "onnx-fp32"], default="pytorch-fp32",
                help="Whose latency --max-latency-ms and the plot read (default pytorch-fp32).",
            )  # fmt: skip
        if name == "pipeline":
            p.add_argument("--full", action="store_true", help="Train on the full training set (no subset).")
        if name == "eval":
            p.add_argument("model", help="Saved model folder (e.g. RUN_DIR/student).")
            p.add_argument(
                "--task", help="A GLUE task, custom, squad, squad_v2, lm or chat (see `distil ls`)."
            )
            p.add_argument(
                "--lm-eval", metavar="TASKS", help="Also run these lm-evaluation-harness tasks (comma-"
                "separated, e.g. hellaswag,arc_easy) on a causal LM, when the harness is installed.",
            )  # fmt: skip
            p.add_argument("--lm-eval-limit", type=int, help="Score at most N examples per harness task.")
            add_task_options(p, "evaluation")
            p.add_argument(
                "--split", help="GLUE split to evaluate (default: the task's dev split or splits)."
            )
            p.add_argument(
                "--max-length",
                type=int,
                help="Truncation (window) length (default: the task's, as in training).",
            )
            p.add_argument("--batch-size", type=int, default=64, help="Evaluation batch size.")
            p.add_argument(
                "--subset", type=int, help="Score a seeded subset of N rows (SQuAD questions, LM windows)."
            )
            p.add_argument("--json", help="Also write the report (metrics, rows, per class) to this file.")
            p.add_argument("--doc-stride", type=int, help="SQuAD: tokens shared by consecutive windows.")
            p.add_argument("--eval-stride", type=int, help="lm: tokens the perplexity window advances by.")
            p.add_argument(
                "--teacher", help="chat: also score agreement with this teacher (top-1 tokens, greedy "
                "generations) and show generations side by side.",
            )  # fmt: skip
            p.add_argument(
                "--max-new-tokens",
                type=int,
                default=64,
                help="chat with --teacher: longest greedy completion.",
            )
            p.add_argument(
                "--attn-implementation",
                choices=["sdpa", "eager"],
                help="Attention kernel (default: the model's own; sdpa where the family has it).",
            )
            p.add_argument(
                "--dtype",
                choices=["float32", "bfloat16", "float16"],
                help="Load the weights in this dtype (default: as saved).",
            )
        if name == "validate":
            p.add_argument("config", help="YAML run config (file or bundled name).")
            p.add_argument("overrides", nargs="*", metavar="key=value")
            p.add_argument("--check-data", action="store_true", help="Also load and check the data files.")
            p.add_argument(
                "--no-models",
                action="store_true",
                help="Check the config alone, not the models' config.json and tokenizer files (for a config "
                "whose teacher is not trained yet, or a Hub model without Hub access).",
            )
            p.add_argument(
                "--time",
                type=int,
                nargs="?",
                const=5,
                metavar="STEPS",
                help="Also time STEPS real training steps (default 5, after 2 untimed) of every stage whose "
                "models exist and print each stage's estimated wall time; nothing is written.",
            )
        if name == "export":
            add_export_options(p)
        if name == "bench":
            add_bench_options(p)
        if name == "report":
            add_report_options(p)
        if name == "augment":
            add_augment_options(p)
        if name == "generate":
            add_generate_options(p)
        if name == "init-model":
            add_init_model_options(p)
    return parser


def _quiet_libraries() -> None:
    """Keep the terminal for distil's own progress bar and messages."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``distil`` command; returns the exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    # Options may come anywhere among the key=value overrides, as users type them: argparse stops the
    # overrides list at the first option, so what it leaves unparsed is taken back here when it is an
    # override, and refused as before when it is not.
    args, rest = parser.parse_known_args(argv)
    if rest:
        overrides = [r for r in rest if "=" in r and not r.startswith("-")]
        unknown = [r for r in rest if r not in overrides]
        if unknown or not hasattr(args, "overrides"):
            # Name only what is wrong: the overrides among them are fine.
            parser.error(f"unrecognized arguments: {' '.join(unknown or rest)}")
        args.overrides = [*args.overrides, *overrides]
    _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except DistilError as err:
        # Under a launcher every process meets the same bad input: one line is enough (process 0's).
        if _main_process():
            print(f"distil {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"distil {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
