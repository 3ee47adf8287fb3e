"""Two CPU processes (torchrun + gloo) on the engine: DDP and FSDP2 equal one process at the same global
batch, FSDP shards are shards, kill-and-resume under FSDP, resume across process counts, per-rank masks.

Three ``torchrun`` launches serve every test (`mp_worker.py` runs a list of runs per launch); the
one-process references train in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM

from distil.config import RunConfig, build_run_config, load_config
from distil.methods.homodistil import HomoDistil
from distil.methods.kd import KD
from distil.plans import run
from distil.training.checkpoint import latest_checkpoint
from distil.training.engines import ENGINES
from distil.training.loop import train
from factories import save_tiny_pair, tiny_config, tiny_model, tiny_tokenizer
from helpers import CORPUS, corpus_run, tiny_run, train_interrupted, write_tiny_task
from qa_lm_helpers import CHAT, TINY_TEMPLATE, lm_run

pytestmark = pytest.mark.multiprocess

WORKER = Path(__file__).with_name("mp_worker.py")
STEPS = 10
# Every engine of the registry that trains across processes: a new engine joins these invariants.
MULTI_PROCESS = [name for name, engine in ENGINES.items() if engine.traits.multi_process]
# HomoDistil on a decoder (no input masking, whose streams are per process): pruned and narrowed (under
# FSDP re-sharded) at each prune event.
CASES = [(m, p) for m in ("kd", "minilmv2", "lwd", "gkd", "homodistil_llama") for p in MULTI_PROCESS]
# pretrain/homodistil as written on these decoder families, on one process and on two under FSDP.
BUNDLED_FAMILIES = ("qwen3", "gemma3_text")
# Evaluation every 3 steps (selecting the best student) and the teacher's logits cached up front; a
# learning rate at which the student's predictions change between evaluations.
EVALUATED = {"eval_every": 3, "cache_teacher": True, "lr": 1e-2}


def _env() -> dict[str, str]:
    tests = str(Path(__file__).resolve().parents[1])
    return {
        **os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        # A process that dies of a signal prints its Python stacks and the C++ one of the error.
        "PYTHONFAULTHANDLER": "1", "TORCH_SHOW_CPP_STACKTRACES": "1",
        "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]),
    }  # fmt: skip


def _launch(tmp: Path, name: str, runs: list[dict[str, Any]], *, crash: bool = False) -> None:
    job = tmp / f"{name}.json"
    job.write_text(json.dumps({"runs": runs}))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*torchrun, str(WORKER), str(job)], env=_env(), timeout=600, capture_output=True, text=True
    )
    (tmp / f"{name}.log").write_text(done.stdout + done.stderr)
    if crash:
        assert done.returncode != 0, "the processes were to be killed"
    else:  # the processes' tracebacks and the launcher's last words, without progress bars
        lines = [line for line in (done.stdout + done.stderr).splitlines() if "it/s]" not in line]
        assert done.returncode == 0, "\n".join(lines[-80:])


def _yaml(cfg: RunConfig, tmp: Path) -> str:
    path = tmp / f"{Path(cfg.run_dir).name}.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path)


def _lm_teacher(tmp: Path) -> Path:
    folder = tmp / "mlm-teacher"
    if not folder.exists():
        AutoModelForMaskedLM.from_config(tiny_config("bert")).save_pretrained(folder)
        tiny_tokenizer().save_pretrained(folder)
    return folder


def _config(
    tmp: Path, method: str, name: str, batch: int, pruning: str = "slicing", **train_: Any
) -> RunConfig:
    """``method`` for 10 steps at a global batch of 8 (``batch`` per process), dropout off.

    KD and LWD (which trains projections of its own) on a tiny labelled task; MiniLMv2 (whose relations
    leave the student's last FFN without gradient) and DistilBERT-style (masking) on a tiny corpus. Every
    row has the same length: LWD's hidden-state MSE averages over all positions, padding included, so a
    batch split differently would pad differently. HomoDistil (masking too) prunes the teacher's copy.
    """
    engine = {"name": train_.pop("parallel", "auto")}  # the engine section, apart from train's keys
    if train_.pop("ram_efficient_loading", False):
        engine["ram_efficient_loading"] = True
    settings = {"batch_size": batch, "max_steps": STEPS, **train_}
    if method in ("kd", "lwd"):
        rows = tmp / "fixed.jsonl"
        if not rows.exists():
            write_tiny_task(rows, 36, seed=0, words_per_row=8)  # 36 rows: a short last batch of 4
        overrides = {f"train.{k}": v for k, v in settings.items()} | {"data.train_file": str(rows)}
        overrides |= {f"engine.{k}": v for k, v in engine.items()}
        if train_.get("eval_every"):  # regression: continuous dev metrics; 15 dev rows: uneven shards
            overrides |= _regression(tmp)
        return tiny_run(tmp, method, **{"run_dir": str(tmp / name), "data.dev_file": None, **overrides})
    if method in ("gkd", "gkd_seqkd"):
        spec = {"lmbda": 0.0, "seq_kd": True} if method == "gkd_seqkd" else {"lmbda": 1.0}
        return _chat_config(tmp, name, settings, engine, spec)
    if method == "oneshot":  # a tiny Llama pruned once (process 0) to 1 layer, half widths; then KD
        plan = {
            "name": "oneshot_prune",
            "calibration_rows": 8,
            "target_num_layers": 1,
            "target_width_ratio": 0.5,
        }
        overrides = {f"plan.{k}": v for k, v in plan.items()} | {f"train.{k}": v for k, v in settings.items()}
        overrides |= {f"engine.{k}": v for k, v in engine.items()} | {"run_dir": str(tmp / name)}
        return lm_run(tmp, "kd", "llama", **overrides)
    if method.startswith("homodistil"):  # pruned over steps 2-6, narrowed (FSDP: re-sharded) at each event
        student, teacher = {"init": "copy"}, _lm_teacher(tmp) if method == "homodistil" else _llama(tmp)
        spec = {"t_i": 1, "t_f": 6, "delta_t": 2, "pruning": pruning}
        settings = {"checkpoint_every": 2, **settings}
        method = "homodistil"
    elif method == "minilmv2":
        if not (tmp / "teacher").exists():
            save_tiny_pair(tmp / "teacher", "bert", num_labels=2)
        student, spec = {"init": "config", "num_layers": 1, "hidden_size": 16}, {"relation_heads": 4}
        teacher = tmp / "teacher"
    else:
        student, spec, teacher = {"init": "layers", "layers": [2]}, {"smoothing": True}, _lm_teacher(tmp)
    raw = corpus_run(tmp, teacher, student, {"name": method, **spec}, name=name)
    raw["train"] |= {"seed": 3, **settings}
    raw["engine"] = engine
    return build_run_config(raw)


def _llama(tmp: Path, family: str = "llama") -> Path:
    """A tiny causal LM: HomoDistil prunes whole KV groups, SwiGLU channels and the hidden width."""
    folder = tmp / f"{family}-teacher"
    if not folder.exists():
        tiny_model(family, "lm").save_pretrained(folder)
        tiny_tokenizer().save_pretrained(folder)
    return folder


def _bundled_homodistil(tmp: Path, family: str, name: str, batch: int, engine: str) -> RunConfig:
    """``pretrain/homodistil`` as written, on a tiny decoder teacher of ``family`` (no head stage)."""
    overrides = [
        f"models.teacher={_llama(tmp, family)}", f"run_dir={tmp / name}", f"data.corpus=[{CORPUS}]",
        f"data.cache_dir={tmp / 'c'}", "data.max_length=16", f"train.batch_size={batch}",
        f"train.max_steps={STEPS}", "train.checkpoint_every=0", "train.seed=3", "train.report_to=[]",
        "method.t_i=1", "method.t_f=6", "method.delta_t=2", "method.target_hidden_size=16",
        "method.target_intermediate_size=32", f"engine.name={engine}",
    ]  # fmt: skip
    return load_config("pretrain/homodistil", overrides)


def _chat_config(
    tmp: Path, name: str, settings: dict[str, Any], engine: dict[str, Any], spec: dict[str, Any]
) -> RunConfig:
    """GKD on 40 bundled conversations, every step on the student's samples (generated under the engine:
    DDP's full copy, FSDP's gathered root), or with ``seq_kd`` on the teacher's (FSDP: the sharded teacher
    generates, a root of its own). The teacher has no end-of-sequence token, so every
    completion has 4 tokens: the divergence is a mean over each micro-batch's tokens, which equals the
    one-process mean only when the processes score as many tokens."""
    teacher = tmp / "chat-teacher"
    if not teacher.exists():
        model = tiny_model("llama", "lm", eos_token_id=None)
        model.generation_config.eos_token_id = None
        model.save_pretrained(teacher)
        tiny_tokenizer().save_pretrained(teacher)
        (tmp / "tiny.jinja").write_text(TINY_TEMPLATE)
    raw = {
        "run_dir": str(tmp / name),
        "models": {"teacher": str(teacher), "student": {"init": "layers", "layers": [2]}},
        "data": {"task": "chat", "train_file": str(CHAT / "chat.jsonl"), "max_length": 48,
                 "chat_template": str(tmp / "tiny.jinja"), "train_subset": 40, "group_by_length": False},
        "train": {"lr": 1e-3, "warmup_ratio": 0.0, "report_to": [], "seed": 3, "epochs": 2, **settings},
        "method": {"name": "gkd", "max_new_tokens": 4, **spec},
        "engine": engine,
    }  # fmt: skip
    return build_run_config(raw)


def _regression(tmp: Path) -> dict[str, Any]:
    if not (tmp / "regressor").exists():
        save_tiny_pair(tmp / "regressor", "bert", num_labels=1)
        write_tiny_task(tmp / "reg-train.jsonl", 36, seed=0, regression=True, words_per_row=8)
        write_tiny_task(tmp / "reg-dev.jsonl", 15, seed=1, regression=True)
    return {
        "models.teacher": str(tmp / "regressor"), "data.is_regression": True, "data.label_names": None,
        "data.train_file": str(tmp / "reg-train.jsonl"), "data.dev_file": str(tmp / "reg-dev.jsonl"),
    }  # fmt: skip


def _student(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "student" / "model.safetensors")


def _final_loss(run_dir: Path) -> float:
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return next(r["loss/total"] for r in reversed(records) if r.get("step") == STEPS and "loss/total" in r)


def _assert_same_student(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = _student(a), _student(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=atol, rtol=0, msg=key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every run of this module: references in this process, then the three launches."""
    tmp = tmp_path_factory.mktemp("mp")
    for method in ("kd", "minilmv2", "lwd", "gkd", "gkd_seqkd", "homodistil_llama", "oneshot"):
        run(_config(tmp, method, f"{method}-one", 8), progress=False)
    for family in BUNDLED_FAMILIES:
        run(_bundled_homodistil(tmp, family, f"bundled-{family}-one", 8, "auto"), progress=False)
    train(_config(tmp, "kd", "evaluated-one", 8, **EVALUATED), progress=False)
    # A one-process KD run killed after step 5 (checkpoint at step 4), resumed below in two processes.
    one_killed = _config(tmp, "kd", "kd-one-to-two", 8, checkpoint_every=2)
    with pytest.MonkeyPatch.context() as patch:
        train_interrupted(one_killed, KD, 6, patch)
    # A one-process HomoDistil run killed in step 4, mid-pruning (checkpoint at step 2, narrowed once),
    # resumed below in two FSDP processes.
    pruned_killed = _config(tmp, "homodistil_llama", "homodistil-one-to-fsdp", 8)
    with pytest.MonkeyPatch.context() as patch:
        train_interrupted(pruned_killed, HomoDistil, 4, patch)

    fsdp = {"parallel": "fsdp", "checkpoint_every": 2}

    def job(method: str, name: str, **extra: Any) -> dict[str, Any]:
        settings = {k: v for k, v in extra.items() if k not in ("masks", "footprint", "stop_after_step")}
        pruning = settings.pop("pruning", "slicing")
        entry = {k: v for k, v in extra.items() if k not in settings}
        return {"config": _yaml(_config(tmp, method, name, 4, pruning, **settings), tmp), **entry}

    _launch(
        tmp,
        "a",
        [job(m, f"{m}-{p}", parallel=p) for m, p in CASES]
        + [
            job("kd", "footprint", parallel="fsdp", footprint=str(tmp / "fp.json")),
            job("gkd_seqkd", "gkd_seqkd-fsdp", parallel="fsdp"),
            job("kd", "kd-fsdp-rank0-load", parallel="fsdp", ram_efficient_loading=True),
            job("kd", "evaluated-fsdp", parallel="fsdp", **EVALUATED),
            job("distilbert", "masked-full", **fsdp, masks=str(_folder(tmp / "masks-full"))),
            # Two processes stopping after step 5 (checkpoint at step 4), resumed in one process below.
            job("kd", "kd-two-to-one", **fsdp, stop_after_step=5),
            # HomoDistil on DDP: narrowed at prune events (re-wrapped each time) against masked at full
            # width; and on DDP and FSDP stopped after step 3 (checkpoint at step 2, mid-pruning).
            job("homodistil", "homodistil-ddp", parallel="ddp"),
            job("homodistil", "homodistil-ddp-masks", parallel="ddp", pruning="masks"),
            job("homodistil", "homodistil-ddp-stopped", parallel="ddp", stop_after_step=3),
            job("homodistil_llama", "homodistil_llama-fsdp-stopped", parallel="fsdp", stop_after_step=3),
            # The same stopped run resumed below in one process.
            job("homodistil_llama", "homodistil-fsdp-to-one", parallel="fsdp", stop_after_step=3),
            job("oneshot", "oneshot-fsdp", parallel="fsdp"),
        ]
        + [
            {"config": _yaml(_bundled_homodistil(tmp, family, f"bundled-{family}-fsdp", 4, "fsdp"), tmp)}
            for family in BUNDLED_FAMILIES
        ],
    )
    killed = job("distilbert", "masked-killed", **fsdp, masks=str(_folder(tmp / "masks-before")))
    _launch(tmp, "b", [killed | {"kill_after_step": 5}], crash=True)
    resumed = {"resume": True}
    _launch(
        tmp,
        "c",
        [
            killed | resumed | {"masks": str(_folder(tmp / "masks-after"))},
            job("kd", "kd-one-to-two", **fsdp) | resumed,
            job("homodistil", "homodistil-ddp-stopped", parallel="ddp") | resumed,
            job("homodistil_llama", "homodistil_llama-fsdp-stopped", parallel="fsdp") | resumed,
            job("homodistil_llama", "homodistil-one-to-fsdp", parallel="fsdp") | resumed,
        ],
    )
    two_to_one = _config(tmp, "kd", "kd-two-to-one", 4, grad_accum=2, checkpoint_every=2)
    train(two_to_one, resume=True, progress=False)
    pruned_to_one = _config(tmp, "homodistil_llama", "homodistil-fsdp-to-one", 4, grad_accum=2)
    train(pruned_to_one, resume=True, progress=False)
    return tmp


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize(("method", "parallel"), CASES)
def test_two_processes_equal_one(runs: Path, method: str, parallel: str) -> None:
    recipe = json.loads((runs / f"{method}-{parallel}" / "student" / "recipe.json").read_text())
    # Some launchers silently start one process: make sure two really trained together, on the engine asked.
    assert (recipe["results"]["world_size"], recipe["results"]["parallel"]) == (2, parallel)
    assert recipe["results"]["steps"] == STEPS
    one, two = runs / f"{method}-one", runs / f"{method}-{parallel}"
    assert abs(_final_loss(one) - _final_loss(two)) <= 1e-5
    _assert_same_student(one, two)


