"""The model card of an exported student: ``README.md`` in the Hugging Face format.

YAML front matter (``library_name``, ``base_model`` = the Hub model the teacher descends from, ``license``
when distil knows it, ``tags``, ``datasets`` = Hub ids only, ``metrics``, ``pipeline_tag``) and a markdown
body: method and paper, teacher, data, hyper-parameters, dev results and their size, intended use,
limitations and licence, parameters, speed after ``distil bench``, ONNX files after ``distil export``, and
how to load it. Local paths never appear: a teacher or a data file is shown by name. It is
written from ``recipe.json`` when a run exports its student and rewritten, with what they measured, by
``distil bench`` and ``distil export``; everything in it comes from files beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open

from distil.files import atomic_write_text, looks_local
from distil.metrics import GLUE_METRIC_KEYS
from distil.models.heads import HEADS, head_of_architectures

__all__ = ["CARD", "METHOD_CARDS", "PAPERS", "MethodCard", "base_model", "public_recipe", "write_card"]

CARD = "README.md"
BENCH_FILE = "bench.json"  # the latest `distil bench` results for this student, kept beside it
_EMBEDDED = "sentence-transformers/all-MiniLM-L6-v2"
# Licences of the base models distil knows; any other is left for the publisher to state.
_LICENCES = {_EMBEDDED: "apache-2.0"}

_LIANG_TED = ("Liang et al., Less is More: Task-aware Layer-wise Distillation (2023)", "2210.01351")
_LIANG_HOMO = ("Liang et al., HomoDistil: Homotopic Task-Agnostic Distillation (2023)", "2302.09632")
_TINYBERT = ("Jiao et al., TinyBERT: Distilling BERT for Natural Language Understanding (2020)", "1909.10351")


@dataclass(frozen=True)
class MethodCard:
    """What a model card says of the method that trained the model.

    Attributes:
        what: The method in a few words.
        paper: ``(citation, arXiv id)`` of the paper it follows, ``None`` for plain fine-tuning.
    """

    what: str
    paper: tuple[str, str] | None


# Every registered method has an entry (the method contract test checks it).
METHOD_CARDS: dict[str, MethodCard] = {
    "finetune": MethodCard("task fine-tuning on labels, no teacher", None),
    "kd": MethodCard(
        "knowledge distillation of the teacher's output distribution",
        ("Hinton et al., Distilling the Knowledge in a Neural Network (2015)", "1503.02531"),
    ),
    "gkd": MethodCard(
        "on-policy distillation: a divergence on completions the student samples itself",
        ("Agarwal et al., On-Policy Distillation of Language Models (GKD, 2024)", "2306.13649"),
    ),
    "minilmv2": MethodCard(
        "multi-head self-attention relation distillation",
        (
            "Wang et al., MiniLMv2: Multi-Head Self-Attention Relation Distillation for Compressing "
            "Pretrained Transformers (2021)",
            "2012.15828",
        ),
    ),
    "minilm": MethodCard(
        "deep self-attention distillation (MiniLM v1)",
        ("Wang et al., MiniLM: Deep Self-Attention Distillation (2020)", "2002.10957"),
    ),
    "ted": MethodCard(
        "task-aware layer-wise distillation through task-aware filters (TED Stage II)", _LIANG_TED
    ),
    "ted_filters": MethodCard(
        "TED Stage I: task-aware filters trained on a frozen model, no distillation yet", _LIANG_TED
    ),
    "lwd": MethodCard("layer-wise distillation of hidden states, the baseline of TED's paper", _LIANG_TED),
    "homodistil": MethodCard(
        "homotopic distillation: the teacher pruned into the student while distilled", _LIANG_HOMO
    ),
    "homodistil_head": MethodCard(
        "HomoDistil's first step: a prediction head fitted on the frozen teacher, no pruning yet", _LIANG_HOMO
    ),
    "distilbert": MethodCard(
        "DistilBERT-style distillation (soft targets, masked LM and cosine of hidden states)",
        ("Sanh et al., DistilBERT, a distilled version of BERT (2019)", "1910.01108"),
    ),
    "tinybert": MethodCard(
        "TinyBERT-style intermediate-layer distillation (attention, hidden, embeddings)", _TINYBERT
    ),
    "tinybert_prediction": MethodCard(
        "TinyBERT-style prediction-layer distillation (the teacher's soft labels)", _TINYBERT
    ),
}
# Plan stages that write a student without a training method (their recipe names the stage).
STAGE_CARDS: dict[str, MethodCard] = {
    "oneshot_prune": MethodCard(
        "one-shot structured pruning from calibration activations (Minitron-style), not yet distilled",
        (
            "Muralidharan et al., Compact Language Models via Pruning and Knowledge Distillation (2024)",
            "2407.14679",
        ),
    ),
}
PAPERS: dict[str, tuple[str, str]] = {k: c.paper for k, c in METHOD_CARDS.items() if c.paper is not None}
# Metric keys distil reports -> the metric ids model cards list.
_METRIC_IDS = {"accuracy": "accuracy", "f1": "f1", "matthews_correlation": "matthews_correlation",
               "pearson": "pearsonr", "spearmanr": "spearmanr", "exact_match": "exact_match",
               "perplexity": "perplexity"}  # fmt: skip


def _head(config: dict[str, Any]) -> str:
    return head_of_architectures(config.get("architectures") or ())


def _parameters(folder: Path) -> int | None:
    total = 0
    files = sorted(folder.glob("*.safetensors"))
    for file in (f for f in files if f.name != "method.safetensors"):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                n = 1
                for dim in handle.get_slice(key).get_shape():
                    n *= dim
                total += n
    return total or None


def _datasets(recipe: dict[str, Any]) -> list[str]:
    """The Hub datasets a run trained on, as its task recorded them, or ``[]``: local files have no Hub id."""
    built = recipe.get("built") or {}
    if "hub_datasets" in built:
        return [str(d) for d in built["hub_datasets"]]
    # A recipe written before tasks recorded their datasets: GLUE and SQuAD by name.
    task = str(((recipe.get("config") or {}).get("data") or {}).get("task", ""))
    if task in GLUE_METRIC_KEYS:  # the GLUE task names
        return ["nyu-mll/glue"]
    if task in ("squad", "squad_v2"):
        return ["rajpurkar/squad" if task == "squad" else "rajpurkar/squad_v2"]
    return []


def _data_files(data: dict[str, Any]) -> list[str]:
    """The local files a run trained on, by name only (a card never shows where they were)."""
    files = [data.get("train_file"), *(data.get("corpus") or [])]
    return [Path(str(f)).name for f in files if f]


def _hub_id(name: str | None) -> str | None:
    """``name`` when it is a Hub id (``embedded`` is all-MiniLM-L6-v2's), else ``None``."""
    if name in ("embedded", "all-MiniLM-L6-v2", _EMBEDDED):
        return _EMBEDDED
    return name if name and not looks_local(name) else None


def base_model(recipe: dict[str, Any], depth: int = 0) -> str | None:
    """The Hub model a student descends from, following local teachers' own recipes back to one.

    A student distilled from ``runs/topics-teacher/student`` (all-MiniLM-L6-v2 fine-tuned here) has
    ``sentence-transformers/all-MiniLM-L6-v2`` as its base: the teacher's recipe names where it started.
    ``None`` when the chain ends in a local folder without a recipe.
    """
    models = (recipe.get("config") or {}).get("models") or {}
    student = models.get("student") or {}
    # The model the student learned from: its teacher, else the checkpoint it was fine-tuned from.
    source = models.get("teacher") or (student.get("path") if student.get("init") == "pretrained" else None)
    if not source:
        return None
    hub = _hub_id(str(source))
    if hub is not None or depth > 8:
        return hub
    parent = Path(str(source)).expanduser() / "recipe.json"
    if not parent.is_file():
        return None
    try:
        return base_model(json.loads(parent.read_text(encoding="utf-8")), depth + 1)
    except (OSError, ValueError):
        return None


def _teacher(recipe: dict[str, Any]) -> str | None:
    """The teacher as the card shows it: its Hub id, or its run's name (never a local path)."""
    teacher = (recipe.get("config") or {}).get("models", {}).get("teacher")
    if not teacher:
        return None
    hub = _hub_id(str(teacher))
    if hub is not None:
        return hub
    path = Path(str(teacher))
    return path.parent.name if path.name == "student" else path.name


def _front_matter(recipe: dict[str, Any], head: str, metrics: dict[str, float]) -> dict[str, Any]:
    method = str(recipe.get("method", ""))
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": HEADS[head].pipeline_tag}
    base = base_model(recipe)
    if base:
        meta["base_model"] = base
    if base in _LICENCES:
        meta["license"] = _LICENCES[base]
    meta["tags"] = [
        "distillation",
        "distil",
        method,
        *(["knowledge-distillation"] if method != "finetune" else []),
    ]
    found = _datasets(recipe)
    if found:
        meta["datasets"] = found
    named = sorted({_METRIC_IDS[k] for k in metrics if k in _METRIC_IDS})
    if named:
        meta["metrics"] = named
    return meta


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def write_card(
    folder: Path,
    *,
    bench: dict[str, Any] | None = None,
    export: dict[str, Any] | None = None,
    title: str | None = None,
) -> Path:
    """Write (or rewrite) ``folder/README.md`` from the recipe and what ``bench`` / ``export`` measured.

    Args:
        folder: An exported student (``config.json``, weights, ``recipe.json``).
        bench: ``distil bench`` results to record (kept as ``bench.json`` beside the card); ``None`` keeps
            the last ones recorded, if any.
        export: ``distil export``'s record (``onnx/export.json``); ``None`` reads it when it exists.
        title: The card's title; default: the run's folder (``RUN/student``) or the model folder's name.
            A folder written under a temporary name passes the name it will have.

    Returns:
        The card's path.
    """
    recipe_file = folder / "recipe.json"
    recipe = json.loads(recipe_file.read_text(encoding="utf-8")) if recipe_file.is_file() else {}
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if bench is not None:
        atomic_write_text(folder / BENCH_FILE, json.dumps(bench, indent=2))
    elif (folder / BENCH_FILE).is_file():
        bench = json.loads((folder / BENCH_FILE).read_text(encoding="utf-8"))
    record = folder / "onnx" / "export.json"
    if export is None and record.is_file():
        export = json.loads(record.read_text(encoding="utf-8"))
    head = _head(config)
    results = recipe.get("results") or {}
    metrics = {k: v for k, v in (results.get("dev") or {}).items() if isinstance(v, int | float)}
    front = yaml.safe_dump(_front_matter(recipe, head, metrics), sort_keys=False).strip()
    title = title or (folder.parent.name if folder.name == "student" else folder.name)
    lines = ["---", front, "---", "", f"# {title}", ""]
    lines += _intro(recipe, config) + _model(recipe, folder) + _training(recipe)
    lines += _results(results, metrics, recipe.get("built") or {})
    lines += _use_and_limits(recipe, head)
    lines += _bench_lines(bench) if bench else []
    lines += _onnx(export) if export else []
    lines += _usage(head)
    path = folder / CARD
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def _intro(recipe: dict[str, Any], config: dict[str, Any]) -> list[str]:
    method = str(recipe.get("method", "unknown"))
    card = METHOD_CARDS.get(method) or STAGE_CARDS.get(method)
    if card is None:
        how = "a method this version of distil does not describe"
    elif card.paper is None:
        how = card.what
    else:
        how = f"{card.what}, after [{card.paper[0]}](https://arxiv.org/abs/{card.paper[1]})"
    return [f"A {config.get('model_type', '')} model trained with distil by **{method}**: {how}.", ""]


def _model(recipe: dict[str, Any], folder: Path) -> list[str]:
    cfg, built = recipe.get("config") or {}, recipe.get("built") or {}
    data = cfg.get("data") or {}
    teacher = _teacher(recipe)
    params = _parameters(folder)
    init = built.get("student_init") or (cfg.get("models") or {}).get("student", {}).get("init")
    rows = [
        ("teacher", f"`{teacher}`" if teacher else "none"),
        ("base model", f"`{base}`" if (base := base_model(recipe)) and base != teacher else None),
        ("student initialisation", init),
        ("teacher layers kept", built.get("student_teacher_layers")),
        ("task", data.get("task")),
        ("training data", ", ".join(_datasets(recipe) or _data_files(data)) or None),
        ("training examples", built.get("train_examples") or built.get("train_blocks")),
        ("classes", ", ".join(built["label_names"]) if built.get("label_names") else None),
        ("parameters", f"{params:,}" if params else None),
    ]
    return ["## Model", "", *_table([(k, v) for k, v in rows if v not in (None, "", [])]), ""]


_HYPER: tuple[str, ...] = ("epochs", "max_steps", "batch_size", "grad_accum", "lr", "warmup_ratio")
_HYPER += ("weight_decay", "precision", "seed")


def _training(recipe: dict[str, Any]) -> list[str]:
    cfg, results = recipe.get("config") or {}, recipe.get("results") or {}
    train = cfg.get("train") or {}
    rows: list[tuple[str, Any]] = [(k, train[k]) for k in _HYPER if train.get(k) is not None]
    rows += [(f"method.{k}", v) for k, v in (cfg.get("method") or {}).items() if k != "name"]
    out = ["## Training", "", *_table(rows), ""]
    if results.get("steps") is not None:
        seconds = float(results.get("train_seconds") or 0)
        where = f"{results.get('world_size', 1)} process(es), {results.get('precision', 'fp32')}"
        out += [f"{results['steps']} steps in {seconds:.0f} s ({where}).", ""]
    return out


def _results(results: dict[str, Any], metrics: dict[str, float], built: dict[str, Any]) -> list[str]:
    if not metrics:
        return []
    chosen = f"selected on `{results.get('selection_metric')}` at step {results.get('best_step')}"
    size = (built.get("eval_splits") or {}).get("dev") or built.get("dev_examples")
    rows = [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    dev = f"Dev set, {size:,} examples" if isinstance(size, int) else "Dev set"
    small = (
        [f"With {size} dev examples, one example moves accuracy by {100 / size:.1f} points.", ""]
        if isinstance(size, int) and 0 < size < 200
        else []
    )
    return ["## Results", "", f"{dev} ({chosen}):", "", "| metric | value |", "|---|---|", *rows, "", *small]


def _use_and_limits(recipe: dict[str, Any], head: str) -> list[str]:
    """Intended use, limitations and licence, from what the recipe records (no claim beyond it)."""
    cfg, built = recipe.get("config") or {}, recipe.get("built") or {}
    data = cfg.get("data") or {}
    task = str(data.get("task", "?"))
    what = HEADS[head].purpose
    classes = built.get("label_names")
    labels = f" into {', '.join(classes)}" if classes else ""
    trained = _datasets(recipe) or _data_files(data) or [task]
    length = data.get("max_length")
    base = base_model(recipe)
    licence = (
        f"{_LICENCES[base]}, the licence of its base model `{base}`; the terms of its training data apply "
        "as well"
        if base in _LICENCES
        else "not recorded: the student inherits the terms of its teacher and of its training data; "
        "state them (`license:` above) before publishing"
    )
    inputs = f", inputs of at most {length} tokens" if length else ""
    return [
        "## Intended use and limitations",
        "",
        f"- Intended use: {what}{labels} on text like its training data ({', '.join(trained)}){inputs}.",
        "- It was evaluated only on the dev split reported above; it has not been tested on other domains, "
        "languages or input lengths, where its accuracy is unknown.",
        "- It learned from its teacher and its data and carries their errors and biases; a distilled "
        "student is usually less accurate than its teacher (see Results and Speed).",
        f"- Licence: {licence}.",
        "",
    ]


def public_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` with every local path reduced to its last part, for a file leaving this machine.

    ``--push-to-hub`` uploads this instead of ``recipe.json``: the user's training file, teacher folder and
    run directory are shown by name, never by where they are (``/home/me/data/mine.tsv`` -> ``mine.tsv``).
    Hub ids and ``embedded`` are kept.
    """

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str) and ("/" in value or "\\" in value) and looks_local(value):
            return Path(value).name
        return value

    return clean(recipe)


def _onnx(export: dict[str, Any]) -> list[str]:
    out = ["## ONNX", "", f"Verified against PyTorch (`onnx/EXPORT.md`), opset {export.get('opset')}:", ""]
    for name, entry in (export.get("files") or {}).items():
        check = entry.get("check") or {}
        line = (
            f"- `onnx/{entry.get('file')}` ({name}): max relative difference {check.get('max_rel', 0.0):.2g}"
        )
        if entry.get("format"):
            decided, rows = check.get("decided"), check.get("rows")
            of = f" of {decided} decided rows" if decided is not None and decided != rows else ""
            agreement = f"{check.get('agreement', 0.0):.0%}{of}"
            line += f", argmax agreement {agreement}; int8 format `{entry['format']}`"
            line += (
                " (the same integers on every CPU)" if entry.get("portable") else " (exact only with VNNI)"
            )
        out.append(line)
    cpu = export.get("cpu") or {}
    if cpu:
        flags = ", ".join(cpu.get("int8_flags") or []) or "none read"
        out.append(
            f"- checked on {cpu.get('model') or 'an unknown CPU'} ({cpu.get('machine')}; int8 flags: {flags})"
        )
    return [*out, ""]


def _bench_lines(bench: dict[str, Any]) -> list[str]:
    from distil.evaluation.bench_table import format_bench

    settings = bench.get("settings") or {}
    where = f"{settings.get('threads', '?')} threads, sequences of {settings.get('seq_length', '?')} tokens"
    return [
        "## Speed",
        "",
        f"`distil bench` ({where}). Speed-ups kept apart: against the teacher in the same runtime (what "
        "distillation bought), against the model's own PyTorch graph (what the runtime bought), and against "
        "the teacher in PyTorch (both):",
        "",
        format_bench(bench),
        "",
    ]


def _usage(head: str) -> list[str]:
    cls = HEADS[head].auto_class
    return [
        "## Use",
        "",
        "```python",
        f"from transformers import AutoTokenizer, {cls}",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO")',
        f'model = {cls}.from_pretrained("PATH_OR_REPO")',
        "```",
        "",
    ]
