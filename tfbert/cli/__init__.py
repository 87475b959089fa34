"""The `tfbert` command: one module per command group, one error policy.

Each module (`demo`, `pretrain`, `finetune`, `export`, `serve`, `tokenize`)
adds its subcommands with `register(subparsers)`; every subcommand's `run`
function imports TensorFlow only when it runs, so `tfbert --help` answers at
once. The run functions return the exit status (0, or 1 for a failed
`tfbert check`) and raise on errors; `main` alone decides how an error ends
the command:

- a user error -- a `tfbert.errors.TfbertError` (bad flag, file, config,
  checkpoint, export or request), or an `OSError` (a missing or unreadable
  file, which the message names) -- prints one line
  `tfbert COMMAND: error: MESSAGE` on stderr and exits 2, as argparse does
  for a bad command line;
- Ctrl-C prints `tfbert COMMAND: interrupted` and exits 130;
- any other exception is a bug: it propagates, and Python prints its
  traceback and exits 1.

Example:

>>> args = build_parser().parse_args(["check", "savedmodels/clf/1"])
>>> args.command, args.saved_model_dir
('check', 'savedmodels/clf/1')
>>> error_message(FileNotFoundError(2, "No such file or directory", "train.csv"))
'train.csv: No such file or directory'
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tfbert.errors import TfbertError

DESCRIPTION = """\
BERT in TensorFlow/Keras: pretrain, fine-tune, export SavedModels with WordPiece
inside the graph, serve them over TF Serving's gRPC API.

typical flow:
  tfbert finetune --task classify --train train.csv --init MODEL_DIR --output runs/clf
  tfbert export --model runs/clf --name clf            # -> savedmodels/clf/1
  tfbert serve --model_name clf --model_base_path savedmodels/clf
  tfbert query --server 127.0.0.1:8500 --model clf "some text"

MODEL_DIR is any of: a tfbert directory, a Hugging Face BERT directory
(config.json + model.safetensors + vocab.txt) or a Google BERT directory
(bert_config.json + bert_model.ckpt.* + vocab.txt)."""

# Exceptions that are the user's to fix: printed as one line, exit status 2.
USER_ERRORS = (TfbertError, OSError)
USER_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130


def _version() -> str:
    from tfbert import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    """The `tfbert` parser with every subcommand; imports no TensorFlow."""
    from tfbert.cli import demo, export, finetune, pretrain, serve, tokenize

    parser = argparse.ArgumentParser(prog="tfbert", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tfbert {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in (demo, pretrain, finetune, export, serve, tokenize):
        group.register(sub)
    return parser


def error_message(error: BaseException) -> str:
    """`error` as one line; an `OSError` as `FILE: reason`."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        where = str(error.filename)
        if error.filename2 is not None:
            where += f" -> {error.filename2}"
        message = f"{where}: {error.strerror}"
    else:
        message = str(error)
    return " ".join(message.split()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run `tfbert ARGV...`; returns the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return USER_ERROR_STATUS
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"tfbert {args.command}: interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED_STATUS
    except USER_ERRORS as e:
        print(f"tfbert {args.command}: error: {error_message(e)}", file=sys.stderr, flush=True)
        return USER_ERROR_STATUS


def run() -> None:
    """The `tfbert` program (console script, `python -m tfbert`): `main` with a quiet stderr.

    Only the program filters its stderr (see `tfbert.cli.startup`); `main`
    called from Python leaves the caller's streams alone.
    """
    from tfbert.cli import startup

    startup.quiet_stderr()
    sys.exit(main())


__all__ = ["build_parser", "error_message", "main", "run"]
