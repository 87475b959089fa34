"""Shared helpers: timing, the matmul peak, FLOP counts, machine facts, tables.

Timing protocol (every benchmark): each contender is warmed up first (XLA
compilation, graph tracing, allocator growth are never timed); then the
timed repetitions run in *rounds*, one repetition of every contender per
round, with the order rotated each round. On a noisy shared machine a burst
of background load then hits all contenders alike instead of whichever
happened to be running, and the per-contender median over the rounds
discards the outliers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# MiniLM-L6 (all-MiniLM-L6-v2): the shape every benchmark uses.
MINILM = dict(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12,
              intermediate_size=1536)
BATCH = 32
SEQ_LEN = 128


def quiet_tensorflow() -> None:
    """Keep TF's C++ start-up chatter out of the printed tables."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ----------------------------------------------------------------------------- timing


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between order statistics."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    k = (len(ordered) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Contender:
    """One thing to time: ``run()`` does one repetition and returns the
    number of items (sequences) it processed."""

    name: str
    run: Callable[[], int]
    warmup: int = 2


@dataclass
class Timing:
    name: str
    seconds: list[float]
    items: int

    @property
    def median_seconds(self) -> float:
        return median(self.seconds)

    @property
    def throughput(self) -> float:
        """Items per second at the median repetition."""
        return self.items / self.median_seconds

    @property
    def spread(self) -> float:
        """(max - min) / median of the repetition times, a noise indicator."""
        return (max(self.seconds) - min(self.seconds)) / self.median_seconds


def time_interleaved(contenders: Sequence[Contender], reps: int,
                     log: Callable[[str], None] | None = print) -> dict[str, Timing]:
    """Warm every contender up, then time ``reps`` rounds, rotating the order."""
    items: dict[str, int] = {}
    for c in contenders:
        start = time.perf_counter()
        for _ in range(c.warmup):
            items[c.name] = c.run()
        if log:
            log(f"  warm-up {c.name}: {time.perf_counter() - start:.1f} s")
    seconds: dict[str, list[float]] = {c.name: [] for c in contenders}
    for r in range(reps):
        shift = r % len(contenders)
        for c in list(contenders[shift:]) + list(contenders[:shift]):
            start = time.perf_counter()
            n = c.run()
            seconds[c.name].append(time.perf_counter() - start)
            items[c.name] = n
        if log:
            log(f"  round {r + 1}/{reps} done (load {load_average():.2f})")
    return {c.name: Timing(c.name, seconds[c.name], items[c.name]) for c in contenders}


# ------------------------------------------------------------------------------ peak


PEAK_SHAPES = ((2048, 2048, 2048), (4096, 384, 1536), (4096, 1536, 384))


def measure_matmul_peak(reps: int = 10, dtype: str = "float32") -> tuple[float, dict[str, float]]:
    """This machine's measured matmul FLOP/s at ``dtype``: (peak, rate of every probe).

    Probes: ``[m, k] @ [k, n]`` in ``dtype`` (float32 or bfloat16) for ``PEAK_SHAPES`` (the 2048^3
    square and the encoder's feed-forward shapes at batch 32 x 128 tokens),
    each as a jit-compiled (XLA) and as a plain graph (oneDNN) ``tf.matmul``
    on all the cores TensorFlow uses; the fastest of ``reps`` repetitions per
    probe (a peak is what the hardware does undisturbed, so background load
    must not lower it). The peak is the fastest probe: on this kind of
    machine the large square runs well below what the cache-friendly skinny
    shapes reach, so the square alone would understate the peak (and
    overstate MFU).
    """
    import tensorflow as tf

    rates = {}
    for m, k, n in PEAK_SHAPES:
        a = tf.cast(tf.random.normal([m, k]), dtype)
        b = tf.cast(tf.random.normal([k, n]), dtype)
        for mode in ("xla", "graph"):
            fn = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)),
                             jit_compile=mode == "xla")
            for _ in range(3):
                fn(a, b).numpy()
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                fn(a, b).numpy()
                times.append(time.perf_counter() - start)
            rates[f"{m}x{k}@{k}x{n} {mode}"] = 2.0 * m * k * n / min(times)
    return max(rates.values()), rates


def merge_peaks(*measurements: tuple[float, dict[str, float]]) -> tuple[float, dict[str, float]]:
    """Best rate per probe over several measurements (before and after the runs)."""
    rates: dict[str, float] = {}
    for _, probe_rates in measurements:
        for name, rate in probe_rates.items():
            rates[name] = max(rate, rates.get(name, 0.0))
    return max(rates.values()), rates


