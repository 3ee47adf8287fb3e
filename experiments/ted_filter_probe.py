"""Per-layer quality of TED's Stage-I filters next to linear probes of the same layers.

For a fine-tuned model and a labelled task: (1) linear probes (logistic regression; ridge for regression)
of every layer's hidden states pooled two ways, token 0 and the mean over real tokens, fitted on training
rows and scored on dev rows; (2) TED's teacher-side filter stage on every layer (``ted_filters``, the
model frozen) once per pooling, through distil's own loop; each filter's head scored on the dev split.
Prints one markdown table per task: layer, probe (token 0 / mean), filter (token 0 / mean), and the
filter's final training loss against chance (ln C).

For the per-token heads (``--task squad``: span heads; ``--task lm``: next-token heads) nothing is pooled,
and a linear filter with a linear head on a frozen layer is itself a linear probe of that layer: one run,
each filter's head scored on the dev split (EM/F1, perplexity), its final loss next to chance, the loss of
predicting the training labels' prior (`distil.methods._ted_chance.LabelPrior`) over the whole training
split.

    .venv/bin/python experiments/ted_filter_probe.py MODEL_DIR --task sst2 --out runs/filter-probe \
        [--train-subset 4000] [--epochs 1] [--lr 1e-4] [-- data.key=value ...]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr
from sklearn.linear_model import LogisticRegression, Ridge

import distil
from distil.adapters import forward_features
from distil.methods._ted_heads import pool
from distil.models.families import num_layers
from distil.models.loading import resolve_model_path
from distil.training.setup import build_run
from distil.types import FeatureRequest


def _config(
    args: argparse.Namespace, layers: int, pooling: str, run_dir: Path, extra: list[str]
) -> list[str]:
    return [
        f"run_dir={run_dir}",
        f"models.teacher={args.model}",
        "models.student.init=pretrained",
        f"models.student.path={args.model}",
        f"data.task={args.task}",
        f"data.max_length={args.max_length}",
        *([f"data.train_subset={args.train_subset}"] if args.train_subset else []),
        f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}",
        f"train.lr={args.lr}",
        "train.warmup_ratio=0.1",
        f"train.seed={args.seed}",
        "train.report_to=[]",
        "eval.select=last",
        "method.name=ted_filters",
        "method.side=teacher",
        f"method.layer_map=[{','.join(str(i) for i in range(1, layers + 1))}]",
        f"method.pooling={pooling}",
        *extra,
    ]


PROBES = ("first", "mean", "last")


@torch.no_grad()
def _features(model: torch.nn.Module, rows: list, collate, batch_size: int) -> tuple[list, np.ndarray]:  # noqa: ANN001
    """Per layer: the features of every row under each of `PROBES`, and the labels."""
    per_layer: dict[int, dict[str, list[np.ndarray]]] = {}
    labels = []
    model.eval()
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start : start + batch_size])
        out = forward_features(model, batch, FeatureRequest(logits=False, hidden_states=True))
        assert out.hidden_states is not None and batch.labels is not None
        labels.append(batch.labels.float().numpy())
        for n, states in enumerate(out.hidden_states[1:], start=1):
            for how in PROBES:
                pooled = pool(states, out.attention_mask, out.causal, how).float().numpy()  # type: ignore[arg-type]
                per_layer.setdefault(n, {h: [] for h in PROBES})[how].append(pooled)
    layers = [{h: np.concatenate(v[h]) for h in PROBES} for _, v in sorted(per_layer.items())]
    return layers, np.concatenate(labels)


def _probe(
    x_train: np.ndarray, y_train: np.ndarray, x_dev: np.ndarray, y_dev: np.ndarray, reg: bool
) -> float:
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6  # standardised: token 0's spread can be 1e-3
    x_train, x_dev = (x_train - mu) / sd, (x_dev - mu) / sd
    if reg:
        return float(pearsonr(Ridge(alpha=10.0).fit(x_train, y_train).predict(x_dev), y_dev)[0])
    clf = LogisticRegression(max_iter=2000, C=0.1).fit(x_train, y_train.astype(int))
    return float((clf.predict(x_dev) == y_dev.astype(int)).mean())


@torch.no_grad()
def _chance(task, vocab: int, batch_size: int = 64) -> tuple[float, str]:  # noqa: ANN001
    """The chance-level loss of a filter head over the whole training split, and what it means."""
    from distil.methods._ted_chance import LabelPrior

    kind = task.head  # "qa" or "lm"
    prior = LabelPrior(kind, False, 0)
    for start in range(0, len(task.train_set), batch_size):
        stop = min(start + batch_size, len(task.train_set))
        batch = task.collate([task.train_set[i] for i in range(start, stop)])
        assert batch.labels is not None
        b, s = batch.input_ids.shape
        shape = (b, 2, s) if kind == "qa" else (b, s, vocab)
        prior.update(batch.labels, torch.empty(shape, device="meta"))
    chance = prior.chance()
    assert chance is not None
    return chance, prior.what


def _per_token(args: argparse.Namespace, layers: int) -> None:
    """QA and LM: one filter stage on every layer, each head scored; loss against chance."""
    run_dir = args.out / f"{args.task}-seed{args.seed}-filters"
    cfg = distil.load_config(None, _config(args, layers, "auto", run_dir, args.overrides))
    distil.train(cfg, overwrite=True, progress=False)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    losses, evals = {}, {}
    for record in log:  # the last value of each: the end of training
        losses |= {k: v for k, v in record.items() if k.startswith("loss/filter_")}
        evals |= {k[len("eval/") :]: v for k, v in record.items() if k.startswith("eval/")}
    parts = build_run(cfg)
    vocab = int(parts.student.config.vocab_size)
    chance, what = _chance(parts.task, vocab)
    (args.out / f"{args.task}-seed{args.seed}.json").write_text(
        json.dumps({"losses": losses, "evals": evals, "chance": chance, "chance_is": what}, indent=2)
    )
    metrics = sorted(
        {k.split("/", 1)[1] for k in evals if k.startswith("filter_")} - {"eval_tokens", "neg_perplexity"}
    )
    print(
        f"\n{args.task}: chance loss {chance:.4f} ({what}); the frozen model itself: "
        + ", ".join(f"{k} {evals[k]:.3f}" for k in metrics if k in evals)
        + "\n"
    )
    head = ["layer", *(f"filter {m}" for m in metrics), "loss", "loss / chance"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for n in range(1, layers + 1):
        loss = losses.get(f"loss/filter_{n}", float("nan"))
        cells = [str(n), *(f"{evals.get(f'filter_{n}/{m}', float('nan')):.3f}" for m in metrics)]
        print("| " + " | ".join([*cells, f"{loss:.4f}", f"{loss / chance:.3f}"]) + " |")


def main() -> None:
    """Probe and filter every layer of one model on one task; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="A fine-tuned classifier (model directory or run directory's student).")
    parser.add_argument("--task", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-subset", type=int)
    parser.add_argument("--probe-rows", type=int, default=2000, help="Training rows for the probes.")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--poolings", default="first,mean")
    parser.add_argument("overrides", nargs="*", help="Extra key=value overrides (data.train_file=...).")
    args = parser.parse_intermixed_args()
    torch.manual_seed(args.seed)
    from transformers import AutoConfig

    layers = num_layers(AutoConfig.from_pretrained(resolve_model_path(args.model)))
    if args.task in ("squad", "lm"):
        _per_token(args, layers)
        return
    results: dict[str, dict] = {"filters": {}, "probes": {}}
    for pooling in args.poolings.split(","):
        run_dir = args.out / f"{args.task}-{pooling}-seed{args.seed}"
        cfg = distil.load_config(None, _config(args, layers, pooling, run_dir, args.overrides))
        result = distil.train(cfg, overwrite=True, progress=False)
        recipe = json.loads((result.student_dir / "recipe.json").read_text())
        log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        losses, evals = {}, {}
        for record in log:  # the last value of each: the end of training
            losses |= {k: v for k, v in record.items() if k.startswith("loss/filter_")}
            evals |= {k[len("eval/") :]: v for k, v in record.items() if k.startswith("eval/filter_")}
        notes = recipe["results"].get("warnings")
        results["filters"][pooling] = {"metrics": evals, "losses": losses, "notes": notes}
    cfg = distil.load_config(None, _config(args, layers, "mean", args.out / "probe", args.overrides))
    parts = build_run(cfg)
    task = parts.task
    reg = bool(getattr(task, "is_regression", False))
    rng = np.random.default_rng(args.seed)
    picked = rng.permutation(len(task.train_set))[: args.probe_rows]
    train_rows = [task.train_set[int(i)] for i in picked]
    assert task.dev_set is not None
    dev_rows = [task.dev_set[i] for i in range(len(task.dev_set))]
    train_x, train_y = _features(parts.student, train_rows, task.collate, 64)
    dev_x, dev_y = _features(parts.student, dev_rows, task.collate, 64)
    for n in range(layers):
        results["probes"][n + 1] = {
            how: _probe(train_x[n][how], train_y, dev_x[n][how], dev_y, reg) for how in PROBES
        }
    classes = len(set(train_y.astype(int).tolist())) if not reg else 0
    (args.out / f"{args.task}-seed{args.seed}.json").write_text(json.dumps(results, indent=2, default=str))
    metric = "pearson" if reg else "accuracy"
    print(
        f"\n{args.task}: {len(dev_rows)} dev rows; probes on {len(train_rows)} training rows; chance loss "
        f"{'-' if reg else f'{math.log(classes):.4f}'}\n"
    )
    polls = args.poolings.split(",")
    head = ["layer", *(f"probe {h}" for h in PROBES)] + [f"filter {p}" for p in polls]
    head += [f"loss {p}" for p in polls]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for n in range(1, layers + 1):
        cells = [str(n), *(f"{results['probes'][n][h]:.3f}" for h in PROBES)]
        for p in polls:
            metrics = results["filters"][p]["metrics"]
            value = metrics.get(f"filter_{n}/{metric}", float("nan"))
            cells.append(f"{value:.3f}")
        for p in polls:
            cells.append(f"{results['filters'][p]['losses'].get(f'loss/filter_{n}', float('nan')):.4f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
