"""Timing schedules of `distil.evaluation.speed`: who runs when, and how many calls are timed."""

from collections.abc import Callable

from distil.evaluation.speed import time_blocks, time_interleaved


def _recorders(names: str) -> tuple[list[str], dict[str, Callable[[], object]]]:
    calls: list[str] = []
    return calls, {n: (lambda n=n: calls.append(n)) for n in names}


def test_interleaved_runs_every_callable_within_each_repeat():
    calls, fns = _recorders("ab")
    out = time_interleaved(fns, repeats=2, warmup=1)
    assert "".join(calls) == "ababab"
    assert {n: t.repeats for n, t in out.items()} == {"a": 2, "b": 2}


def test_blocks_rotate_warmup_and_a_share_of_the_repeats():
    calls, fns = _recorders("ab")
    out = time_blocks(fns, repeats=5, warmup=1, rounds=2)
    # Round 1 times 3 calls of each after one warm-up call, round 2 the remaining 2.
    assert "".join(calls) == "aaaa" + "bbbb" + "aaa" + "bbb"
    assert {n: t.repeats for n, t in out.items()} == {"a": 5, "b": 5}
    assert all(0 <= t.min_ms <= t.median_ms <= t.max_ms for t in out.values())


def test_blocks_never_outnumber_the_repeats():
    calls, fns = _recorders("ab")
    out = time_blocks(fns, repeats=1, warmup=0, rounds=3)
    assert "".join(calls) == "ab" and out["a"].repeats == 1
