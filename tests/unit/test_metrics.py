"""GLUE metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distil.errors import ConfigError
from distil.metrics import GLUE_METRIC_KEYS, compute_metrics, glue_metrics


def test_cola_mcc_by_hand():
    # TP=2, FN=1, TN=2, FP=1: MCC = (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3.
    refs = [1, 1, 1, 0, 0, 0]
    preds = [1, 1, 0, 0, 0, 1]
    assert glue_metrics("cola", preds, refs) == pytest.approx({"matthews_correlation": 1 / 3})


def test_mrpc_accuracy_and_f1_by_hand():
    # TP=3, FN=1, FP=2, TN=2: precision 3/5, recall 3/4, F1 = 2*TP / (2*TP + FP + FN) = 6/9.
    refs = [1, 1, 1, 0, 0, 0, 1, 0]
    preds = [1, 0, 1, 1, 0, 0, 1, 1]
    out = glue_metrics("mrpc", preds, refs)
    assert out == pytest.approx({"accuracy": 5 / 8, "f1": 2 / 3})
    assert glue_metrics("qqp", preds, refs) == pytest.approx(out)


def test_stsb_pearson_and_spearman_by_hand():
    # Pearson: sum(dx*dy)=6, sum(dx^2)=10, sum(dy^2)=6 -> 6/sqrt(60).
    # Spearman: y ranks [1, 2.5, 4.5, 2.5, 4.5] -> 7/sqrt(90).
    preds = [1.0, 2.0, 3.0, 4.0, 5.0]
    refs = [2.0, 4.0, 5.0, 4.0, 5.0]
    out = glue_metrics("stsb", preds, refs)
    assert set(out) == {"pearson", "spearmanr"}
    assert out["pearson"] == pytest.approx(6 / math.sqrt(60))
    assert out["spearmanr"] == pytest.approx(7 / math.sqrt(90))


@pytest.mark.parametrize(
    "task", ["sst2", "qnli", "rte", "wnli", "mnli", "mnli_matched", "mnli_mismatched", "mnli-mm", "SST-2"]
)
def test_accuracy_tasks(task):
    assert glue_metrics(task, [0, 1, 2, 1], [0, 1, 1, 1]) == {"accuracy": 0.75}


def test_every_task_returns_its_keys():
    for task, keys in GLUE_METRIC_KEYS.items():
        stsb = task == "stsb"
        preds, refs = ([0.5, 1.0, 3.0, 2.0], [0.0, 1.0, 2.0, 3.0]) if stsb else ([0, 1, 1, 0], [0, 1, 0, 0])
        assert tuple(glue_metrics(task, preds, refs)) == keys


def test_inputs_as_arrays_tensors_and_scores():
    scores = torch.tensor([[2.0, -1.0], [0.1, 0.9], [0.3, 0.7]])  # arg-max: 0, 1, 1
    assert glue_metrics("sst2", scores, np.array([0, 1, 0])) == pytest.approx({"accuracy": 2 / 3})
    column = torch.tensor([[1.0], [2.0], [3.0]])
    assert glue_metrics("stsb", column, [1.0, 2.0, 3.0])["pearson"] == pytest.approx(1.0)


def test_degenerate_inputs():
    assert glue_metrics("stsb", [1.0, 1.0, 1.0], [0.0, 1.0, 2.0]) == {"pearson": 0.0, "spearmanr": 0.0}
    assert glue_metrics("cola", [1, 1, 1], [0, 1, 1]) == {"matthews_correlation": 0.0}
    assert glue_metrics("mrpc", [0, 0], [0, 0])["f1"] == 0.0


def test_unknown_task_has_hint():
    with pytest.raises(ConfigError, match=r"Did you mean 'mrpc'\?") as err:
        glue_metrics("mrcp", [1], [1])
    assert "cola" in str(err.value)


def test_bad_inputs():
    with pytest.raises(ValueError, match="as many predictions"):
        glue_metrics("sst2", [1, 0], [1])
    with pytest.raises(ValueError):
        glue_metrics("sst2", [], [])
    with pytest.raises(ConfigError, match="Did you mean 'accuracy'"):
        compute_metrics(["acuracy"], [1], [1])