def test_ddp_does_not_search_for_unused_parameters_every_step(runs: Path) -> None:
    """DDP runs with static_graph: no per-step search, so PyTorch's warning that KD (which leaves no
    parameter unused) was searched in vain never appears; MiniLMv2 (which does) still equals one process
    (test_two_processes_equal_one)."""
    log = (runs / "a.log").read_text()
    assert "kd-ddp" in {c[0] + "-" + c[1] for c in CASES} and "find_unused_parameters" not in log


def test_fsdp_holds_shards_of_student_optimizer_and_teacher(runs: Path) -> None:
    for rank in (0, 1):
        report = json.loads((runs / f"fp-{rank}.json").read_text())
        assert report["parallel"] == "fsdp"
        for part in ("student", "optimizer", "teacher"):
            assert report[part]["full"] > 0
            assert report[part]["local"] <= 0.55 * report[part]["full"], (rank, part, report[part])


def test_fsdp_kill_and_resume_equals_the_uninterrupted_run(runs: Path) -> None:
    recipe = json.loads((runs / "masked-killed" / "student" / "recipe.json").read_text())
    assert (recipe["results"]["world_size"], recipe["results"]["parallel"]) == (2, "fsdp")
    _assert_same_student(runs / "masked-full", runs / "masked-killed", atol=1e-6)