PROBE = "matmul peak probe"
PROBE_BF16 = "bf16 matmul peak probe"


def peak_probe(rates: dict[str, float], target_seconds: float = 0.25,
               dtype: str = "float32") -> Contender:
    """A contender that runs the fastest probe of ``rates``; its "items" are FLOPs.

    ``dtype`` is the probes' (``measure_matmul_peak``'s); a bfloat16 probe is
    named ``PROBE_BF16``, so one run can time both.

    Timed in the same rounds as the benchmark's contenders, its median is the
    matmul rate the machine gave *in those rounds*: MFU against it does not
    swing with background load the way MFU against a peak measured at a
    quiet moment does.
    """
    import tensorflow as tf

    best = max(rates, key=rates.get)
    shape, mode = best.split()
    (m, k), (_, n) = (tuple(int(d) for d in part.split("x")) for part in shape.split("@"))
    a = tf.cast(tf.random.normal([m, k]), dtype)
    b = tf.cast(tf.random.normal([k, n]), dtype)
    fn = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)), jit_compile=mode == "xla")
    flops = 2.0 * m * k * n
    repeat = max(1, round(target_seconds * rates[best] / flops))

    def run() -> int:
        for _ in range(repeat):
            fn(a, b).numpy()
        return int(repeat * flops)

    return Contender(PROBE if dtype == "float32" else PROBE_BF16, run, warmup=2)


def describe_peak(peak: float, rates: dict[str, float]) -> str:
    probes = ", ".join(f"{name} {rate / 1e9:.0f}" for name, rate in rates.items())
    return f"{peak / 1e9:.0f} GFLOP/s (fastest of: {probes} GFLOP/s)"


# ----------------------------------------------------------------------------- FLOPs


def encoder_flops_per_sequence(seq_len: int, hidden_size: int, num_layers: int,
                               intermediate_size: int, pooler: bool = True) -> float:
    """Forward FLOPs of one BERT encoder sequence (multiply-add = 2 FLOPs).

    Per token and layer: ``2 * (4 H^2 + 2 H I)`` for the Q/K/V/output and the
    two feed-forward projections, plus ``2 * T * H`` for QK^T and ``2 * T * H``
    for the attention-weighted sum of V. Plus ``2 H^2`` per sequence for the
    pooler. Embedding look-ups, LayerNorm, softmax, GELU and biases are not
    counted (they are not matmuls). A training step counts ``3x`` forward.
    """
    per_token_layer = 2 * (4 * hidden_size ** 2 + 2 * hidden_size * intermediate_size)
    per_token_layer += 4 * seq_len * hidden_size
    total = num_layers * seq_len * per_token_layer
    if pooler:
        total += 2 * hidden_size ** 2
    return float(total)


FLOP_FORMULA = (
    "forward FLOPs per sequence = L * T * [2 * (4H^2 + 2HI) + 4TH] + 2H^2 "
    "(matmul multiply-adds x2: Q/K/V/output + feed-forward projections, QK^T and "
    "softmax(QK^T)V; pooler; embeddings, LayerNorm, softmax, GELU, biases not counted); "
    "train step = 3 x forward (the optimizer update is not counted)"
)


# ---------------------------------------------------------------------------- machine


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags(wanted: Sequence[str] = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
              ) -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in flags]
    except OSError:
        pass
    return []


def machine_info() -> dict:
    """CPU, cores, memory, library versions and time: the header of every table."""
    info = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "flags": cpu_flags(),
        "python": platform.python_version(),
        "load_at_start": round(load_average(), 2),
    }
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(f.readline().split()[1])
        info["memory_gib"] = round(kib / 2 ** 20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return info


def library_versions(*names: str) -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# ----------------------------------------------------------------------------- output


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers right-aligned."""
    def is_number(cell: object) -> bool:
        text = str(cell).replace(",", "").replace("x", "").replace("%", "").strip()
        try:
            float(text)
        except ValueError:
            return False
        return True

    align = ["---:" if rows and all(is_number(r[i]) for r in rows) else "---"
             for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def base_parser(description: str, default_reps: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--reps", type=int, default=default_reps,
                        help=f"timed repetitions per contender (>= 5; default {default_reps})")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the results (and the markdown) as JSON here")
    return parser


def check_reps(reps: int) -> int:
    if reps < 5:
        raise SystemExit(f"--reps must be at least 5 (medians over >= 5), got {reps}")
    return reps


def write_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
