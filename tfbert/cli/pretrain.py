"""`tfbert vocab` and `tfbert pretrain`.

    tfbert vocab --input corpus.txt --vocab-size 8000 --output vocab.txt
    tfbert pretrain --corpus corpus.txt --vocab vocab.txt --config mini --output out/
    tfbert pretrain --corpus domain.txt --init path/to/bert --output out/domain

(`python -m tfbert pretrain ...` runs the same, e.g. in a subprocess a test
can kill.) Bad input raises `tfbert.errors` errors that name the file, line
or field; `tfbert.cli.main` prints them as one line.

Example:

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_vocab_arguments(parser)
>>> parser.parse_args(["--input", "a.txt", "--vocab-size", "100", "--output", "v.txt"]).cased
False
"""

from __future__ import annotations

import argparse
import os

from tfbert.cli.training_flags import (
    add_training_arguments,
    check_training_arguments,
    positive_int,
)
from tfbert.config import PRESETS
from tfbert.errors import ConfigError

# Nothing heavy is imported at module level: `tfbert --help` builds these parsers.


def register(subparsers) -> None:
    """Add `vocab` and `pretrain` to the `tfbert` subparsers."""
    v = subparsers.add_parser("vocab", help="learn a WordPiece vocabulary from text files",
                              description="Learn vocab.txt with [PAD] [UNK] [CLS] [SEP] [MASK] "
                              "at fixed ids, normalised as the tokenizer does.")
    add_vocab_arguments(v)
    v.set_defaults(run=run_vocab_command)
    p = subparsers.add_parser("pretrain", help="pretrain BERT (masked LM + next sentence)",
                              description="Pretrain from a corpus in BERT's format (one "
                              "sentence per line, blank line between documents): a new model "
                              "(--config, --vocab) or, with --init, continue pretraining a "
                              "tfbert, Hugging Face or Google BERT model (its config, vocabulary "
                              "and weights). Crash-safe with --resume.")
    add_pretrain_arguments(p)
    p.set_defaults(run=run_pretrain_command)


