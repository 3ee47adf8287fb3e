"""One-process engine options: precision policies, a separate teacher dtype, bf16 checkpoints, activation
checkpointing, the launcher check, DeBERTa with default settings, and the fp16 scaler's skipped steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from distil.cli.main import main
from distil.errors import ConfigError
from distil.methods.kd import KD
from distil.training import step as step_module
from distil.training.loop import train
from distil.training.optim import optimizer_step
from factories import save_tiny_pair, tiny_model, tiny_tokenizer
from helpers import tiny_run


def _dtypes_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.dtype, torch.dtype]]:
    """Record (the student's logits dtype, the teacher's weights dtype) at each KD loss call."""
    seen: list[tuple[torch.dtype, torch.dtype]] = []
    teacher_weights: list[torch.dtype] = []
    original_loss, original_features = KD.loss, step_module.forward_features

    def features(model: Any, batch: Any, request: Any) -> Any:  # the loop calls it for the teacher
        teacher_weights.append(next(model.parameters()).dtype)
        return original_features(model, batch, request)

    def loss(self: KD, batch: Any, student: Any, teacher: Any) -> Any:
        seen.append((student.logits.dtype, teacher_weights[-1]))
        out = original_loss(self, batch, student, teacher)
        assert out.total.dtype == torch.float32  # losses stay float32 under every policy
        return out

    monkeypatch.setattr(KD, "loss", loss)
    monkeypatch.setattr(step_module, "forward_features", features)
    return seen


@pytest.mark.parametrize(
    ("precision", "teacher_dtype", "expected"),
    [
        ("fp32", None, (torch.float32, torch.float32, torch.float32)),
        ("bf16-mixed", None, (torch.bfloat16, torch.bfloat16, torch.float32)),
        ("bf16-pure", None, (torch.bfloat16, torch.bfloat16, torch.bfloat16)),
        ("fp32", "bfloat16", (torch.float32, torch.bfloat16, torch.float32)),  # a bf16 teacher, fp32 student
    ],
)
def test_precision_policies_train_on_cpu(tmp_path, monkeypatch, precision, teacher_dtype, expected):
    """(student compute, teacher weights, exported weights) dtypes follow the policy; finite losses."""
    overrides = {"data.dev_file": None, "train.max_steps": 3, "train.precision": precision}
    cfg = tiny_run(tmp_path, **overrides, **{"models.teacher_dtype": teacher_dtype})
    seen = _dtypes_seen(monkeypatch)
    result = train(cfg, progress=False)
    assert set(seen) == {expected[:2]}
    records = [json.loads(line) for line in (Path(cfg.run_dir) / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss/total"])) for r in records if "loss/total" in r)
    weights = load_file(result.student_dir / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {expected[2]}


def test_fp16_needs_a_gpu(tmp_path):
    cfg = tiny_run(tmp_path, **{"train.precision": "fp16-mixed"})
    with pytest.raises(ConfigError, match="fp16-mixed needs a CUDA GPU"):
        train(cfg, progress=False)
    assert not Path(cfg.run_dir).exists()


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
def test_bf16_checkpoint_with_tinybert_projections_trains(tmp_path, precision):
    # The checkpoint stores bfloat16; the policy, not the checkpoint, decides the dtypes. Before, the
    # student came out pure bf16 beside float32 projections: "mat1 and mat2 must have the same dtype".
    teacher = tmp_path / "bf16-teacher"
    tiny_model("bert", "seq", num_labels=2).to(torch.bfloat16).save_pretrained(teacher)
    tiny_tokenizer().save_pretrained(teacher)
    assert {t.dtype for t in load_file(teacher / "model.safetensors").values()} == {torch.bfloat16}
    narrow = {"init": "config", "num_layers": 1, "hidden_size": 16, "num_heads": 4}  # 16 != 32: projections
    cfg = tiny_run(
        tmp_path, "tinybert",
        **{"models.teacher": str(teacher), "models.student": narrow, "data.dev_file": None,
           "train.max_steps": 2, "train.precision": precision},
    )  # fmt: skip
    result = train(cfg, progress=False)
    assert result.steps == 2
    projections = load_file(result.student_dir / "method.safetensors")
    assert projections and {t.dtype for t in projections.values()} == {torch.float32}


def test_activation_checkpointing_gives_the_same_student(tmp_path):
    plain = tiny_run(
        tmp_path, **{"run_dir": str(tmp_path / "a"), "data.dev_file": None, "train.max_steps": 4}
    )
    ckpt = tiny_run(
        tmp_path,
        **{"run_dir": str(tmp_path / "b"), "data.dev_file": None, "train.max_steps": 4,
           "train.activation_checkpointing": True},
    )  # fmt: skip
    train(plain, progress=False)
    train(ckpt, progress=False)
    a, b = (
        load_file(Path(plain.run_dir) / "student" / "model.safetensors"),
        load_file(Path(ckpt.run_dir) / "student" / "model.safetensors"),
    )
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"ACCELERATE_USE_FSDP": "true"}, "engine.name=fsdp"),
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed"),
        ({"ACCELERATE_MIXED_PRECISION": "bf16"}, "train.precision=bf16-mixed"),
        ({"ACCELERATE_DYNAMO_BACKEND": "inductor"}, "train.compile=true"),
    ],
)
def test_an_accelerate_config_distil_would_ignore_is_refused(
    tmp_path, monkeypatch, capsys, variables, message
):
    cfg = tiny_run(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert main(["distill", "--config", str(path), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not Path(cfg.run_dir).exists()


def test_deberta_v2_trains_and_evaluates_with_default_settings(tmp_path, capsys):
    teacher = save_tiny_pair(tmp_path / "deberta", "deberta-v2", num_labels=2)
    cfg = tiny_run(tmp_path, **{"models.teacher": str(teacher), "train.max_steps": 2})
    assert cfg.models.attn_implementation is None  # the model's own default
    result = train(cfg, progress=False)
    assert "accuracy" in result.metrics
    assert main(["eval", str(result.student_dir), "--task", "custom",
                 "--file", str(tmp_path / "dev.jsonl"), "--text-columns", "text",
                 "--label-column", "label"]) == 0  # fmt: skip
    assert "accuracy" in capsys.readouterr().out


def test_a_step_the_fp16_scaler_skips_does_not_advance_the_schedule():
    layer = nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    scaler.scale(layer(torch.ones(1, 4)).sum()).backward()
    before = layer.weight.detach().clone()
    layer.weight.grad = torch.full((1, 4), float("inf"))  # an overflow
    assert not optimizer_step(optimizer, scheduler, list(layer.parameters()), max_grad_norm=0, scaler=scaler)
    assert torch.equal(layer.weight, before) and scheduler.last_epoch == 0 and scaler.get_scale() == 2.0**7
    scaler.scale(layer(torch.ones(1, 4)).sum()).backward()
    assert optimizer_step(optimizer, scheduler, list(layer.parameters()), max_grad_norm=0, scaler=scaler)
    assert not torch.equal(layer.weight, before) and scheduler.last_epoch == 1


def test_compiled_blocks_give_the_same_student(tmp_path):
    """``train.compile`` compiles each block (inductor on CPU); the result matches eager to float rounding."""
    quick = {"data.dev_file": None, "train.max_steps": 3}
    eager = tiny_run(tmp_path, **{"run_dir": str(tmp_path / "eager"), **quick})
    compiled = tiny_run(tmp_path, **{"run_dir": str(tmp_path / "compiled"), "train.compile": True, **quick})
    train(eager, progress=False)
    train(compiled, progress=False)
    a = load_file(Path(eager.run_dir) / "student" / "model.safetensors")
    b = load_file(Path(compiled.run_dir) / "student" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0, msg=key)


def test_compile_is_refused_for_methods_that_hook_inside_blocks(tmp_path):
    cfg = tiny_run(
        tmp_path, "minilmv2", **{"train.compile": True, "data.dev_file": None, "method.relation_heads": 4}
    )
    with pytest.raises(ConfigError, match="train.compile=false"):
        train(cfg, progress=False)


def test_without_a_progress_bar_a_run_prints_progress_lines(tmp_path, capsys):
    cfg = tiny_run(tmp_path, **{"data.dev_file": None, "train.max_steps": 3, "train.progress_seconds": 1e-9})
    train(cfg, progress=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[distil] step ")]
    assert len(lines) == 3 and lines[-1].startswith("[distil] step 3/3 (100%): loss ")
    assert "samples/s" in lines[0] and "left" in lines[0] and "(kd " in lines[0]


def test_trackers_are_accelerates_and_a_missing_one_is_refused_when_read(tmp_path):
    cfg = tiny_run(
        tmp_path, **{"data.dev_file": None, "train.max_steps": 2, "train.report_to": ["tensorboard"]}
    )
    assert cfg.train.trackers == ["tensorboard"]
    train(cfg, progress=False)
    events = list((Path(cfg.run_dir) / "tb").rglob("events.out.tfevents.*"))
    assert events  # written by accelerate's TensorBoardTracker
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = set()
    for event_file in events:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        scalars |= set(accumulator.Tags()["scalars"])
    assert "loss/total" in scalars
    for missing in ("wandb", "mlflow"):
        with pytest.raises(ConfigError, match=f"train.report_to={missing} needs the {missing} package"):
            tiny_run(tmp_path, **{"train.report_to": [missing]})


def test_each_engine_reads_its_own_options(tmp_path):
    """``engine.name`` selects the options class: DDP's search for unused parameters reaches DDP, an FSDP
    option on another engine is an unknown key, and a config without the section is ``auto``."""
    import torch.distributed as dist

    from distil.config import build_run_config
    from distil.training.dist import DistEnv
    from distil.training.engines import build_engine
    from distil.training.engines.ddp import DDPEngine, DDPOptions
    from distil.training.precision import precision_policy

    raw = tiny_run(tmp_path).to_dict()
    assert raw["engine"] == {"name": "auto"}
    cfg = build_run_config(raw | {"engine": {"name": "ddp", "find_unused_parameters": True}})
    assert cfg.engine == DDPOptions(name="ddp", find_unused_parameters=True)
    assert cfg.to_dict()["engine"] == {"name": "ddp", "find_unused_parameters": True}
    with pytest.raises(ConfigError, match="engine.cpu_offload"):
        build_run_config(raw | {"engine": {"name": "ddp", "cpu_offload": True}})
    env = DistEnv(world=1, rank=0, local_rank=0, local_world=1, device=torch.device("cpu"))
    precision = precision_policy("fp32", None, env.device)
    assert build_engine(cfg.engine, env, precision).name == "none"  # DDP over one process
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        for search in (True, False):
            engine = DDPEngine(env, precision, DDPOptions(name="ddp", find_unused_parameters=search))
            wrapped = engine.wrap(nn.Linear(2, 2))  # type: ignore[arg-type]  # any module wraps
            assert (wrapped.find_unused_parameters, wrapped.static_graph) == (search, not search)
    finally:
        dist.destroy_process_group()
