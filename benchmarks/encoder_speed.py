"""Encoder throughput: tfbert vs keras-hub BertBackbone vs HF BertModel (PyTorch).

MiniLM-L6 shape (L6/H384/A12/I1536, vocab 30522), batch 32, length 128
(no padding), random weights, float32 and bfloat16. Two measurements per
contender:

- forward: ``model(batch, training=False)`` (seq/s);
- train: forward (dropout on) + backward + AdamW update (seq/s): each
  library's own AdamW, as its users train -- tfbert's
  (``tfbert.training.optimization.AdamW``, fused update kernels), Keras'
  for keras-hub, PyTorch's for HF.

Contenders (all in this process, timed in interleaved rounds, see
:mod:`benchmarks.common`):

- tfbert, whole step XLA: the step under ``tf.function(jit_compile=True)``;
- tfbert, XLA attention core: ``tf.function`` graph, only the XLA islands
  (attention core, training GELU) compiled, the matmuls as oneDNN kernels
  (compile mode "attention");
- tfbert, XLA pointwise islands: only the training GELU compiled, the
  attention core as TensorFlow ops (compile mode "pointwise");
- tfbert, no XLA: compile mode "none", plain graph;
- tfbert bf16: the same model under Keras' ``mixed_bfloat16`` policy in the
  CPU's bf16 default compile mode (``tfbert.precision.compile_policy``);
- tfbert, whole step XLA, tanh GELU: ``hidden_act="gelu_approximate"``, the
  activation keras-hub's ``BertBackbone`` uses (tfbert's default is BERT's
  exact erf GELU, which checkpoints from HF/Google need);
- keras-hub ``BertBackbone``, same shape, with and without ``jit_compile``,
  in float32 and under ``dtype="mixed_bfloat16"``;
- Hugging Face ``BertModel`` on PyTorch (eager, ``torch.set_num_threads`` =
  cores; eval under ``inference_mode`` / train mode with ``torch.optim.AdamW``),
  in float32 and under ``torch.autocast("cpu", dtype=torch.bfloat16)``.

MFU = achieved matmul FLOP/s over the float32 and over the bfloat16 matmul
rate measured in the same rounds (:func:`benchmarks.common.peak_probe`).
FLOPs are counted analytically (:data:`benchmarks.common.FLOP_FORMULA`).

Run: ``python -m benchmarks.encoder_speed [--reps 5] [--json out.json]``.
"""

from __future__ import annotations

import os
import sys

from benchmarks import common
from benchmarks.common import BATCH, MINILM, SEQ_LEN, Contender, log
from tfbert.precision import COMPILE_POLICY

TFBERT_XLA = "tfbert, whole step XLA"
TFBERT_CORE = "tfbert, XLA attention core only"
TFBERT_POINTWISE = "tfbert, XLA pointwise islands only"
TFBERT_NOXLA = "tfbert, no XLA"
TFBERT_TANH = "tfbert, whole step XLA, tanh GELU"
# The bf16 contender runs the CPU's bf16 training default (`COMPILE_POLICY`).
MODE_WORDS = {"whole": "whole step XLA", "attention": "XLA attention core only",
              "pointwise": "XLA pointwise islands only", "none": "no XLA"}
TFBERT_BF16 = f"tfbert bf16, {MODE_WORDS[COMPILE_POLICY['cpu', 'bf16', 'train']]}"
KH_XLA = "keras-hub BertBackbone, XLA"
KH_NOXLA = "keras-hub BertBackbone, no XLA"
KH_BF16_XLA = "keras-hub BertBackbone bf16, XLA"
KH_BF16_NOXLA = "keras-hub BertBackbone bf16, no XLA"
HF_TORCH = "HF BertModel, PyTorch"
HF_BF16 = "HF BertModel, PyTorch bf16 autocast"
ORDER = (TFBERT_XLA, TFBERT_TANH, TFBERT_CORE, TFBERT_POINTWISE, TFBERT_NOXLA, TFBERT_BF16,
         KH_XLA, KH_NOXLA,
         KH_BF16_XLA, KH_BF16_NOXLA, HF_TORCH, HF_BF16)
BF16 = {TFBERT_BF16, KH_BF16_XLA, KH_BF16_NOXLA, HF_BF16}
# Whom each contender is compared with in the "vs keras-hub" column: keras-hub
# at the same precision in the same XLA mode (whole step, or none).
KERAS_HUB_PEER = {TFBERT_XLA: KH_XLA, TFBERT_TANH: KH_XLA, TFBERT_CORE: KH_NOXLA,
                  TFBERT_POINTWISE: KH_NOXLA, TFBERT_NOXLA: KH_NOXLA, KH_XLA: KH_XLA,
                  KH_NOXLA: KH_NOXLA, HF_TORCH: KH_XLA,
                  TFBERT_BF16: KH_BF16_NOXLA, KH_BF16_XLA: KH_BF16_XLA,
                  KH_BF16_NOXLA: KH_BF16_NOXLA, HF_BF16: KH_BF16_XLA}
