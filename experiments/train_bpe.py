"""Train a byte-level BPE tokenizer on text files and save it as a Hugging Face tokenizer folder.

A small vocabulary keeps the embedding table of a CPU-scale decoder from dominating its parameters, so
that pruning its layers and widths is what compresses it (issue 24's evidence). Uses the `tokenizers`
library's trainer; the special tokens are ``<pad>``, ``<s>``, ``</s>`` and ``<unk>``.

    .venv/bin/python experiments/train_bpe.py OUT FILE [FILE ...] --vocab 4096
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast


def main() -> None:
    """Train on the files given and save the tokenizer folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("files", nargs="+", type=Path, help="Text files, or folders of them.")
    parser.add_argument("--vocab", type=int, default=4096)
    args = parser.parse_args()
    files = sorted(str(p) for f in args.files for p in ([f] if f.is_file() else f.iterdir()) if p.is_file())
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<pad>", "<s>", "</s>", "<unk>"]
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train(files, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(args.out)
    print(f"{args.out}: {len(fast)} tokens from {len(files)} files")


if __name__ == "__main__":
    main()
