"""Flags that `tfbert finetune` and `tfbert pretrain` share: accumulation,
precision, compile mode and TensorBoard.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_training_arguments(parser)
>>> args = parser.parse_args(["--accumulation-steps", "4", "--tensorboard", "logs"])
>>> args.accumulation_steps, args.tensorboard, args.precision, args.compile
(4, 'logs', 'fp32', None)
"""

from __future__ import annotations

import argparse

from tfbert.errors import ConfigError

# The choices as literals: `tfbert --help` imports no TensorFlow.
PRECISION_CHOICES = ("fp32", "bf16")
COMPILE_CHOICES = ("whole", "attention", "pointwise", "none")


def add_precision_arguments(parser: argparse.ArgumentParser, purpose: str) -> None:
    """Add `--precision fp32|bf16` and `--compile whole|attention|pointwise|none`."""
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32",
                        help="bf16: bfloat16 matmuls and activations (softmax, LayerNorm "
                        "statistics and logits stay float32); fast on GPUs of compute "
                        "capability >= 8.0 and CPUs with AVX512_BF16 or AMX, slower elsewhere "
                        "(a warning says so) (default fp32)")
    what = "the train step" if purpose == "train" else "the whole model call"
    parser.add_argument("--compile", choices=COMPILE_CHOICES, default=None,
                        help=f"what XLA compiles: whole ({what}), attention (only the "
                        "attention core, the add & LayerNorm steps in serving and the GELU in "
                        "training; matmuls run as fused oneDNN kernels), pointwise (those "
                        "islands without the attention core, which runs as TensorFlow ops) "
                        "or none; default the fastest measured for this device and precision "
                        "(README, 'Precision and compilation')")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--accumulation-steps N`, `--tensorboard DIR`, `--precision` and `--compile`."""
    add_precision_arguments(parser, "train")
    parser.add_argument("--accumulation-steps", type=positive_int, default=1, metavar="N",
                        help="split each batch into N micro-batches of batch-size/N and apply "
                        "one update with their mean gradient (the memory of the small batch, "
                        "the update of the large one); steps, epochs and checkpoints count "
                        "updates; not with --strategy (default 1)")
    parser.add_argument("--tensorboard", default=None, metavar="DIR",
                        help="write TensorBoard logs to DIR: every epoch's loss, metrics and "
                        "learning rate")


def check_training_arguments(args: argparse.Namespace) -> None:
    """Refuse a batch the accumulation steps do not divide, or accumulation with a strategy.

    Raises:
        ConfigError: naming the flags.
    """
    steps = args.accumulation_steps
    if args.batch_size % steps:
        raise ConfigError(f"--batch-size {args.batch_size} is not divisible by "
                          f"--accumulation-steps {steps}")
    if steps > 1 and getattr(args, "strategy", None) is not None:
        raise ConfigError(f"--accumulation-steps {steps} does not work with --strategy "
                          f"{args.strategy} (Keras 3.15 cannot synchronise replicas inside its "
                          "gradient accumulation); leave out one of them")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