def test_ranks_draw_their_own_masks_and_the_same_ones_after_resume(runs: Path) -> None:
    def draws(folder: str, rank: int) -> list[Any]:
        return [json.loads(line) for line in (runs / folder / f"masks-{rank}.jsonl").read_text().splitlines()]

    full = [draws("masks-full", rank) for rank in (0, 1)]
    assert len(full[0]) == len(full[1]) == STEPS
    assert all(positions for positions in full[0])  # masking happened
    assert full[0] != full[1]  # each process its own stream
    for rank in (0, 1):
        before, after = draws("masks-before", rank), draws("masks-after", rank)
        assert before == full[rank][:5]  # killed after step 5
        assert after == full[rank][4:]  # resumed from the checkpoint of step 4


def test_resume_across_process_counts(runs: Path) -> None:
    for name, world in (("kd-one-to-two", 2), ("kd-two-to-one", 1)):
        recipe = json.loads((runs / name / "student" / "recipe.json").read_text())
        assert recipe["results"]["world_size"] == world and recipe["results"]["steps"] == STEPS
        _assert_same_student(runs / "kd-one", runs / name)


def test_homodistil_narrowed_on_ddp_equals_masked_and_resumes_exactly(runs: Path) -> None:
    """Each prune event narrows the student and DDP wraps it again; the masked run computes the same."""
    for name in ("homodistil-ddp", "homodistil-ddp-masks", "homodistil-ddp-stopped"):
        recipe = json.loads((runs / name / "student" / "recipe.json").read_text())
        assert (recipe["results"]["world_size"], recipe["results"]["parallel"]) == (2, "ddp")
        assert json.loads((runs / name / "student" / "config.json").read_text())["hidden_size"] == 16
    last = latest_checkpoint(runs / "homodistil-ddp")
    assert last is not None and last.name == f"step-{STEPS:08d}"
    state = load_file(last / "method_state.safetensors")
    assert state["pruning.masks.hidden"].numel() == 16  # the checkpoint holds the narrowed student
    assert abs(_final_loss(runs / "homodistil-ddp") - _final_loss(runs / "homodistil-ddp-masks")) <= 1e-5
    _assert_same_student(runs / "homodistil-ddp", runs / "homodistil-ddp-masks")
    _assert_same_student(runs / "homodistil-ddp", runs / "homodistil-ddp-stopped", atol=1e-6)


