"""Numeric precision (fp32 or bf16), where bf16 is fast, and what to XLA-compile.

Two precisions, each with a Keras dtype policy per purpose:

- training: "fp32" -> `float32`; "bf16" -> `mixed_bfloat16` (float32
  variables, bfloat16 matmuls and activations).
- serving (`tfbert export`): "fp32" -> `float32`; "bf16" -> `bfloat16`: the
  weights are cast once, at export, and stored in bfloat16, so a request
  casts no weights.

In both, what needs the range or the precision stays float32: the attention
softmax (`tfbert.layers.attention_core`), LayerNorm statistics (Keras'
LayerNormalization computes them in float32), the task heads' final logits
(their output layers are float32 layers) and the losses.

The compile policy says what XLA compiles, per device kind, precision and
purpose: "whole" (the whole train step, or the whole model in a serving
function), "attention" (only the XLA islands: the attention core, in
serving the add & LayerNorm steps and, in training, the GELU; the rest runs
as TensorFlow ops, where grappler fuses matmul + bias + activation for
oneDNN), "pointwise" (those islands but the attention core, which runs as
TensorFlow ops: on CPU oneDNN's bfloat16 batched matmuls are the faster
ones), or "none".
`COMPILE_POLICY` holds the measured winners; `benchmarks/compile_policy.py`
re-measures them.

Example:

>>> compile_policy("bf16", "serve", device="cpu")
'attention'
>>> serving_policy("bf16")
'bfloat16'
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator

import keras
import tensorflow as tf

from tfbert.errors import ConfigError

PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
TRAINING_POLICIES: dict[str, str] = {"fp32": "float32", "bf16": "mixed_bfloat16"}
SERVING_POLICIES: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16"}
COMPILE_MODES: tuple[str, ...] = ("whole", "attention", "pointwise", "none")
PURPOSES: tuple[str, ...] = ("train", "serve")
DEVICES: tuple[str, ...] = ("cpu", "gpu")

# (device, precision, purpose) -> compile mode. The CPU rows are measured
# (BENCHMARKS.md, "Compile policy"); on CPU, XLA's bfloat16 dots run at less
# than half the rate of oneDNN's, so bf16 keeps the dense layers out of XLA.
# The GPU rows follow the published practice for BERT on NVIDIA GPUs
# (XLA-compiled steps and serving graphs) and are not measured here.
COMPILE_POLICY: dict[tuple[str, str, str], str] = {
    ("cpu", "fp32", "train"): "pointwise",
    ("cpu", "bf16", "train"): "pointwise",
    ("cpu", "fp32", "serve"): "attention",
    ("cpu", "bf16", "serve"): "attention",
    ("gpu", "fp32", "train"): "whole",
    ("gpu", "bf16", "train"): "whole",
    ("gpu", "fp32", "serve"): "whole",
    ("gpu", "bf16", "serve"): "whole",
}


def check_precision(precision: str) -> str:
    """`precision` itself if it is one of `PRECISIONS`; otherwise a ConfigError."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def training_policy(precision: str) -> str:
    """The Keras dtype policy that trains at `precision`."""
    return TRAINING_POLICIES[check_precision(precision)]


def serving_policy(precision: str) -> str:
    """The Keras dtype policy of a serving graph at `precision`."""
    return SERVING_POLICIES[check_precision(precision)]


