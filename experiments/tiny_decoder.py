"""A small GPT-2-style classifier or language model to train from scratch.

Random weights and the embedded teacher's WordPiece tokenizer.

No decoder weights are reachable offline, so TED's filter heads are checked on decoders trained here: this
writes a starting folder, which `distil finetune` then trains (`experiments/ted_filters.sh`: a classifier
for the last-token heads; `experiments/ted_filters_qa_lm.sh`: a language model for the token heads).

    .venv/bin/python experiments/tiny_decoder.py OUT_DIR [--head seq|lm] [--layers 4] [--width 256] \
        [--labels 2] [--positions 256]
"""

from __future__ import annotations

import argparse

import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from distil.models.loading import load_tokenizer, resolve_model_path


def main() -> None:
    """Write the folder: config, random weights, tokenizer."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--head", choices=("seq", "lm"), default="seq")
    parser.add_argument("--positions", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--labels", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(resolve_model_path("embedded"))
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=args.positions, n_embd=args.width, n_layer=args.layers,
        n_head=args.width // 64, num_labels=args.labels, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )  # fmt: skip
    model = GPT2LMHeadModel(config) if args.head == "lm" else GPT2ForSequenceClassification(config)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    what = "language model" if args.head == "lm" else "classifier"
    print(f"wrote {args.out}: {args.layers} x {args.width} GPT-2 {what}, vocabulary {len(tokenizer)}")


if __name__ == "__main__":
    main()