def test_homodistil_under_fsdp_resumes_at_any_process_count(runs: Path) -> None:
    """Decoder pruning under FSDP: stopped mid-pruning and resumed on two processes, killed on one and
    resumed on two (the fresh copy narrowed and re-sharded to the checkpoint's widths), or stopped on two
    and resumed on one, equals one process."""
    for name, world in (
        ("homodistil_llama-fsdp-stopped", 2),
        ("homodistil-one-to-fsdp", 2),
        ("homodistil-fsdp-to-one", 1),
    ):
        recipe = json.loads((runs / name / "student" / "recipe.json").read_text())
        assert recipe["results"]["world_size"] == world
        config = json.loads((runs / name / "student" / "config.json").read_text())
        assert (config["hidden_size"], config["num_key_value_heads"], config["intermediate_size"]) == (
            16,
            1,
            32,
        )
        _assert_same_student(runs / "homodistil_llama-one", runs / name, atol=1e-6)


@pytest.mark.parametrize("family", BUNDLED_FAMILIES)
def test_bundled_homodistil_on_a_decoder_under_fsdp_equals_one_process(runs: Path, family: str) -> None:
    one, two = runs / f"bundled-{family}-one", runs / f"bundled-{family}-fsdp"
    recipe = json.loads((two / "student" / "recipe.json").read_text())
    assert (recipe["results"]["world_size"], recipe["results"]["parallel"]) == (2, "fsdp")
    config = json.loads((two / "student" / "config.json").read_text())
    assert (config["hidden_size"], config["intermediate_size"]) == (16, 32)
    assert abs(_final_loss(one) - _final_loss(two)) <= 1e-5
    _assert_same_student(one, two)


