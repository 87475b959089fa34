"""Which compile mode is fastest here, per precision and purpose: re-derives the CPU rows
of `tfbert.precision.COMPILE_POLICY`.

For fp32 and bf16, and for training (forward + backward + tfbert's AdamW under the
training policy, batch 32 x 128) and serving (forward under the serving
policy at batch 32 x 128 and 32 x 48, the width of short real texts), the
MiniLM-shaped encoder is timed in the three compile modes (interleaved
rounds, see :mod:`benchmarks.common`):

- whole: the step (or the forward) under ``tf.function(jit_compile=True)``;
- attention: only the XLA islands (attention core, add & LayerNorm);
- none: no XLA at all.

The winner of a (precision, purpose) is the fastest by the geometric mean
over its shapes, with the house rule that the attention core stays compiled
where that is not slower: "attention" beats "none" unless "none" is more
than 3% faster, and "whole" must beat the best of the others by more than
3%. `COMPILE_POLICY` agrees with a measurement when its mode is within 3% of
the fastest mode (modes closer than that trade places from run to run); the
table says where it does not.

Run: ``python -m benchmarks.compile_policy [--reps 5] [--json out.json]``.
"""

from __future__ import annotations

import math
import sys

from benchmarks import common
from benchmarks.common import MINILM, Contender, log

MODES = ("whole", "attention", "pointwise", "none")
SHAPES = {"train": ((32, 128),), "serve": ((32, 128), (32, 48))}
MARGIN = 1.03


def _batch(batch: int, length: int):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, MINILM["vocab_size"], size=(batch, length), dtype=np.int32)
    return {"input_word_ids": tf.constant(ids), "input_mask": tf.ones_like(ids),
            "input_type_ids": tf.zeros_like(ids)}


def build_step(precision: str, purpose: str, mode: str):
    """A function running one step of ``purpose`` on a batch, at ``precision`` in ``mode``."""
    import tensorflow as tf

    import tfbert
    from tfbert.precision import dtype_policy, island_config, serving_policy, training_policy
    from tfbert.training.optimization import AdamW

    policy = training_policy(precision) if purpose == "train" else serving_policy(precision)
    with dtype_policy(policy):
        model = tfbert.build_encoder(tfbert.BertConfig(**MINILM, **island_config(mode)))
    if purpose == "serve":
        @tf.function(jit_compile=mode == "whole")
        def forward(batch):
            out = model(batch, training=False)
            return tf.reduce_sum(tf.cast(out["pooled_output"], tf.float32))
        return forward

    variables = model.trainable_variables
    optimizer = AdamW(learning_rate=1e-4, weight_decay=0.01)
    optimizer.build(variables)

    @tf.function(jit_compile=mode == "whole")
    def train(batch):
        with tf.GradientTape() as tape:
            out = model(batch, training=True)
            loss = (tf.reduce_mean(tf.square(tf.cast(out["sequence_output"], tf.float32)))
                    + tf.reduce_mean(tf.square(tf.cast(out["pooled_output"], tf.float32))))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss
    return train


def winner(rates: dict[str, float]) -> str:
    """The mode the house rule picks from {mode: seq/s}."""
    best = "attention"
    for mode in ("pointwise", "none", "whole"):
        if rates[mode] > rates[best] * MARGIN:
            best = mode
    return best


def main(argv: list[str] | None = None) -> dict:
    common.quiet_tensorflow()
    parser = common.base_parser(__doc__.splitlines()[0], default_reps=5)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--purposes", nargs="+", default=["train", "serve"])
    args = parser.parse_args(argv)
    reps = common.check_reps(args.reps)

    from tfbert.precision import COMPILE_POLICY

    machine = common.machine_info()
    records, rows, disagreements = [], [], []
    for precision in args.precisions:
        for purpose in args.purposes:
            rates: dict[str, list[float]] = {m: [] for m in MODES}
            for batch, length in SHAPES[purpose]:
                inputs = _batch(batch, length)
                contenders = []
                for mode in MODES:
                    log(f"building {precision} {purpose} {mode} at {batch} x {length}")
                    step = build_step(precision, purpose, mode)

                    def run(step=step, inputs=inputs, batch=batch) -> int:
                        float(step(inputs))
                        return batch
                    contenders.append(Contender(mode, run, warmup=2))
                timings = common.time_interleaved(contenders, reps, log)
                for mode in MODES:
                    rates[mode].append(timings[mode].throughput)
            mean = {m: math.exp(sum(math.log(r) for r in v) / len(v)) for m, v in rates.items()}
            measured = winner(mean)
            table = COMPILE_POLICY[("cpu", precision, purpose)]
            agree = mean[table] * MARGIN >= max(mean.values())
            if not agree:
                disagreements.append(f"{precision} {purpose}: measured {measured}, "
                                     f"COMPILE_POLICY {table}")
            shapes = " and ".join(f"{b} x {t}" for b, t in SHAPES[purpose])
            rows.append([precision, purpose, shapes,
                         *(common.fmt(mean[m]) for m in MODES), measured, table,
                         "yes" if agree else "**no**"])
            records.append(dict(precision=precision, purpose=purpose, shapes=SHAPES[purpose],
                                seq_per_s={m: [round(r, 2) for r in v] for m, v in rates.items()},
                                geometric_mean={m: round(v, 2) for m, v in mean.items()},
                                measured=measured, table=table, agree=agree))
    md = [f"Encoder seq/s per compile mode (MiniLM-L6 shape; geometric mean over the shapes; "
          f"median of {reps}):", "",
          common.markdown_table(["precision", "purpose", "shapes", *MODES, "fastest",
                                 "COMPILE_POLICY", "agree (within 3%)"], rows), "",
          f"Rule: the modes in the order attention, pointwise, none, whole; each wins only "
          f"when more than {100 * (MARGIN - 1):.0f}% faster than the best before it. "
          f"COMPILE_POLICY agrees when its mode is within {100 * (MARGIN - 1):.0f}% of the "
          f"fastest. Load "
          f"average at start: {machine['load_at_start']}, at end: {common.load_average():.2f}."]
    if disagreements:
        md += ["", "COMPILE_POLICY disagrees with this measurement: " + "; ".join(disagreements)]
    markdown = "\n".join(md)
    print(markdown)
    result = dict(benchmark="compile_policy", machine=machine, reps=reps, policy=records,
                  disagreements=disagreements, markdown=markdown)
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