def add_vocab_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tfbert vocab`."""
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE",
                        help="text files or glob patterns to learn from")
    parser.add_argument("--vocab-size", type=positive_int, required=True, metavar="N",
                        help="target vocabulary size, special tokens included")
    parser.add_argument("--output", required=True, metavar="vocab.txt",
                        help="the vocabulary file to write")
    parser.add_argument("--cased", action="store_true",
                        help="keep case and accents (default: lowercase, strip accents)")
    parser.add_argument("--reserved-unused", type=_non_negative_int, default=0, metavar="N",
                        help="[unusedN] slots after [PAD] (99 gives Google BERT's ids: "
                             "[UNK]=100 [CLS]=101 [SEP]=102 [MASK]=103); default 0")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_vocab_command(args: argparse.Namespace) -> int:
    """Learn a vocabulary and write it; returns 0."""
    from tfbert.text import write_vocab
    from tfbert.text.vocab_learning import learn_vocab

    vocab = learn_vocab(args.input, args.vocab_size, lowercase=not args.cased,
                        reserved_unused=args.reserved_unused, progress=not args.quiet)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_vocab(vocab, args.output)
    print(f"wrote {len(vocab)} tokens to {args.output}")
    return 0


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `tfbert pretrain`."""
    parser.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                        help="corpus files or globs (one sentence per line, blank line "
                             "between documents), or a directory made with --prepare")
    parser.add_argument("--vocab", default=None, metavar="vocab.txt",
                        help="WordPiece vocabulary (see `tfbert vocab`); with --init "
                             "optional: the model's own (a different one is refused)")
    parser.add_argument("--config", default=None, metavar="PRESET|JSON",
                        help=f"a new model's size: a preset ({', '.join(PRESETS)}) or a config "
                             "JSON; give --config or --init")
    parser.add_argument("--init", default=None, metavar="DIR",
                        help="continue pretraining this tfbert, Hugging Face or Google BERT "
                             "model directory: its config, vocabulary, casing, encoder and any "
                             "MLM/NSP head weights (missing heads start from scratch); e.g. "
                             "phase 2 of BERT's recipe: --init PHASE1_DIR --seq-len 512")
    parser.add_argument("--output", required=True, metavar="DIR", help="model directory")
    parser.add_argument("--steps", type=positive_int, default=1000, metavar="N",
                        help="optimizer steps (default 1000)")
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="B",
                        help="global batch size, split over devices (default 32)")
    parser.add_argument("--seq-len", type=positive_int, default=128, metavar="L",
                        help="sequence length (default 128)")
    parser.add_argument("--learning-rate", type=float, default=1e-4, metavar="X",
                        help="peak learning rate (default 1e-4)")
    parser.add_argument("--warmup", type=float, default=0.1, metavar="W",
                        help="warmup: fraction of steps if < 1, else steps (default 0.1)")
    parser.add_argument("--mask-rate", type=float, default=0.15, metavar="R",
                        help="fraction of tokens to predict (default 0.15)")
    parser.add_argument("--max-predictions-per-seq", type=positive_int, default=20,
                        metavar="P", help="most masked tokens per sequence (default 20)")
    parser.add_argument("--whole-word-masking", action="store_true",
                        help="mask every piece of a chosen word")
    parser.add_argument("--optimizer", choices=("adamw", "lamb"), default=None,
                        help="default: the optimizer --init was pretrained with, else adamw")
    parser.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                        help="steps between checkpoints (default min(steps per epoch, 1000))")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in --output")
    parser.add_argument("--strategy", choices=("mirrored", "multiworker", "tpu"), default=None,
                        help="distribute over local devices, workers (TF_CONFIG) or a TPU")
    add_training_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--steps-per-epoch", type=positive_int, default=None, metavar="N",
                        help="steps between history records (default: one pass over the data)")
    parser.add_argument("--dupe-factor", type=positive_int, default=1, metavar="N",
                        help="times each document is turned into pairs (default 1)")
    parser.add_argument("--short-seq-prob", type=float, default=0.1, metavar="P",
                        help="probability of a shorter pair (default 0.1)")
    parser.add_argument("--prepare", default=None, metavar="DIR",
                        help="first stream the corpus into sharded TFRecords in DIR (for "
                             "corpora larger than memory; reused if already prepared the "
                             "same way), then train from them")
    parser.add_argument("--prepare-only", action="store_true",
                        help="with --prepare: stop after preparing")
    parser.add_argument("--shards", type=positive_int, default=16, metavar="N",
                        help="TFRecord files written by --prepare (default 16)")
    casing = parser.add_mutually_exclusive_group()
    casing.add_argument("--cased", dest="lowercase", action="store_false", default=None,
                        help="treat the vocabulary as cased (default: inferred from it)")
    casing.add_argument("--uncased", dest="lowercase", action="store_true", default=None,
                        help="treat the vocabulary as uncased")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_pretrain_command(args: argparse.Namespace) -> int:
    """Pretrain from parsed arguments; returns 0."""
    if not 0.0 <= args.short_seq_prob <= 1.0:
        raise ConfigError(f"--short-seq-prob must be in [0, 1], got {args.short_seq_prob}")
    if args.prepare_only and not args.prepare:
        raise ConfigError("--prepare-only needs --prepare DIR")
    check_training_arguments(args)
    if args.config is not None and args.init is not None:
        raise ConfigError(f"--config and --init exclude each other: {args.init} brings its own "
                          "config")
    if args.config is None and args.init is None:
        raise ConfigError("give --config PRESET|JSON (a new model) or --init DIR (continue "
                          "pretraining a model)")
    if args.vocab is None and args.init is None:
        raise ConfigError("--config needs --vocab vocab.txt (see `tfbert vocab`)")
    from tfbert.data.pretraining import PairOptions
    from tfbert.training.pretrain import run_pretraining

    options = PairOptions(seq_len=args.seq_len, seed=args.seed,
                          short_seq_prob=args.short_seq_prob, dupe_factor=args.dupe_factor)
    corpus = args.corpus
    if args.prepare:
        corpus = [_prepare(args, options, progress=not args.quiet)]
        if args.prepare_only:
            return 0
    run_pretraining(
        corpus, args.vocab, args.config, args.output, init=args.init, steps=args.steps,
        batch_size=args.batch_size, seq_len=args.seq_len, learning_rate=args.learning_rate,
        warmup=args.warmup if args.warmup < 1 else int(args.warmup),
        mask_rate=args.mask_rate, max_predictions_per_seq=args.max_predictions_per_seq,
        whole_word_masking=args.whole_word_masking, optimizer=args.optimizer,
        checkpoint_every=args.checkpoint_every, resume=args.resume, strategy=args.strategy,
        precision=args.precision, compile=args.compile, seed=args.seed, lowercase=args.lowercase,
        steps_per_epoch=args.steps_per_epoch, pair_options=options,
        verbose=0 if args.quiet else "auto", accumulation_steps=args.accumulation_steps,
        tensorboard=args.tensorboard)
    if not args.quiet:
        print(f"saved the pretrained model to {args.output}")
    return 0


def _prepare(args: argparse.Namespace, options, progress: bool) -> str:
    """Prepare TFRecords in `args.prepare` unless it already holds the same preparation."""
    from tfbert.data.pretraining import (
        is_prepared_dir,
        open_prepared,
        prepare_pretraining_data,
        tokenizer_fingerprint,
    )
    from tfbert.text.corpus import expand_corpus_files
    from tfbert.training.pretrain import pretraining_tokenizer

    tokenizer = pretraining_tokenizer(args.vocab, args.init, args.lowercase)
    files = [os.path.abspath(f) for f in expand_corpus_files(args.corpus)]
    if is_prepared_dir(args.prepare):
        meta = open_prepared(args.prepare).metadata
        wanted = {"corpus": files, "seq_len": options.seq_len, "seed": options.seed,
                  "short_seq_prob": options.short_seq_prob, "dupe_factor": options.dupe_factor,
                  **tokenizer_fingerprint(tokenizer)}
        if all(meta.get(k) == v for k, v in wanted.items()):
            if progress:
                print(f"using the pairs already prepared in {args.prepare}")
            return args.prepare
    prepare_pretraining_data(files, tokenizer, args.prepare, seq_len=options.seq_len,
                             shards=args.shards, seed=options.seed,
                             short_seq_prob=options.short_seq_prob,
                             dupe_factor=options.dupe_factor, progress=progress)
    return args.prepare


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