def test_oneshot_plan_prunes_on_process_0_and_distils_under_fsdp(runs: Path) -> None:
    one, two = runs / "oneshot-one", runs / "oneshot-fsdp"
    reports = [json.loads((r / "stages" / "prune" / "pruning.json").read_text()) for r in (one, two)]
    for key in ("widths", "layers", "calibration_tokens"):
        assert reports[0][key] == reports[1][key], key
    assert reports[0]["layer_importance"] == pytest.approx(reports[1]["layer_importance"], rel=1e-5)
    recipe = json.loads((two / "student" / "recipe.json").read_text())
    assert recipe["stages"]["distil"]["world_size"] == 2 and recipe["stages"]["distil"]["parallel"] == "fsdp"
    assert abs(_final_loss(one / "stages" / "distil") - _final_loss(two / "stages" / "distil")) <= 1e-5
    _assert_same_student(one, two)


def test_fsdp_filled_from_process_0_equals_one_process(runs: Path) -> None:
    """``ram_efficient_loading``: process 0 reads the checkpoints; the others start on the meta device."""
    _assert_same_student(runs / "kd-one", runs / "kd-fsdp-rank0-load")


def test_sharded_evaluation_and_teacher_cache_equal_one_process(runs: Path) -> None:
    one, two = (
        json.loads((runs / n / "student" / "recipe.json").read_text())
        for n in ("evaluated-one", "evaluated-fsdp")
    )
    assert two["results"]["world_size"] == 2
    assert one["results"]["best_step"] == two["results"]["best_step"]
    for key, value in one["results"]["dev"].items():
        assert abs(value - two["results"]["dev"][key]) <= 1e-4, key
    evals = [
        [
            json.loads(line)
            for line in (runs / n / "log.jsonl").read_text().splitlines()
            if "eval/pearson" in line
        ]
        for n in ("evaluated-one", "evaluated-fsdp")
    ]
    assert len(evals[0]) == len(evals[1]) >= 3
    assert len({e["eval/pearson"] for e in evals[0]}) == len(evals[0])  # predictions changed
    for a, b in zip(*evals, strict=True):
        for key in ("eval/pearson", "eval/spearmanr"):
            assert abs(a[key] - b[key]) <= 1e-4, (a, b)
    _assert_same_student(runs / "evaluated-one", runs / "evaluated-fsdp")


