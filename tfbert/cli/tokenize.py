"""`tfbert tokenize`: stdin lines -> one JSON object of ids and tokens per line.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> register(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["tokenize", "--vocab", "vocab.txt", "--cased"])
>>> args.model, args.vocab, args.cased
(None, 'vocab.txt', True)
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    """Add `tokenize` to the `tfbert` subparsers."""
    p = subparsers.add_parser("tokenize", help="stdin lines -> JSON token ids",
                              description="Tokenize each line of stdin; print one JSON object "
                              "per line with ids and tokens.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="model directory (vocab and casing from it)")
    source.add_argument("--vocab", help="vocab.txt")
    p.add_argument("--cased", action="store_true", help="with --vocab: keep case and accents")
    p.set_defaults(run=run_tokenize)


def run_tokenize(args: argparse.Namespace) -> int:
    """Tokenize stdin to stdout; returns 0."""
    from tfbert.text import BertTokenizer, load_tokenizer

    tokenizer = (load_tokenizer(args.model) if args.model
                 else BertTokenizer(args.vocab, lowercase=not args.cased))
    lines = [line.rstrip("\n") for line in sys.stdin]
    if not lines:
        return 0
    ids = tokenizer.tokenize(lines)
    tokens = tokenizer.ids_to_tokens(ids)
    for row_ids, row_tokens in zip(ids.to_list(), tokens.to_list(), strict=True):
        print(json.dumps({"ids": row_ids, "tokens": [t.decode() for t in row_tokens]},
                         ensure_ascii=False))
    return 0
