"""Which compile mode is fastest here, per precision and purpose: re-derives the CPU rows
of `tfbert.precision.COMPILE_POLICY`.

For fp32 and bf16, each compile mode is timed on what that mode governs
(interleaved rounds, see :mod:`benchmarks.common`):

- training: the MiniLM-shaped encoder's step (forward + backward + tfbert's
  AdamW under the training policy, batch 32 x 128, random ids);
- serving: the export itself. The real all-MiniLM-L6-v2 classifier of
  :mod:`benchmarks.serving_speed` is exported once per precision and mode
  (``export_model(precision=, compile=)``: constant weights, tokenization in
  the graph) and its ``serving_default`` is called in-process on real texts,
  one text a call and 32 texts a call. The island modes' exports hold their
  weights as graph constants (oneDNN keeps them packed) where a "whole"
  export reads variables inside XLA, so an encoder with variables would
  rank the serving modes differently.

The modes:

- whole: the step (or the export's model call) under ``tf.function(jit_compile=True)``;
- attention: only the XLA islands (attention core, add & LayerNorm; the GELU in training);
- pointwise: the elementwise islands without the attention core;
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
import os
import sys
import tempfile

from benchmarks import common
from benchmarks.common import MINILM, Contender, log

MODES = ("whole", "attention", "pointwise", "none")
TRAIN_SHAPE = (32, 128)
SERVE_BATCHES = (1, 32)
SHAPES = {"train": "32 x 128 (random ids)", "serve": "1 and 32 real texts a call (export)"}
# Texts per repetition of a serving contender: enough one-text calls that a
# repetition lasts as long as a few batched ones.
SERVE_TEXTS = 128
MARGIN = 1.03


def _batch(batch: int, length: int):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, MINILM["vocab_size"], size=(batch, length), dtype=np.int32)
    return {"input_word_ids": tf.constant(ids), "input_mask": tf.ones_like(ids),
            "input_type_ids": tf.zeros_like(ids)}


def build_train_step(precision: str, mode: str):
    """A function running one training step on a batch, at ``precision`` in ``mode``."""
    import tensorflow as tf

    import tfbert
    from tfbert.precision import dtype_policy, island_config, training_policy
    from tfbert.training.optimization import AdamW

    with dtype_policy(training_policy(precision)):
        model = tfbert.build_encoder(tfbert.BertConfig(**MINILM, **island_config(mode)))
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


def train_contenders(precision: str) -> list[Contender]:
    """One training-step contender per compile mode."""
    batch, length = TRAIN_SHAPE
    inputs = _batch(batch, length)
    contenders = []
    for mode in MODES:
        log(f"building {precision} train {mode} at {batch} x {length}")
        step = build_train_step(precision, mode)

        def run(step=step) -> int:
            float(step(inputs))
            return batch
        contenders.append(Contender(mode, run, warmup=2))
    return contenders


def serving_model(workdir: str) -> str:
    """The saved real-weight classifier every serving row exports."""
    from benchmarks.serving_speed import export_classifier

    log("saving the all-MiniLM-L6-v2 classifier")
    export_classifier(workdir, precisions=())
    return os.path.join(workdir, "classifier")


def serve_contenders(model_dir: str, workdir: str, precision: str) -> list[list[Contender]]:
    """Per entry of `SERVE_BATCHES`, one contender per compile mode calling that mode's
    export on `SERVE_TEXTS` real texts."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

    from benchmarks.texts import texts
    from tfbert.export import export_model

    sample = texts(SERVE_TEXTS)
    signatures = {}
    for mode in MODES:
        log(f"exporting {precision} {mode}")
        version, _ = export_model(model_dir, f"{precision}-{mode}",
                                  base=os.path.join(workdir, "savedmodels"), check=False,
                                  warmup="none", precision=precision, compile=mode)
        signatures[mode] = tf.saved_model.load(version).signatures["serving_default"]
    groups = []
    for size in SERVE_BATCHES:
        calls = [tf.constant(sample[i:i + size]) for i in range(0, len(sample), size)]
        contenders = []
        for mode, serve in signatures.items():
            def run(serve=serve, calls=calls) -> int:
                for text in calls:
                    serve(text=text)["probabilities"].numpy()
                return len(sample)
            contenders.append(Contender(mode, run, warmup=2))
        groups.append(contenders)
    return groups


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
    with tempfile.TemporaryDirectory(prefix="tfbert-compile-policy-") as workdir:
        model_dir = serving_model(workdir) if "serve" in args.purposes else None
        for precision in args.precisions:
            for purpose in args.purposes:
                if purpose == "train":
                    groups = [train_contenders(precision)]
                else:
                    groups = serve_contenders(model_dir, workdir, precision)
                rates: dict[str, list[float]] = {m: [] for m in MODES}
                for contenders in groups:
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
                rows.append([precision, purpose, SHAPES[purpose],
                             *(common.fmt(mean[m]) for m in MODES), measured, table,
                             "yes" if agree else "**no**"])
                per_shape = {m: [round(r, 2) for r in v] for m, v in rates.items()}
                records.append(dict(precision=precision, purpose=purpose, shapes=SHAPES[purpose],
                                    seq_per_s=per_shape,
                                    geometric_mean={m: round(v, 2) for m, v in mean.items()},
                                    measured=measured, table=table, agree=agree))
    md = [f"Sequences (texts) per second per compile mode (MiniLM-L6; training: the encoder's "
          f"step; serving: the export, in-process; geometric mean over the shapes; "
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