def test_sequence_level_kd_with_a_sharded_teacher_equals_one_process(runs: Path) -> None:
    """``seq_kd``: the FSDP-sharded teacher writes the completions (synced decoding) on two processes."""
    recipe = json.loads((runs / "gkd_seqkd-fsdp" / "student" / "recipe.json").read_text())
    assert (recipe["results"]["world_size"], recipe["results"]["parallel"]) == (2, "fsdp")
    assert abs(_final_loss(runs / "gkd_seqkd-one") - _final_loss(runs / "gkd_seqkd-fsdp")) <= 1e-5
    _assert_same_student(runs / "gkd_seqkd-one", runs / "gkd_seqkd-fsdp")


def test_generate_on_two_processes_writes_what_one_writes(runs: Path) -> None:
    """`distil generate` under torchrun: the processes take every other part; the file is the same."""
    args = [
        "generate", str(runs / "chat-teacher"), "--prompts", str(CHAT / "chat-test.jsonl"), "--chat-template",
        str(runs / "tiny.jinja"), "--max-new-tokens", "3", "--temperature", "1.0", "--chunk", "16",
    ]  # fmt: skip
    from distil.cli.main import main

    assert main([*args, "--out", str(runs / "gen-one.jsonl")]) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*torchrun, "-m", "distil", *args, "--out", str(runs / "gen-two.jsonl")], env=_env(), timeout=600,
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (runs / "gen-two.jsonl").read_text() == (runs / "gen-one.jsonl").read_text()
