"""A small GPT-2-style classifier (random weights, the embedded teacher's WordPiece tokenizer) to fine-tune.

No decoder weights are reachable offline, so TED's last-token filter heads are checked on a decoder trained
here from scratch on the task: this writes its starting folder, which `distil finetune` then trains
(`experiments/ted_filters.sh`).

    .venv/bin/python experiments/decoder_classifier.py OUT_DIR [--layers 4] [--width 256] [--labels 2]
"""

from __future__ import annotations

import argparse

import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from distil.models.loading import load_tokenizer, resolve_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--labels", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(resolve_model_path("embedded"))
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=256, n_embd=args.width, n_layer=args.layers,
        n_head=args.width // 64, num_labels=args.labels, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )  # fmt: skip
    GPT2ForSequenceClassification(config).save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"wrote {args.out}: {args.layers} x {args.width} GPT-2 classifier, vocabulary {len(tokenizer)}")


if __name__ == "__main__":
    main()
