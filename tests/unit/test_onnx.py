"""ONNX export: logits equal PyTorch's, dynamic axes, int8 within tolerance, refusals leave no file."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import distil.deploy.onnx as onnx_export
from distil.adapters import model_inputs
from distil.data.batching import collate
from distil.deploy import (
    FP32_MAX_REL_DIFF,
    INT8_MAX_REL_DIFF,
    ExportError,
    LogitDiff,
    OnnxModel,
    compare_logits,
    export_onnx,
    find_exports,
    load_classifier,
    resolve_model_dir,
)
from distil.errors import ModelError
from factories import save_tiny_pair

FAMILIES = ("bert", "deberta-v2", "gpt2")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """One tiny classifier per family, exported once (fp32 + int8) for the whole module."""
    out = {}
    for family in FAMILIES:
        model_dir = save_tiny_pair(tmp_path_factory.mktemp(family), family, num_labels=3)
        export_onnx(model_dir, int8=True)
        out[family] = model_dir
    return out


def _padded_batch(model: torch.nn.Module, rows: int, longest: int) -> dict[str, torch.Tensor]:
    """Rows of decreasing length, right-padded: every row but the first has a partial attention mask."""
    generator = torch.Generator().manual_seed(rows * 100 + longest)
    lengths = [max(1, longest - 3 * i) for i in range(rows)]
    samples = [{"input_ids": torch.randint(5, 100, (n,), generator=generator).tolist()} for n in lengths]
    batch = collate(samples, int(model.config.pad_token_id))
    batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    assert rows == 1 or (batch["attention_mask"] == 0).any()
    return model_inputs(model, batch)


def _relative(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.abs(candidate - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("family", FAMILIES)
def test_export_writes_files_and_record(exported, family):
    model_dir = exported[family]
    files = find_exports(model_dir)
    assert set(files) == {"onnx-fp32", "onnx-int8"}
    record = json.loads((model_dir / "onnx" / "export.json").read_text())
    assert record["opset"] == 17 and record["outputs"] == ["logits"]
    assert record["files"]["onnx-fp32"]["check"]["max_rel"] <= FP32_MAX_REL_DIFF
    assert "torch" in record["versions"] and "onnxruntime" in record["versions"]
    assert "max rel diff" in (model_dir / "onnx" / "EXPORT.md").read_text()
    # Inputs as the family takes them: DeBERTa-v3-style (type_vocab_size=0) and GPT-2 take no token types.
    expected = ["input_ids", "attention_mask"] + (["token_type_ids"] if family == "bert" else [])
    assert OnnxModel(files["onnx-fp32"]).input_names == expected == record["inputs"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("rows", "longest"), [(3, 11), (5, 20), (1, 7)])
def test_fp32_logits_match_pytorch_on_new_shapes(exported, family, rows, longest):
    model = load_classifier(exported[family])
    batch = _padded_batch(model, rows, longest)
    with torch.no_grad():
        reference = model(**batch).logits.numpy()
    logits = OnnxModel(exported[family] / "onnx" / "model.onnx")(batch)
    assert logits.shape == reference.shape
    assert _relative(reference, logits) <= FP32_MAX_REL_DIFF


@pytest.mark.parametrize("family", FAMILIES)
def test_int8_runs_within_the_stated_tolerance(exported, family):
    model = load_classifier(exported[family])
    batch = _padded_batch(model, 6, 16)
    with torch.no_grad():
        reference = model(**batch).logits.numpy()
    logits = OnnxModel(exported[family] / "onnx" / "model.int8.onnx")(batch)
    assert logits.shape == reference.shape
    assert _relative(reference, logits) <= INT8_MAX_REL_DIFF
    # Really quantised: the matrix products run on int8 (tiny models are too small to shrink on disk).
    ops = {node.op_type for node in onnx.load(str(exported[family] / "onnx" / "model.int8.onnx")).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops


def test_optimized_export_fuses_attention_and_matches_pytorch(tmp_path):
    model_dir = save_tiny_pair(tmp_path / "m", "bert", num_labels=3)
    export_onnx(model_dir, int8=True, optimize=True)
    onnx_dir = model_dir / "onnx"
    ops = {
        f: {n.op_type for n in onnx.load(str(onnx_dir / f)).graph.node}
        for f in ("model.onnx", "model.int8.onnx")
    }
    assert {"Attention", "SkipLayerNormalization"} <= ops["model.onnx"] and "QAttention" in ops[
        "model.int8.onnx"
    ]
    assert "optimize_model" in json.loads((onnx_dir / "export.json").read_text())["optimizer"]
    assert "Fused by onnxruntime" in (onnx_dir / "EXPORT.md").read_text()
    model = load_classifier(model_dir)
    batch = _padded_batch(model, 5, 20)  # padding reaches the fused attention through its mask input
    with torch.no_grad():
        reference = model(**batch).logits.numpy()
    assert _relative(reference, OnnxModel(onnx_dir / "model.onnx")(batch)) <= FP32_MAX_REL_DIFF
    assert _relative(reference, OnnxModel(onnx_dir / "model.int8.onnx")(batch)) <= INT8_MAX_REL_DIFF


def test_optimize_refuses_families_the_optimizer_does_not_fuse(tmp_path):
    model_dir = save_tiny_pair(tmp_path / "m", "deberta-v2")
    with pytest.raises(ExportError, match="--optimize supports"):
        export_onnx(model_dir, optimize=True)
    assert not (model_dir / "onnx" / "model.onnx").exists()


def test_existing_export_is_kept_unless_overwrite(exported, tmp_path):
    model_dir = save_tiny_pair(tmp_path / "m", "bert")
    export_onnx(model_dir)
    before = (model_dir / "onnx" / "model.onnx").stat().st_mtime_ns
    with pytest.raises(ExportError, match="--overwrite"):
        export_onnx(model_dir)
    assert (model_dir / "onnx" / "model.onnx").stat().st_mtime_ns == before
    result = export_onnx(model_dir, overwrite=True)
    assert result.int8_path is None and not (model_dir / "onnx" / "model.int8.onnx").exists()


def test_refuses_and_deletes_when_outputs_differ(tmp_path, monkeypatch):
    model_dir = save_tiny_pair(tmp_path / "m", "bert")
    monkeypatch.setattr(
        onnx_export, "compare_logits", lambda ref, out, tie: LogitDiff(0.75, 0.0123, 0.5, len(ref), len(ref))
    )
    with pytest.raises(ExportError, match=r"0\.0123") as err:
        export_onnx(model_dir, int8=True)
    assert "0.75" in str(err.value)
    assert not [p for p in (model_dir / "onnx").iterdir() if p.suffix == ".onnx" or ".tmp" in p.name]


def test_int8_refusal_keeps_no_file(tmp_path, monkeypatch):
    model_dir = save_tiny_pair(tmp_path / "m", "bert")
    real = onnx_export.compare_logits
    calls = []

    def fp32_fine_int8_broken(ref: np.ndarray, out: np.ndarray, tie: float) -> LogitDiff:
        calls.append(1)
        diff = real(ref, out, tie)
        return diff if len(calls) == 1 else LogitDiff(9.0, 4.0, 0.25, diff.rows, diff.rows)

    monkeypatch.setattr(onnx_export, "compare_logits", fp32_fine_int8_broken)
    with pytest.raises(ExportError, match="int8"):
        export_onnx(model_dir, int8=True)
    assert find_exports(model_dir) == {}


def test_causal_model_without_pad_token_is_refused(tmp_path):
    model_dir = save_tiny_pair(tmp_path / "m", "gpt2", pad_token_id=None)
    with pytest.raises(ExportError, match="pad_token_id"):
        export_onnx(model_dir)


def test_compare_logits():
    ref = np.array([[1.0, -2.0], [0.5, 0.25]], dtype=np.float32)
    diff = compare_logits(ref, ref + np.array([[0.0, 0.2], [0.0, 0.5]], dtype=np.float32))
    assert diff.max_abs == pytest.approx(0.5) and diff.max_rel == pytest.approx(0.25)
    assert diff.agreement == 0.5 and diff.rows == 2 and diff.decided == 2
    with pytest.raises(ExportError, match="shape"):
        compare_logits(ref, ref[:1])


def test_int8_agreement_counts_only_decided_rows():
    """A row whose top-1 beats its runner-up by less than the tie margin (a share of the largest logit)
    is a tie at int8 precision; a flip there is not counted, a flip on a clear decision is."""
    ref = np.array([[0.30, 0.29, 0.0], [1.0, 0.2, 0.0], [0.0, 0.9, 0.1]], dtype=np.float32)
    tie_flips = ref + np.array([[0.0, 0.02, 0.0], [0, 0, 0], [0, 0, 0]], dtype=np.float32)
    diff = compare_logits(ref, tie_flips, tie=0.2)  # margins 0.01, 0.8, 0.8 against 0.2 x 1.0
    assert diff.decided == 2 and diff.agreement == 1.0
    assert compare_logits(ref, tie_flips).agreement == pytest.approx(2 / 3)  # fp32: every row counts
    clear_flips = ref + np.array([[0, 0, 0], [0, 0.9, 0], [0, 0, 0]], dtype=np.float32)
    assert compare_logits(ref, clear_flips, tie=0.2).agreement == 0.5
    ties_only = np.array([[0.5, 0.45]], dtype=np.float32)
    diff = compare_logits(ties_only, ties_only[:, ::-1].copy(), tie=0.2)
    assert diff.decided == 0 and diff.agreement == 1.0  # nothing decided: nothing to disagree with


def test_resolve_model_dir(tmp_path):
    save_tiny_pair(tmp_path / "run" / "student", "bert")
    assert resolve_model_dir(tmp_path / "run") == tmp_path / "run" / "student"
    assert resolve_model_dir(tmp_path / "run" / "student") == tmp_path / "run" / "student"
    with pytest.raises(ModelError, match="neither a run directory"):
        resolve_model_dir(tmp_path / "missing")


@pytest.mark.parametrize(
    ("family", "head", "outputs"),
    [
        ("bert", "qa", ["start_logits", "end_logits"]),
        ("gpt2", "lm", ["logits"]),
        ("bert", "mlm", ["logits"]),
        ("bert", "base", ["last_hidden_state"]),
    ],
)
def test_every_head_exports_verified(tmp_path, family, head, outputs):
    """QA, causal-LM, masked-LM and bare-encoder students export and match PyTorch on new shapes."""
    from transformers import AutoModelForQuestionAnswering

    from distil.deploy.runtime import load_exportable
    from factories import tiny_config, tiny_model, tiny_tokenizer

    model_dir = tmp_path / head
    model = (
        AutoModelForQuestionAnswering.from_config(tiny_config(family))
        if head == "qa"
        else tiny_model(family, head)
    )
    model.save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    result = export_onnx(model_dir, int8=True)
    record = json.loads(result.record_path.read_text())
    assert record["head"] == head and record["outputs"] == outputs
    assert f"outputs: {', '.join(outputs)}." in (result.record_path.parent / "EXPORT.md").read_text()
    assert result.fp32.max_rel <= FP32_MAX_REL_DIFF and result.int8 is not None
    model, loaded_head = load_exportable(model_dir)
    assert loaded_head == head
    batch = _padded_batch(model, rows=3, longest=11)
    with torch.no_grad():
        reference = model(**batch, return_dict=True)
    got = OnnxModel(result.fp32_path, outputs=tuple(outputs)).run_all(batch)
    mask = batch["attention_mask"].bool().numpy()
    for name, array in zip(outputs, got, strict=True):
        expected = reference[name].numpy()
        assert array.shape == expected.shape
        np.testing.assert_allclose(array[mask], expected[mask], rtol=0, atol=1e-4 * np.abs(expected).max())


def test_the_card_follows_local_teachers_to_their_hub_base_and_a_pushed_recipe_has_no_local_path(tmp_path):
    """A student of a teacher fine-tuned here from the embedded model: base_model is the embedded model's
    Hub id (with its licence), and the recipe pushed to the Hub names local files by name only."""
    from distil.card import base_model, public_recipe

    teacher = tmp_path / "runs" / "topics-teacher" / "student"
    teacher.mkdir(parents=True)
    started = {"teacher": None, "student": {"init": "pretrained", "path": "embedded"}}
    (teacher / "recipe.json").write_text(json.dumps({"config": {"models": started}}))
    data = {"task": "custom", "train_file": str(tmp_path / "data" / "mine.tsv")}
    recipe = {
        "config": {"models": {"teacher": str(teacher), "student": {"init": "layers"}}, "data": data},
        "built": {"run_dir": str(tmp_path / "runs" / "kd"), "teacher": str(teacher)},
    }
    assert base_model(recipe) == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model({"config": {"models": {"teacher": "bert-base-uncased"}}}) == "bert-base-uncased"
    assert base_model({"config": {"models": {"teacher": str(tmp_path / "nowhere")}}}) is None
    public = public_recipe(recipe)
    assert public["config"]["data"]["train_file"] == "mine.tsv" and str(tmp_path) not in json.dumps(public)
    assert public["config"]["models"]["teacher"] == "student" and public["built"]["run_dir"] == "kd"
    hub = {"config": {"models": {"teacher": "sentence-transformers/all-MiniLM-L6-v2"}}}
    assert public_recipe(hub) == hub  # Hub ids are kept