@contextlib.contextmanager
def dtype_policy(policy: str) -> Iterator[None]:
    """Build layers under the Keras dtype policy `policy`, then restore the previous one.

    Keras fixes a layer's dtype policy when the layer is created, so a model
    built inside the block keeps `policy` after it.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def device_kind() -> str:
    """"gpu" if TensorFlow sees a GPU, else "cpu"."""
    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def compile_policy(precision: str, purpose: str, device: str | None = None) -> str:
    """The compile mode (`COMPILE_MODES`) for `precision` and `purpose` on `device`.

    Args:
        precision: "fp32" or "bf16".
        purpose: "train" or "serve".
        device: "cpu" or "gpu"; default the kind this process sees.
    """
    check_precision(precision)
    device = device or device_kind()
    if purpose not in PURPOSES or device not in DEVICES:
        raise ConfigError(f"no compile policy for purpose {purpose!r} on device {device!r}")
    return COMPILE_POLICY[(device, precision, purpose)]


def check_compile_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return mode


def island_config(mode: str) -> dict[str, bool]:
    """The `BertConfig` fields that build a model's XLA islands for compile `mode`.

    "whole" builds the "attention" islands: the whole-step `jit_compile`
    compiles them with everything else.

    Example:

    >>> island_config("pointwise")
    {'xla_attention': False, 'xla_pointwise': True}
    """
    check_compile_mode(mode)
    return {"xla_attention": mode in ("whole", "attention"), "xla_pointwise": mode != "none"}


def serving_branches(mode: str, num_heads: int = 2, intermediate_size: int = 2) -> int:
    """`BertConfig.inference_branches` of an export in compile `mode` of a model with
    `num_heads` heads and feed-forward width `intermediate_size`.

    Outside whole-model XLA a serving graph runs each block as two
    independent branches (`tfbert.layers.TransformerBlock`): oneDNN does not
    split a one-text request's small matmuls well across cores, TensorFlow's
    inter-op threads run two such branches side by side. Measured on MiniLM
    (2-core CPU, in-process, A/B in one process): a bf16 "attention" export
    answered one text in 3.04-3.09 instead of 3.45 ms, 32 texts in the same
    time. Inside one XLA computation the split was slower (fp32 "whole":
    7.8 vs 5.2 ms a text), so "whole" keeps 1, as does a model whose heads
    or feed-forward width do not split in two.

    Example:

    >>> serving_branches("attention"), serving_branches("whole")
    (2, 1)
    >>> serving_branches("attention", num_heads=3, intermediate_size=12)
    1
    """
    if check_compile_mode(mode) == "whole":
        return 1
    return 1 if num_heads % 2 or intermediate_size % 2 else 2


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """The compute capability of every GPU TensorFlow sees."""
    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability:
            capabilities.append(tuple(capability))
    return capabilities


def bf16_support(cpu: frozenset[str] | None = None,
                 gpus: list[tuple[int, int]] | None = None) -> tuple[bool, str]:
    """Whether bfloat16 is the fast path here, and why.

    Fast: GPUs of compute capability 8.0 or later (Ampere, Hopper: bf16 tensor
    cores) and, without a GPU, CPUs with AVX512_BF16 or AMX (bf16 dot-product
    instructions, which oneDNN uses). Elsewhere bf16 is emulated and slower
    than fp32.

    Args:
        cpu: CPU flags to judge (default: this machine's, `cpu_flags()`).
        gpus: GPU compute capabilities (default: this machine's).

    Example:

    >>> bf16_support(cpu=frozenset({"avx512f", "avx512_bf16"}), gpus=[])
    (True, 'the CPU has AVX512_BF16')
    >>> bf16_support(cpu=frozenset({"avx2"}), gpus=[(7, 0)])[0]
    False
    """
    gpus = gpu_compute_capabilities() if gpus is None else gpus
    if gpus:
        if all(c >= (8, 0) for c in gpus):
            return True, "every GPU has compute capability >= 8.0 (bf16 tensor cores)"
        slow = ", ".join(f"{major}.{minor}" for major, minor in gpus if (major, minor) < (8, 0))
        return False, f"GPU compute capability {slow} < 8.0 has no bf16 tensor cores"
    cpu = cpu_flags() if cpu is None else cpu
    if "amx_bf16" in cpu:
        return True, "the CPU has AMX (bf16 tiles)"
    if "avx512_bf16" in cpu:
        return True, "the CPU has AVX512_BF16"
    return False, "the CPU has neither AVX512_BF16 nor AMX"


def warn_if_slow(precision: str, what: str = "tfbert") -> bool:
    """Warn (RuntimeWarning) when `precision` is bf16 on hardware where it is slower
    than fp32; return whether it warned."""
    if check_precision(precision) != "bf16":
        return False
    fast, reason = bf16_support()
    if not fast:
        warnings.warn(f"{what}: --precision bf16 will run slower than fp32 here: {reason}",
                      RuntimeWarning, stacklevel=2)
    return not fast


__all__ = ["COMPILE_MODES", "COMPILE_POLICY", "PRECISIONS", "SERVING_POLICIES",
           "TRAINING_POLICIES", "bf16_support", "check_compile_mode", "check_precision",
           "compile_policy", "cpu_flags", "device_kind", "dtype_policy",
           "gpu_compute_capabilities", "island_config", "serving_policy", "training_policy",
           "warn_if_slow"]
