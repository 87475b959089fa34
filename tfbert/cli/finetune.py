"""`tfbert finetune` and `tfbert evaluate`.

The `--task` choices are the registered task names (`tfbert.tasks.names()`,
which imports no TensorFlow); a task that `tfbert finetune` does not train
(such as `pretrain`) is refused with a hint before anything heavy runs.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> register(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["finetune", "--train", "t.csv", "--init", "m", "--output", "o"])
>>> args.task, args.epochs, args.batch_size, args.precision, args.compile
('classify', 3, 32, 'fp32', None)
>>> args.accumulation_steps, args.strategy, args.monitor, args.save_best
(1, None, 'val_loss', False)
"""

from __future__ import annotations

import argparse
import json
import os

import tfbert.tasks
from tfbert.cli.training_flags import (
    add_training_arguments,
    check_training_arguments,
    positive_int,
)
from tfbert.errors import ConfigError, DataError

# What to run instead, for tasks `tfbert finetune` does not train.
_TRAINED_ELSEWHERE = {"pretrain": "use `tfbert pretrain`"}


def register(subparsers) -> None:
    """Add `finetune` and `evaluate` to the `tfbert` subparsers."""
    tasks = tfbert.tasks.names()
    p = subparsers.add_parser("finetune", help="fine-tune a task model with model.fit",
                              description="Fine-tune from any model directory. Writes a "
                              "tfbert model directory with history.json (per-epoch metrics).")
    p.add_argument("--task", choices=tasks, default="classify",
                   help=f"task to fine-tune: {', '.join(tasks)} (default classify); "
                   "--train and --validation are in the task's data format")
    p.add_argument("--train", required=True,
                   help="training file in the task's data format (see --task)")
    p.add_argument("--validation", help="validation file, metrics every epoch")
    p.add_argument("--init", required=True, help="model directory to start from")
    p.add_argument("--output", required=True, help="output model directory")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32,
                   help="global batch of one optimizer update (default 32)")
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--warmup", type=float, default=0.1, help="warmup fraction of all steps")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--pooling", choices=["cls", "mean"], default="cls")
    p.add_argument("--long-inputs", choices=["truncate", "windows"], default="truncate",
                   help="examples longer than --max-seq-length: cut them (default) or split "
                   "them into overlapping windows --doc-stride tokens apart, in training and "
                   "inside the export (classify, tag; qa always windows its contexts)")
    p.add_argument("--doc-stride", type=positive_int, default=128,
                   help="tokens between the starts of consecutive windows (default 128)")
    p.add_argument("--max-query-length", type=positive_int, default=64,
                   help="question tokens kept (qa; default 64)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its last checkpoint")
    p.add_argument("--checkpoint-every", type=int,
                   help="optimizer steps between checkpoints (default: each epoch, <= 100)")
    p.add_argument("--seed", type=int, default=0)
    add_training_arguments(p)
    p.add_argument("--strategy", choices=("mirrored", "multiworker", "tpu"), default=None,
                   help="distribute over local devices (all GPUs, else the logical CPUs), "
                   "workers (TF_CONFIG) or a TPU; --batch-size is split over the replicas "
                   "and the chief writes the output")
    p.add_argument("--early-stopping", type=positive_int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better --monitor value and "
                   "ship the best epoch's weights (needs --validation for val_ values)")
    p.add_argument("--monitor", default="val_loss", metavar="NAME",
                   help="the epoch value --early-stopping and --save-best watch: val_loss "
                   "(default), val_accuracy, or another key of history.json; lower is better "
                   "for names ending in loss, higher otherwise")
    p.add_argument("--save-best", action="store_true",
                   help="ship the best epoch's weights by --monitor instead of the last "
                   "epoch's (history.json marks the shipped epoch); the best epoch and the "
                   "patience count survive --resume")
    p.set_defaults(run=run_finetune)

    e = subparsers.add_parser("evaluate", help="metrics of a fine-tuned model as JSON",
                              description="Print the task's metrics as JSON: classify "
                              "accuracy, macro F1, per-label P/R/F1; multilabel micro/macro F1; "
                              "regress MSE, Pearson, Spearman; tag entity F1; qa exact match "
                              "and F1.")
    e.add_argument("--model", required=True, help="fine-tuned model directory")
    e.add_argument("--data", required=True,
                   help="labelled file in the format the model was trained on")
    e.add_argument("--batch-size", type=int, default=32)
    e.set_defaults(run=run_evaluate)


def finetunable_task(name: str) -> tfbert.tasks.TaskSpec:
    """The spec of task `name`.

    Raises:
        ConfigError: unknown task, or one `tfbert finetune` does not train.
    """
    spec = tfbert.tasks.get(name)
    if not spec.finetunable:
        hint = _TRAINED_ELSEWHERE.get(name) or "fine-tunable tasks: " + ", ".join(
            n for n in tfbert.tasks.names() if tfbert.tasks.get(n).finetunable)
        raise ConfigError(f"task {name!r} is not trained by `tfbert finetune`; {hint}")
    return spec


def _require_file(flag: str, path: str | None) -> None:
    """Refuse a missing input file before TensorFlow is even imported."""
    if path is not None and not os.path.exists(path):
        raise DataError(f"{path}: no such file ({flag})")


def run_finetune(args: argparse.Namespace) -> int:
    """Fine-tune with `tfbert.training.finetune.run_finetune`; returns 0."""
    _require_file("--train", args.train)
    _require_file("--validation", args.validation)
    finetunable_task(args.task)
    check_training_arguments(args)
    keeps_best = args.early_stopping is not None or args.save_best
    if keeps_best and args.monitor.startswith("val_") and args.validation is None:
        flag = "--early-stopping" if args.early_stopping is not None else "--save-best"
        raise ConfigError(f"{flag} watches --monitor {args.monitor}, a validation value: "
                          "give --validation FILE")
    from tfbert.training.finetune import run_finetune as finetune

    finetune(args.train, args.init, args.output, validation=args.validation,
             epochs=args.epochs, batch_size=args.batch_size,
             learning_rate=args.learning_rate, warmup=args.warmup,
             max_seq_length=args.max_seq_length, pooling=args.pooling,
             resume=args.resume, seed=args.seed, precision=args.precision,
             compile=args.compile,
             checkpoint_every=args.checkpoint_every, task=args.task,
             accumulation_steps=args.accumulation_steps, strategy=args.strategy,
             tensorboard=args.tensorboard, early_stopping=args.early_stopping,
             monitor=args.monitor, save_best=args.save_best,
             long_inputs=args.long_inputs, doc_stride=args.doc_stride,
             max_query_length=args.max_query_length)
    print(f"tfbert finetune: wrote {args.output}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Print the metrics of `--model` on `--data` as JSON; returns 0."""
    _require_file("--data", args.data)
    from tfbert.training.finetune import evaluate

    print(json.dumps(evaluate(args.model, args.data, args.batch_size), indent=2))
    return 0

