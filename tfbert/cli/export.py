"""`tfbert export` and `tfbert check`.

`check` returns exit status 1 when the SavedModel would fail in TF Serving:
that is the command's verdict, not an error.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> register(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["export", "--model", "runs/clf", "--name", "clf", "--no-xla"])
>>> args.base, args.version, args.xla, args.warmup, args.precision, args.compile
('savedmodels', None, False, 'full', 'fp32', None)
"""

from __future__ import annotations

import argparse

from tfbert.cli.training_flags import add_precision_arguments

# tfbert.export.warmup.WARMUP_MODES; spelled here so `tfbert --help` imports no TensorFlow.
WARMUP_MODES = ("none", "minimal", "full")


def register(subparsers) -> None:
    """Add `export` and `check` to the `tfbert` subparsers."""
    p = subparsers.add_parser("export", help="SavedModel with tokenization inside, for TF Serving",
                              description="Write BASE/NAME/<version>/ atomically and check that "
                              "TF Serving can load and run it; a failed check leaves nothing "
                              "behind.")
    p.add_argument("--model", required=True, help="model directory (any of the four kinds)")
    p.add_argument("--name", required=True, help="served model name")
    p.add_argument("--base", default="savedmodels", help="model base root (savedmodels)")
    p.add_argument("--version", type=int, help="version number (default: next free)")
    p.add_argument("--max-seq-length", type=int, help="token cap (default: the model's)")
    p.add_argument("--no-xla", dest="xla", action="store_false",
                   help="no XLA functions, for servers without --xla_*_compilation_enabled")
    add_precision_arguments(p, "serve")
    p.add_argument("--warmup", choices=WARMUP_MODES, default="full",
                   help="requests written to assets.extra/tf_serving_warmup_requests, which TF "
                   "Serving and `tfbert serve` replay before serving the version, so that no "
                   "user request waits for an XLA compilation: full = every padded width (16, "
                   "32, ... up to the max length) times the batch sizes a batching server pads "
                   "to (docker/batching_parameters.txt); minimal = every width at batch size 1 "
                   "(for unbatched servers: a fifth of the records); none = no file "
                   "(default full)")
    p.set_defaults(run=run_export)

    c = subparsers.add_parser("check", help="would TF Serving load and run this SavedModel?",
                              description="Op inventory (core TF + tf_text ops_lib, no Python "
                              "ops), a TF1-loader run of every signature in a clean process, "
                              "and the replay there of assets.extra/tf_serving_warmup_requests "
                              "(at most 1000 PredictionLog records, each must run). Prints the "
                              "TF Serving flags the model needs; exit 1 on any problem.")
    c.add_argument("saved_model_dir", help="a version directory, e.g. savedmodels/clf/1")
    c.set_defaults(run=run_check)


def run_export(args: argparse.Namespace) -> int:
    """Export `--model` to BASE/NAME/<version>; returns 0."""
    from tfbert.export import export_model

    path, report = export_model(args.model, args.name, base=args.base, version=args.version,
                                xla=args.xla, max_seq_length=args.max_seq_length,
                                precision=args.precision, compile=args.compile,
                                warmup=args.warmup)
    print(report.summary())
    print(f"tfbert export: wrote {path}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Print the check report; returns 0 if TF Serving can use the model, else 1."""
    from tfbert.export import check_saved_model

    report = check_saved_model(args.saved_model_dir)
    print(report.summary())
    return 0 if report.ok else 1
