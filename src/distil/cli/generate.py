"""``distil generate``: a model's completions of a prompt file, for sequence-level distillation.

Prompts are read like chat data (`distil.tasks.chat.reader`): a row's prompt is its conversation up to its
last assistant turn (that turn, if any, is dropped), or its ``prompt``. Each is rendered with the chat
template and the generation prompt, completed (`distil.models.generation.complete`, one seeded stream per
row), and written as a prompt-completion row that ``data.task=chat`` reads back, so any method can then
train on the teacher's outputs.

Work is kept in parts of ``--chunk`` rows under ``OUT.parts/`` (each written atomically): a killed
command continues where it stopped, and processes under a launcher take every ``world``-th part. Process
0 joins the parts into ``OUT`` (atomically) and writes the settings beside it (``OUT.settings.json``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from distil.errors import ConfigError
from distil.files import atomic_write_text
from distil.models.generation import Sampling, complete, row_seed
from distil.models.loading import load_model, load_tokenizer, resolve_model_path
from distil.progress import Phase
from distil.tasks.chat.reader import Message, conversations, read_rows
from distil.tasks.chat.render import resolve_template

__all__ = ["add_generate_options", "generate_command", "prompt_of"]


def add_generate_options(p: argparse.ArgumentParser) -> None:
    """The options of ``distil generate``."""
    p.add_argument("model", help="The model that completes the prompts (a folder, a Hub id or 'embedded').")
    p.add_argument("--prompts", required=True, help="Conversations or prompts: .jsonl/.json/.parquet, a "
                   "save_to_disk folder or a Hub dataset id.")  # fmt: skip
    p.add_argument("--out", required=True, help="The JSON Lines file to write (prompt-completion rows).")
    p.add_argument("--split", default="train", help="The split of a dataset id or DatasetDict folder.")
    p.add_argument(
        "--chat-template", help="A built-in template name or a .jinja file (default: the model's)."
    )
    p.add_argument("--max-new-tokens", type=int, default=128, help="Longest completion.")
    p.add_argument("--temperature", type=float, default=0.0, help="Sampling temperature (0: greedy).")
    p.add_argument("--top-p", type=float, default=1.0, help="Nucleus sampling (1: the whole distribution).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the per-row sampling streams.")
    p.add_argument("--batch-size", type=int, default=16, help="Prompts per generate call.")
    p.add_argument("--chunk", type=int, default=256, help="Rows per part file (the unit of resuming).")
    p.add_argument(
        "--max-length", type=int, default=1024, help="Prompts longer than this are cut from the left."
    )
    p.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="Load the weights in this dtype."
    )
    p.add_argument("--overwrite", action="store_true", help="Replace OUT if it exists.")


def prompt_of(conversation: list[Message]) -> list[Message]:
    """The conversation before its last assistant turn."""
    last = max(i for i, m in enumerate(conversation) if m["role"] == "assistant")
    return conversation[:last]


def _prompt_messages(rows: list[dict[str, Any]], source: str) -> list[list[Message]]:
    # A prompt-only row gets an empty assistant turn so that the chat reader's checks apply to it alike.
    filled = [r if "messages" in r or "completion" in r else {**r, "completion": " "} for r in rows]
    return [prompt_of(c) for c in conversations(filled, source)]


def generate_command(args: argparse.Namespace) -> int:
    """Complete every prompt; see the module docstring."""
    from distil.training.dist import init_distributed

    sampling = Sampling(args.temperature, args.top_p, args.max_new_tokens)
    if args.batch_size < 1 or args.chunk < 1:
        raise ConfigError("--batch-size and --chunk must be >= 1.")
    out = Path(args.out).expanduser()
    if out.suffix != ".jsonl":
        raise ConfigError(f"--out {str(out)!r}: completions are written as JSON Lines; name a .jsonl file.")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it (or choose another --out).")
    prompts = _prompt_messages(read_rows(args.prompts, args.split, "--prompts"), args.prompts)
    tokenizer = load_tokenizer(args.model)
    template = resolve_template(tokenizer, args.chat_template, args.model)
    settings = {
        "model": str(resolve_model_path(args.model)), "prompts": args.prompts, "rows": len(prompts),
        "chat_template": template, "temperature": sampling.temperature, "top_p": sampling.top_p,
        "max_new_tokens": sampling.max_new_tokens, "seed": args.seed, "max_length": args.max_length,
    }  # fmt: skip
    parts = out.with_name(out.name + ".parts")
    recorded = parts / "settings.json"
    stale = recorded.is_file() and json.loads(recorded.read_text()) != settings
    if stale and not args.overwrite:
        raise ConfigError(
            f"{parts} holds a stopped run with other settings; pass --overwrite to start again."
        )
    env = init_distributed()
    if env.is_main:
        if stale:  # --overwrite: the parts of other settings go
            shutil.rmtree(parts)
        parts.mkdir(parents=True, exist_ok=True)
        atomic_write_text(recorded, json.dumps(settings, indent=1))
    env.barrier()
    model = load_model(args.model, head="lm", dtype=args.dtype)
    torch.nn.Module.to(model, env.device)  # in place; transformers' wrapper of .to is typed for dtypes
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    chunks = list(range(0, len(prompts), args.chunk))
    todo = [c for c in chunks[env.rank :: env.world] if not (parts / f"{c:09d}.jsonl").is_file()]
    phase = Phase(f"completing {len(prompts)} prompts", len(todo), enabled=env.is_main)
    for start in todo:
        rows: list[str] = []
        for b in range(start, min(start + args.chunk, len(prompts)), args.batch_size):
            batch = prompts[b : min(b + args.batch_size, start + args.chunk, len(prompts))]
            texts = [
                tokenizer.apply_chat_template(
                    p, chat_template=template, tokenize=False, add_generation_prompt=True
                )
                for p in batch
            ]
            ids = [tokenizer(t, add_special_tokens=False)["input_ids"][-args.max_length :] for t in texts]
            seeds = [row_seed(args.seed, b + i) for i in range(len(batch))]
            done = complete(model, ids, seeds, sampling, int(pad if pad is not None else 0))
            for p, c in zip(batch, done, strict=True):
                text = str(tokenizer.decode(c, skip_special_tokens=True)).strip()
                rows.append(json.dumps({"prompt": p, "completion": [{"role": "assistant", "content": text}]}))
        atomic_write_text(parts / f"{start:09d}.jsonl", "".join(r + "\n" for r in rows))
        phase.update()
    phase.close()
    env.barrier()
    if env.is_main:
        text = "".join((parts / f"{c:09d}.jsonl").read_text(encoding="utf-8") for c in chunks)
        atomic_write_text(out, text)
        atomic_write_text(out.with_name(out.stem + ".settings.json"), json.dumps(settings, indent=1))
        shutil.rmtree(parts)
        print(f"[distil] wrote {len(prompts)} completions to {out}")
    return 0
