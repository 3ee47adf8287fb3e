"""Write the bundled tiny chat set (tests/assets/data/chat).

Arithmetic, comparisons and spelling, in single- and two-turn conversations, in both row formats distil
reads (``messages`` and ``prompt``/``completion``). Deterministic: the same seed writes the same files.

    .venv/bin/python scripts/make_chat_set.py [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "assets" / "data" / "chat"
WORDS = [
    "cat", "dog", "tree", "house", "river", "stone", "light", "music", "water", "paper", "green", "table",
    "night", "apple", "bread", "cloud", "horse", "train", "sound", "field",
]  # fmt: skip
SYSTEM = "You are a helpful assistant. Answer in one short sentence."


def turn(rng: random.Random) -> tuple[str, str]:
    """One question and its answer."""
    kind = rng.choice(["add", "sub", "larger", "spell", "count"])
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    if kind == "add":
        return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    if kind == "sub":
        a, b = max(a, b), min(a, b)
        return f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}."
    if kind == "larger":
        while a == b:
            b = rng.randint(0, 20)
        return f"Which is larger, {a} or {b}?", f"{max(a, b)} is larger than {min(a, b)}."
    word = rng.choice(WORDS)
    if kind == "spell":
        return f"Spell the word {word}.", f"{word} is spelled {' '.join(word)}."
    return f"How many letters are in the word {word}?", f"The word {word} has {len(word)} letters."


def conversation(rng: random.Random) -> dict[str, object]:
    """A row: a prompt-completion pair, or messages with an optional system turn and a second turn."""
    q, a = turn(rng)
    if rng.random() < 0.3:
        return {"prompt": q, "completion": a}
    messages = [{"role": "system", "content": SYSTEM}] if rng.random() < 0.5 else []
    messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    if rng.random() < 0.4:
        q2, a2 = turn(rng)
        messages += [{"role": "user", "content": f"And now: {q2}"}, {"role": "assistant", "content": a2}]
    return {"messages": messages}


def main() -> None:
    """Write chat.jsonl (training) and chat-test.jsonl."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in (("chat.jsonl", 400), ("chat-test.jsonl", 60)):
        lines = [json.dumps(conversation(rng)) for _ in range(rows)]
        (OUT / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {OUT / name}: {rows} conversations")


if __name__ == "__main__":
    main()
