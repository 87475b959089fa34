"""bf16 accuracy: does the bf16 export predict what the fp32 export predicts?

The real pretrained all-MiniLM-L6-v2 is fine-tuned on the demo's labelled
sentences (``tfbert/demo/train.jsonl``, three topics) with the demo's
settings, and exported twice, ``precision="fp32"`` and ``precision="bf16"``.
Both SavedModels run in-process (``serving_default``, tokenization inside)
on:

- demo held-out: the demo model on ``tfbert/demo/test.jsonl``;
- less sure model: a model fine-tuned for one epoch only (its probabilities
  sit nearer the decision boundaries, where bf16 rounding flips labels
  first), on train + held-out texts;
- bf16 end to end: a model fine-tuned with ``precision="bf16"``, exported at
  bf16, against the fp32-trained demo model's fp32 export, on the held-out
  texts;
- stress, untrained head: the real encoder with a random 2-class head (its
  probabilities hover around 0.5, the worst case for label flips) on 200
  real English texts (:mod:`benchmarks.texts`); no gold labels, so only
  agreement (not part of the targets, which are about trained models).

Reported per case: texts, agreement of the predicted labels, accuracy of
each export, the change in points, and the largest probability difference.
Targets: agreement >= 99% and |change| <= 0.5 points.

Run: ``python -m benchmarks.bf16_accuracy [--json out.json]``.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

from benchmarks import common
from benchmarks.common import log


def _predict(version_dir: str, texts: list[str]) -> tuple[np.ndarray, list[str]]:
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops)

    fn = tf.saved_model.load(version_dir).signatures["serving_default"]
    probabilities, labels = [], []
    for i in range(0, len(texts), 32):
        out = fn(text=tf.constant(texts[i:i + 32]))
        probabilities.append(out["probabilities"].numpy())
        labels += [label.decode() for label in out["labels"].numpy()]
    return np.concatenate(probabilities), labels


def compare(name: str, texts: list[str], gold: list[str] | None, fp32_dir: str,
            bf16_dir: str) -> dict:
    p32, l32 = _predict(fp32_dir, texts)
    p16, l16 = _predict(bf16_dir, texts)
    if gold is None:  # agreement only
        acc32 = acc16 = float("nan")
    else:
        acc32 = float(np.mean([a == g for a, g in zip(l32, gold, strict=True)]))
        acc16 = float(np.mean([a == g for a, g in zip(l16, gold, strict=True)]))
    agreement = float(np.mean([a == b for a, b in zip(l32, l16, strict=True)]))
    return dict(case=name, texts=len(texts), agreement=agreement, accuracy_fp32=acc32,
                accuracy_bf16=acc16, change_points=100 * (acc16 - acc32),
                max_abs_prob_diff=float(np.max(np.abs(p32 - p16))),
                meets_target=None if gold is None else bool(
                    agreement >= 0.99 and abs(acc16 - acc32) <= 0.005))


def save_untrained_classifier(model_dir: str) -> None:
    """The real MiniLM encoder with a random (seeded) 2-class head, as a model directory."""
    import keras

    import tfbert
    from tfbert.checkpoints import TaskInfo, save_model
    from tfbert.demo.run import pretrained_minilm_dir
    from tfbert.text import read_vocab

    keras.utils.set_random_seed(0)
    source = pretrained_minilm_dir()
    classifier = tfbert.build_classifier(tfbert.load_encoder(source), num_classes=2)
    save_model(classifier, model_dir, TaskInfo(task="classify", labels=["a", "b"],
                                               max_seq_length=128, lowercase=True),
               read_vocab(os.path.join(source, "vocab.txt")))


def main(argv: list[str] | None = None) -> dict:
    common.quiet_tensorflow()
    parser = common.base_parser(__doc__.splitlines()[0], default_reps=5)
    parser.add_argument("--epochs", type=int, default=3, help="the demo model's epochs")
    args = parser.parse_args(argv)

    from benchmarks.texts import texts as bench_texts
    from tfbert.data.classification import read_classification
    from tfbert.demo.run import DEMO_DATA, pretrained_minilm_dir
    from tfbert.export import export_model
    from tfbert.training.finetune import run_finetune

    machine = common.machine_info()
    train, test = (os.path.join(DEMO_DATA, f) for f in ("train.jsonl", "test.jsonl"))
    held_out, labelled = read_classification(test), read_classification(train)

    def texts_and_gold(data) -> tuple[list[str], list[str]]:
        return list(data.texts), list(data.labels)

    cases = []
    with tempfile.TemporaryDirectory(prefix="tfbert-bench-bf16-") as workdir:
        def finetune(name: str, epochs: int, precision: str = "fp32") -> str:
            log(f"fine-tuning {name} ({epochs} epochs, {precision})")
            out = os.path.join(workdir, name)
            # The demo's settings (tfbert/demo/run.py).
            run_finetune(train, pretrained_minilm_dir(), out, validation=test, epochs=epochs,
                         batch_size=16, learning_rate=1e-4, max_seq_length=64, pooling="mean",
                         precision=precision, verbose=0)
            return out

        def export(model_dir: str, precision: str) -> str:
            name = f"{os.path.basename(model_dir)}_{precision}"
            path, _ = export_model(model_dir, name, base=os.path.join(workdir, "sm"),
                                   precision=precision, check=False, warmup="none")
            return path

        demo = finetune("demo", args.epochs)
        demo_fp32, demo_bf16 = export(demo, "fp32"), export(demo, "bf16")
        texts, gold = texts_and_gold(held_out)
        cases.append(compare("demo held-out", texts, gold, demo_fp32, demo_bf16))

        unsure = finetune("one_epoch", 1)
        all_texts, all_gold = texts_and_gold(labelled)
        all_texts, all_gold = all_texts + texts, all_gold + gold
        cases.append(compare("less sure model (1 epoch), train + held-out", all_texts,
                             all_gold, export(unsure, "fp32"), export(unsure, "bf16")))

        bf16_trained = finetune("bf16_trained", args.epochs, precision="bf16")
        cases.append(compare("bf16 end to end (bf16 training + bf16 export) vs fp32",
                             texts, gold, demo_fp32, export(bf16_trained, "bf16")))

        untrained = os.path.join(workdir, "untrained")
        save_untrained_classifier(untrained)
        cases.append(compare("stress: untrained head, 200 real texts", bench_texts(200),
                             None, export(untrained, "fp32"), export(untrained, "bf16")))
    for case in cases:
        log(f"{case}")
    def pct(value: float) -> str:
        return "-" if value != value else f"{100 * value:.1f}%"

    rows = [[c["case"], c["texts"], pct(c["agreement"]), pct(c["accuracy_fp32"]),
             pct(c["accuracy_bf16"]),
             "-" if c["change_points"] != c["change_points"] else f"{c['change_points']:+.1f}",
             f"{c['max_abs_prob_diff']:.3f}",
             {True: "yes", False: "**no**", None: "-"}[c["meets_target"]]] for c in cases]
    markdown = "\n".join([
        "bf16 export vs fp32 export of the same fine-tuned all-MiniLM-L6-v2 (labels from "
        "`serving_default`):", "",
        common.markdown_table(["case", "texts", "label agreement", "accuracy fp32",
                               "accuracy bf16", "change (points)", "max abs dp",
                               ">= 99% and <= 0.5 pt"], rows), "",
        f"Load average at start: {machine['load_at_start']}, at end: "
        f"{common.load_average():.2f}."])
    print(markdown)
    result = dict(benchmark="bf16_accuracy", machine=machine, reps=1, cases=cases,
                  markdown=markdown)
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
