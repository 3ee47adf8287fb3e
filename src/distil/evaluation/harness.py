"""EleutherAI's lm-evaluation-harness on a saved causal LM (``distil eval --lm-eval``), when installed.

The harness is optional: distil never requires it. Its tasks download their data from the Hugging Face
Hub (or read the datasets cache), so offline only tasks already cached run.
"""

from __future__ import annotations

from typing import Any

from distil.errors import ConfigError, DataError

__all__ = ["harness_metrics"]


def harness_metrics(model_dir: str, tasks: list[str], batch_size: int, limit: int | None) -> dict[str, float]:
    """The numeric metrics of ``tasks`` on the model in ``model_dir``, keyed ``<task>/<metric>``.

    Raises:
        ConfigError: lm-evaluation-harness is not installed.
        DataError: The harness failed (an unknown task, or its data unreachable offline).
    """
    try:
        import lm_eval
    except ImportError:
        raise ConfigError(
            "--lm-eval runs EleutherAI's lm-evaluation-harness, which is not installed: pip install lm-eval "
            "(its tasks read their data from the Hub or the datasets cache)."
        ) from None
    try:
        results: dict[str, Any] = lm_eval.simple_evaluate(
            model="hf", model_args=f"pretrained={model_dir}", tasks=tasks, batch_size=batch_size, limit=limit
        )
    except Exception as err:  # the harness raises many kinds; the message says which
        raise DataError(f"lm-evaluation-harness failed on {tasks}: {type(err).__name__}: {err}") from None
    out: dict[str, float] = {}
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"{task}/{key}"] = float(value)
    return out
