"""``distil init-model``: a randomly initialised causal LM of a decoder family, with a tokenizer.

A model to train from scratch: a teacher when no pretrained one is at hand (offline, or for a small
experiment), or a student of a chosen shape. Sizes are set through the family's own config keys
(`distil.models.families.Family`); the tokenizer is copied from ``--tokenizer`` and the special tokens the
model needs (beginning, end, padding) are set on both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from distil.errors import ConfigError
from distil.models.families import FAMILIES
from distil.models.loading import load_tokenizer

__all__ = ["add_init_model_options", "init_model_command"]


def _decoders() -> list[str]:
    return sorted(name for name, f in FAMILIES.items() if f.causal)


def add_init_model_options(p: argparse.ArgumentParser) -> None:
    """The options of ``distil init-model``."""
    p.add_argument("out", help="The folder to write (config, weights, tokenizer).")
    p.add_argument("--family", default="llama", help=f"The decoder family: {', '.join(_decoders())}.")
    p.add_argument("--layers", type=int, default=4, help="Transformer blocks.")
    p.add_argument("--hidden-size", type=int, default=256, help="Hidden width.")
    p.add_argument("--heads", type=int, default=4, help="Attention (query) heads.")
    p.add_argument(
        "--kv-heads", type=int, help="Key/value heads (grouped-query attention; default: --heads)."
    )
    p.add_argument("--intermediate-size", type=int, help="FFN width (default: 4 x hidden, 8/3 x for SwiGLU).")
    p.add_argument("--max-positions", type=int, default=1024, help="Longest input (position table or RoPE).")
    p.add_argument("--tokenizer", default="embedded", help="Where the tokenizer comes from (folder, Hub id).")
    p.add_argument("--seed", type=int, default=0, help="Seed of the random weights.")


def init_model_command(args: argparse.Namespace) -> int:
    """Write the folder; refuses an existing one."""
    if args.family not in FAMILIES or not FAMILIES[args.family].causal:
        raise ConfigError(
            f"--family {args.family!r} is not a decoder family distil knows: {', '.join(_decoders())}."
        )
    out = Path(args.out).expanduser()
    if out.exists():
        raise ConfigError(f"{out} exists; choose another folder (nothing was written).")
    if args.hidden_size % args.heads or (args.kv_heads and args.heads % args.kv_heads):
        raise ConfigError("--hidden-size must divide by --heads, and --heads by --kv-heads.")
    family = FAMILIES[args.family]
    tokenizer = load_tokenizer(args.tokenizer)
    # A WordPiece tokenizer (the embedded one) has [CLS]/[SEP] but no BOS/EOS: a decoder needs both.
    if tokenizer.bos_token is None and tokenizer.cls_token is not None:
        tokenizer.bos_token = tokenizer.cls_token
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    hidden_key, heads_key, ffn_key = family.width_keys
    swiglu = args.family != "gpt2"
    ffn = args.intermediate_size or (
        int(8 * args.hidden_size / 3) // 8 * 8 if swiglu else 4 * args.hidden_size
    )
    sizes = {
        hidden_key: args.hidden_size, heads_key: args.heads, ffn_key: ffn, family.num_layers_key: args.layers,
        family.position_key: args.max_positions,
    }  # fmt: skip
    config = AutoConfig.for_model(
        args.family, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sizes,
    )  # fmt: skip
    if hasattr(config, "num_key_value_heads"):
        config.num_key_value_heads = args.kv_heads or args.heads
    if hasattr(config, "head_dim"):
        config.head_dim = args.hidden_size // args.heads
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"[distil] wrote {out}: {args.family}, {args.layers} x {args.hidden_size}, {params:.1f}M parameters"
    )
    return 0