HF_PEER = {name: HF_BF16 if name in BF16 else HF_TORCH for name in ORDER}
LEARNING_RATE = 1e-4
WEIGHT_DECAY = 0.01


def random_batch(seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, MINILM["vocab_size"], size=(BATCH, SEQ_LEN), dtype=np.int32)
    ids[:, 0] = 101  # [CLS]
    ids[:, -1] = 102  # [SEP]
    return ids, np.ones_like(ids), np.zeros_like(ids)


# ------------------------------------------------------------------------ TF contenders


def _tf_steps(model, inputs: dict, outputs: tuple[str, str], jit_compile: bool,
              optimizer_class):
    """(forward, train) callables for a Keras model returning a dict of outputs."""
    import tensorflow as tf

    seq_key, pooled_key = outputs
    variables = model.trainable_variables
    optimizer = optimizer_class(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    optimizer.build(variables)

    @tf.function(jit_compile=jit_compile)
    def forward(batch):
        out = model(batch, training=False)
        # Both outputs are consumed, so no part of the network is dead code.
        return (tf.reduce_sum(tf.cast(out[seq_key], tf.float32))
                + tf.reduce_sum(tf.cast(out[pooled_key], tf.float32)))

    @tf.function(jit_compile=jit_compile)
    def train(batch):
        with tf.GradientTape() as tape:
            out = model(batch, training=True)
            # The loss in float32, as Keras computes it under mixed precision.
            loss = (tf.reduce_mean(tf.square(tf.cast(out[seq_key], tf.float32)))
                    + tf.reduce_mean(tf.square(tf.cast(out[pooled_key], tf.float32))))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    return (lambda: float(forward(inputs))), (lambda: float(train(inputs)))


def tfbert_steps(mode: str, hidden_act: str = "gelu", policy: str = "float32"):
    """tfbert's forward and train step in compile `mode` (`tfbert.precision.COMPILE_MODES`)."""
    import tensorflow as tf

    import tfbert
    from tfbert.precision import dtype_policy, island_config
    from tfbert.training.optimization import AdamW

    config = tfbert.BertConfig(**MINILM, **island_config(mode), hidden_act=hidden_act)
    with dtype_policy(policy):
        model = tfbert.build_encoder(config)
    ids, mask, types = random_batch()
    inputs = {"input_word_ids": tf.constant(ids), "input_mask": tf.constant(mask),
              "input_type_ids": tf.constant(types)}
    return _tf_steps(model, inputs, ("sequence_output", "pooled_output"), mode == "whole", AdamW)


def keras_hub_steps(jit_compile: bool, dtype: str = "float32"):
    import keras
    import keras_hub
    import tensorflow as tf

    model = keras_hub.models.BertBackbone(
        vocabulary_size=MINILM["vocab_size"], num_layers=MINILM["num_layers"],
        num_heads=MINILM["num_heads"], hidden_dim=MINILM["hidden_size"],
        intermediate_dim=MINILM["intermediate_size"], dropout=0.1,
        max_sequence_length=512, num_segments=2, dtype=dtype)
    ids, mask, types = random_batch()
    inputs = {"token_ids": tf.constant(ids), "padding_mask": tf.constant(mask),
              "segment_ids": tf.constant(types)}
    return _tf_steps(model, inputs, ("sequence_output", "pooled_output"), jit_compile,
                     keras.optimizers.AdamW)


# --------------------------------------------------------------------- PyTorch contender


def hf_torch_steps(bf16: bool = False):
    """HF BertModel steps; ``bf16`` runs them under CPU bfloat16 autocast."""
    import contextlib

    import torch
    import transformers

    def precision():
        return (torch.autocast("cpu", dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=MINILM["vocab_size"], hidden_size=MINILM["hidden_size"],
        num_hidden_layers=MINILM["num_layers"], num_attention_heads=MINILM["num_heads"],
        intermediate_size=MINILM["intermediate_size"], hidden_act="gelu")
    model = transformers.BertModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE,
                                  weight_decay=WEIGHT_DECAY)
    ids, mask, types = (torch.from_numpy(a.astype("int64")) for a in random_batch())
    batch = dict(input_ids=ids, attention_mask=mask, token_type_ids=types)

    def forward() -> float:
        model.eval()
        with torch.inference_mode(), precision():
            out = model(**batch)
            return float(out.last_hidden_state.float().sum() + out.pooler_output.float().sum())

    def train() -> float:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with precision():
            out = model(**batch)
            loss = (out.last_hidden_state.float().square().mean()
                    + out.pooler_output.float().square().mean())
        loss.backward()
        optimizer.step()
        return loss.item()

    return forward, train, getattr(model.config, "_attn_implementation", "default")


def _tfbert_bf16_steps():
    """tfbert under mixed_bfloat16 in the CPU's bf16 training compile mode."""
    from tfbert.precision import compile_policy, training_policy

    return tfbert_steps(compile_policy("bf16", "train", device="cpu"),
                        policy=training_policy("bf16"))


# ----------------------------------------------------------------------------- driver


def build_contenders(names, forward_steps: int):
    """{name: (forward Contender, train Contender)}, plus HF attention impl."""
    builders = {
        TFBERT_XLA: lambda: tfbert_steps("whole"),
        TFBERT_CORE: lambda: tfbert_steps("attention"),
        TFBERT_POINTWISE: lambda: tfbert_steps("pointwise"),
        TFBERT_NOXLA: lambda: tfbert_steps("none"),
        TFBERT_TANH: lambda: tfbert_steps("whole", hidden_act="gelu_approximate"),
        TFBERT_BF16: lambda: _tfbert_bf16_steps(),
        KH_XLA: lambda: keras_hub_steps(jit_compile=True),
        KH_NOXLA: lambda: keras_hub_steps(jit_compile=False),
        KH_BF16_XLA: lambda: keras_hub_steps(jit_compile=True, dtype="mixed_bfloat16"),
        KH_BF16_NOXLA: lambda: keras_hub_steps(jit_compile=False, dtype="mixed_bfloat16"),
    }
    forward, train, extra = {}, {}, {}
    for name in names:
        log(f"building {name}")
        if name in (HF_TORCH, HF_BF16):
            fwd, trn, extra["hf_attn_implementation"] = hf_torch_steps(bf16=name == HF_BF16)
        else:
            fwd, trn = builders[name]()

        def run_forward(fwd=fwd):
            for _ in range(forward_steps):
                fwd()
            return forward_steps * BATCH

        def run_train(trn=trn):
            trn()
            return BATCH

        forward[name] = Contender(name, run_forward, warmup=2)
        train[name] = Contender(name, run_train, warmup=2)
    return forward, train, extra


def _ratio(value: float, peer: str) -> str:
    """A ratio cell; "n/a" where the peer was not run (``--only``)."""
    return "n/a" if value != value else f"{value:.2f}x ({peer})"


def make_table(timings: dict, flops_per_seq: float) -> tuple[str, list[dict], dict]:
    """Markdown table, records and the in-round matmul rates it used for MFU."""
    peaks = {"fp32": timings[common.PROBE].throughput,
             "bf16": timings[common.PROBE_BF16].throughput}
    fp32_tfbert = max((timings[n].throughput
                       for n in (TFBERT_XLA, TFBERT_CORE, TFBERT_POINTWISE, TFBERT_NOXLA)
                       if n in timings), default=float("nan"))
    rows, records = [], []
    for name in ORDER:
        if name not in timings:
            continue
        t = timings[name]
        seqs = t.throughput
        mfu = {p: seqs * flops_per_seq / peak for p, peak in peaks.items()}
        kh, hf = KERAS_HUB_PEER[name], HF_PEER[name]
        vs_kh = seqs / timings[kh].throughput if kh in timings else float("nan")
        vs_hf = seqs / timings[hf].throughput if hf in timings else float("nan")
        precision = "bf16" if name in BF16 else "fp32"
        vs_fp32 = seqs / fp32_tfbert if name == TFBERT_BF16 else float("nan")
        records.append(dict(name=name, precision=precision, seq_per_s=round(seqs, 2),
                            ms_per_batch=round(1000 * BATCH / seqs, 1),
                            mfu=round(mfu["fp32"], 4), mfu_bf16=round(mfu["bf16"], 4),
                            vs_keras_hub=round(vs_kh, 3), keras_hub_peer=kh,
                            vs_hf_torch=round(vs_hf, 3), hf_peer=hf,
                            vs_tfbert_fp32=round(vs_fp32, 3), spread=round(t.spread, 3),
                            seconds=[round(s, 4) for s in t.seconds]))
        xla = "XLA" if kh in (KH_XLA, KH_BF16_XLA) else "no XLA"
        rows.append([name, common.fmt(seqs), common.fmt(1000 * BATCH / seqs, 0),
                     f"{100 * mfu['fp32']:.0f}%", f"{100 * mfu['bf16']:.0f}%",
                     _ratio(vs_kh, f"{precision}, {xla}"), _ratio(vs_hf, precision),
                     "" if vs_fp32 != vs_fp32 else f"{vs_fp32:.2f}x",
                     f"{100 * t.spread:.0f}%"])
    headers = ["contender", "seq/s", "ms/batch", "MFU fp32", "MFU bf16", "vs keras-hub",
               "vs HF torch", "vs best tfbert fp32", "spread"]
    return common.markdown_table(headers, rows), records, peaks


def main(argv: list[str] | None = None) -> dict:
    common.quiet_tensorflow()
    parser = common.base_parser(__doc__.splitlines()[0], default_reps=5)
    parser.add_argument("--forward-steps", type=int, default=2,
                        help="forward batches per timed repetition (default 2)")
    parser.add_argument("--only", nargs="+", choices=ORDER, metavar="NAME",
                        help=f"a subset of the contenders: {', '.join(ORDER)}")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args(argv)
    reps = common.check_reps(args.reps)
    names = [n for n in ORDER if not args.only or n in args.only]

    machine = common.machine_info()
    log(f"machine: {machine}")
    peak_before = common.measure_matmul_peak()
    log(f"float32 matmul peak: {common.describe_peak(*peak_before)}")
    bf16_peak = common.measure_matmul_peak(dtype="bfloat16")
    log(f"bfloat16 matmul peak: {common.describe_peak(*bf16_peak)}")
    probes = [common.peak_probe(peak_before[1]),
              common.peak_probe(bf16_peak[1], dtype="bfloat16")]
    forward, train, extra = build_contenders(names, args.forward_steps)
    flops = common.encoder_flops_per_sequence(
        SEQ_LEN, MINILM["hidden_size"], MINILM["num_layers"], MINILM["intermediate_size"])

    log("forward:")
    fwd_t = common.time_interleaved([forward[n] for n in names] + probes, reps, log)
    train_t = {}
    if not args.skip_train:
        log("train:")
        train_t = common.time_interleaved([train[n] for n in names] + probes, reps, log)
    peak_after = common.measure_matmul_peak()
    log(f"float32 matmul peak after: {common.describe_peak(*peak_after)}")
    peak, peak_rates = common.merge_peaks(peak_before, peak_after)
    bf16_peak = common.merge_peaks(bf16_peak, common.measure_matmul_peak(dtype="bfloat16"))

    fwd_md, fwd_rec, fwd_peaks = make_table(fwd_t, flops)
    md = [f"Forward (batch {BATCH} x {SEQ_LEN}, {args.forward_steps} batches per repetition, "
          f"median of {reps}):", "", fwd_md]
    train_rec, train_peaks = [], {"fp32": float("nan"), "bf16": float("nan")}
    if train_t:
        train_md, train_rec, train_peaks = make_table(train_t, 3 * flops)
        md += ["", f"Train step: forward + backward + AdamW (batch {BATCH} x {SEQ_LEN}, "
               f"median of {reps}):", "", train_md]
    md += ["", f"MFU is against the float32 and the bfloat16 matmul rates measured in the "
           f"same rounds (float32: forward {fwd_peaks['fp32'] / 1e9:.0f}, train "
           f"{train_peaks['fp32'] / 1e9:.0f} GFLOP/s; bfloat16: forward "
           f"{fwd_peaks['bf16'] / 1e9:.0f}, train {train_peaks['bf16'] / 1e9:.0f} GFLOP/s); "
           f"undisturbed float32 peak (best of before/after the runs): "
           f"{common.describe_peak(peak, peak_rates)}; undisturbed bfloat16 peak (likewise): "
           f"{common.describe_peak(*bf16_peak)}; forward FLOPs per sequence: "
           f"{flops / 1e9:.3f} GFLOP (train: 3x); HF attention implementation: "
           f"{extra.get('hf_attn_implementation', 'n/a')}; load average at start: "
           f"{machine['load_at_start']}, at end: {common.load_average():.2f}."]
    markdown = "\n".join(md)
    print(markdown)
    result = dict(benchmark="encoder_speed", machine=machine,
                  versions=common.library_versions("tensorflow", "keras", "keras-hub", "torch",
                                                   "transformers"),
                  peak_flops=peak, peak_probes=peak_rates, peak_flops_bf16=bf16_peak[0],
                  peak_probes_bf16=bf16_peak[1],
                  peak_in_rounds=dict(forward=fwd_peaks, train=train_peaks),
                  flops_per_seq_forward=flops,
                  batch=BATCH, seq_len=SEQ_LEN,
                  reps=reps, forward=fwd_rec, train=train_rec, markdown=markdown, **extra)
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
