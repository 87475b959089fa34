"""TensorFlow's thread pools for a served process, set as TF Serving's flags set them.

`tensorflow_model_server` takes ``--tensorflow_intra_op_parallelism`` (threads
that split one op), ``--tensorflow_inter_op_parallelism`` (ops run at once)
and ``--tensorflow_session_parallelism`` (both at once); 0 leaves TensorFlow's
default (one thread per core for each pool). Giving all three is an error;
giving intra or inter sets those two and ignores session (TF Serving's
``server.cc`` rule, kept here so one command line means the same in both).

Why a server would change them: a single text's matmuls are too small to
gain from being split across cores, so with
``--tensorflow_intra_op_parallelism=1`` each request keeps to one core and
concurrent requests run side by side instead of taking turns on both.
Batched requests lose: one batch then uses one core. BENCHMARKS.md has the
numbers (``benchmarks.serving_speed``).

The pools are per process and fixed once TensorFlow has run its first op,
so `use_threads` is called before a model is loaded (``tfbert serve`` does).

Example:

>>> thread_counts(intra_op=1, inter_op=0, session=0)
(1, 0)
>>> thread_counts(intra_op=0, inter_op=0, session=2)
(2, 2)
"""

from __future__ import annotations

import logging

from tfbert.errors import ConfigError

_log = logging.getLogger("tfbert.serving")


def thread_counts(intra_op: int = 0, inter_op: int = 0, session: int = 0) -> tuple[int, int]:
    """(intra-op, inter-op) threads from TF Serving's three flags; 0 = TensorFlow's default.

    Raises:
        ConfigError: a negative count, or all three flags given.
    """
    flags = {"tensorflow_intra_op_parallelism": intra_op,
             "tensorflow_inter_op_parallelism": inter_op,
             "tensorflow_session_parallelism": session}
    for flag, value in flags.items():
        if value < 0:
            raise ConfigError(f"--{flag} must be >= 0 (0: TensorFlow's default), got {value}")
    if intra_op > 0 and inter_op > 0 and session > 0:
        raise ConfigError("give --tensorflow_session_parallelism or "
                          "--tensorflow_intra_op_parallelism and "
                          "--tensorflow_inter_op_parallelism, not all three")
    if intra_op > 0 or inter_op > 0:
        return intra_op, inter_op
    return session, session


def use_threads(intra_op: int, inter_op: int) -> None:
    """Sets this process's TensorFlow thread pools (0 keeps a pool's default).

    Raises:
        ConfigError: TensorFlow has already run an op with other pool sizes.
    """
    import tensorflow as tf

    threading = tf.config.threading
    for count, get, set_ in (
        (intra_op, threading.get_intra_op_parallelism_threads,
         threading.set_intra_op_parallelism_threads),
        (inter_op, threading.get_inter_op_parallelism_threads,
         threading.set_inter_op_parallelism_threads),
    ):
        if count and get() != count:
            try:
                set_(count)
            except RuntimeError as exc:
                raise ConfigError(f"TensorFlow's thread pools are already running: {exc}; "
                                  "set them before the first model loads") from None
    if intra_op or inter_op:
        _log.info("TensorFlow threads: intra-op %s, inter-op %s",
                  intra_op or "default", inter_op or "default")
