"""Classification of long texts with `long_inputs="windows"`.

Each document is 40 filler words followed by one sentence that gives its
label away, so with `max_seq_length` 32 the label sits past what truncation
keeps. Two tiny classifiers (real MiniLM vocabulary, random tiny encoder) are
fine-tuned on the same data, one with windows and one with truncation; the
windowed one is exported and checked the way TF Serving loads it. The
reference for the pooled probabilities is computed here: Hugging Face's
tokenizer, windows cut in Python, the Keras model on each, the mean of the
logits, softmax.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import tensorflow as tf
import transformers
from conftest import make_tiny_init_dir

import tfbert
from tfbert.data.classification import read_classification
from tfbert.data.windowed import MAX_WINDOWS, count_windows, text_lengths
from tfbert.data.windowed import windowed_classification_dataset as windowed_dataset
from tfbert.errors import ConfigError
from tfbert.export import export_model
from tfbert.text import load_tokenizer

pytestmark = pytest.mark.timeout(300)

MAX_SEQ_LENGTH, DOC_STRIDE = 32, 15
SIZE = MAX_SEQ_LENGTH - 2  # pieces per window
FILLER = ("the a river table green house walked slowly across morning window paper city "
          "music").split()
KEYS = {"good": ["excellent", "wonderful", "superb"], "bad": ["terrible", "awful", "dreadful"]}


def documents(n: int, rng: random.Random) -> list[dict]:
    """40 filler words, then the label's sentence: 45 wordpieces, the key word 44th."""
    docs = []
    for i in range(n):
        label = ("good", "bad")[i % 2]
        filler = " ".join(rng.choice(FILLER) for _ in range(40))
        docs.append({"text": f"{filler} overall it was {rng.choice(KEYS[label])} .",
                     "label": label})
    return docs


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def runs(minilm_dir, tmp_path_factory):
    from tfbert.training.finetune import evaluate, run_finetune

    root = tmp_path_factory.mktemp("windows")
    rng = random.Random(0)
    train = write_jsonl(root / "train.jsonl", documents(48, rng))
    held_out = write_jsonl(root / "test.jsonl", documents(40, rng))
    init = make_tiny_init_dir(minilm_dir, str(root / "init"))
    out = {"root": root, "train": train, "held_out": held_out}
    for mode in ("windows", "truncate"):
        model_dir = str(root / mode)
        run_finetune(train, init, model_dir, epochs=15, batch_size=16, learning_rate=1e-2,
                     warmup=0.0, max_seq_length=MAX_SEQ_LENGTH, pooling="mean",
                     long_inputs=mode, doc_stride=DOC_STRIDE, verbose=0)
        out[mode] = {"dir": model_dir, "metrics": evaluate(model_dir, held_out)}
    return out


@pytest.fixture(scope="module")
def exported(runs):
    path, report = export_model(runs["windows"]["dir"], "long",
                                base=str(runs["root"] / "savedmodels"), warmup="minimal")
    return {"path": path, "report": report}


@pytest.fixture(scope="module")
def reference(minilm_dir):
    return transformers.BertTokenizerFast.from_pretrained(minilm_dir)


def python_window_logits(model, reference, texts: list[str]) -> np.ndarray:
    """Mean window logits per text, windows cut here from the reference's pieces."""
    windows, owner = [], []
    for i, text in enumerate(texts):
        ids = reference(text, add_special_tokens=False)["input_ids"]
        count = min(MAX_WINDOWS, 1 + math.ceil(max(0, len(ids) - SIZE) / DOC_STRIDE))
        for k in range(count):
            windows.append([reference.cls_token_id, *ids[k * DOC_STRIDE:k * DOC_STRIDE + SIZE],
                            reference.sep_token_id])
            owner.append(i)
    # One call on every window, padded to one width.
    word_ids = np.zeros((len(windows), MAX_SEQ_LENGTH), "int32")
    for row, window in enumerate(windows):
        word_ids[row, :len(window)] = window
    logits = model({"input_word_ids": word_ids, "input_mask": (word_ids != 0).astype("int32"),
                    "input_type_ids": np.zeros_like(word_ids)}, training=False).numpy()
    owner = np.array(owner)
    return np.array([logits[owner == i].mean(0) for i in range(len(texts))], np.float64)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_windows_find_the_label_past_the_truncation(runs):
    windows = runs["windows"]["metrics"]["accuracy"]
    truncate = runs["truncate"]["metrics"]["accuracy"]
    message = f"held-out accuracy: windows {windows:.3f}, truncate {truncate:.3f} (chance 0.5)"
    assert windows >= 0.85, message
    assert truncate <= 0.7, message
    assert runs["windows"]["metrics"]["examples"] == 40  # documents, not windows


def test_training_sees_every_window_with_its_documents_label(runs, minilm_dir, reference):
    data = read_classification(runs["train"])
    tokenizer = load_tokenizer(minilm_dir, max_seq_length=MAX_SEQ_LENGTH)
    ds = windowed_dataset(data, tokenizer, ["bad", "good"], batch_size=16, stride=DOC_STRIDE)
    got = [(tuple(row[mask == 1]), int(y)) for x, labels in ds
           for row, mask, y in zip(x["input_word_ids"].numpy(), x["input_mask"].numpy(),
                                   labels.numpy(), strict=True)]
    expected = []
    for text, label in zip(data.texts, data.labels, strict=True):
        ids = reference(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == 45
        expected += [((reference.cls_token_id, *ids[start:start + SIZE],
                       reference.sep_token_id), ["bad", "good"].index(label))
                     for start in (0, DOC_STRIDE)]
    assert got == expected
    assert count_windows(text_lengths(data.texts, tokenizer), SIZE, DOC_STRIDE) == len(expected)


def test_export_and_evaluate_pool_the_window_logits(runs, exported, reference):
    model, _ = tfbert.load_model(runs["windows"]["dir"])
    held_out = read_classification(runs["held_out"])
    texts = held_out.texts[:6] + ["", "a short one", "word " * 700, "Ünïcödé 北京 😀"]
    logits = python_window_logits(model, reference, texts)
    served = tf.saved_model.load(exported["path"])
    out = served.signatures["serving_default"](text=tf.constant(texts))
    np.testing.assert_allclose(out["probabilities"].numpy(), softmax(logits), atol=1e-5)
    np.testing.assert_allclose(out["logits"].numpy(), logits, atol=1e-4)
    assert out["labels"].numpy().tolist() == [[b"bad", b"good"][i]
                                              for i in logits.argmax(-1)]
    # Classify (TF Serving's Classify RPC) pools the same way.
    examples = [tf.train.Example(features=tf.train.Features(feature={"text": tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[t.encode()]))})).SerializeToString() for t in texts]
    scores = served.signatures["classify"](inputs=tf.constant(examples))["scores"].numpy()
    np.testing.assert_allclose(scores, softmax(logits), atol=1e-5)

    # evaluate pools the same way: its loss is that of the pooled probabilities.
    truth = np.array([["bad", "good"].index(y) for y in held_out.labels])
    pooled = softmax(python_window_logits(model, reference, held_out.texts))
    loss = -np.log(pooled[np.arange(len(truth)), truth]).mean()
    assert runs["windows"]["metrics"]["loss"] == pytest.approx(loss, abs=1e-5)
    assert runs["windows"]["metrics"]["accuracy"] == np.mean(pooled.argmax(-1) == truth)


def test_tfbert_check_passes_and_the_signatures_stay(exported):
    report = exported["report"]
    assert report.ok, report.problems
    assert set(report.signatures) == {"serving_default", "classify", "tokenize"}
    default = report.signatures["serving_default"]
    assert default["inputs"] == ["text"]
    assert set(default["outputs"]) == {"probabilities", "logits", "label_ids", "labels"}
    assert report.signatures["classify"]["method_name"] == "tensorflow/serving/classify"


def test_text_pairs_are_refused_with_windows(runs, tmp_path):
    from tfbert.training.finetune import run_finetune

    pairs = write_jsonl(tmp_path / "pairs.jsonl",
                        [{"text": "a", "text_pair": "b", "label": y} for y in ("x", "y")])
    with pytest.raises(ConfigError, match=r"pairs\.jsonl: long_inputs 'windows'.*text_pair"):
        run_finetune(pairs, str(runs["root"] / "init"), str(tmp_path / "out"),
                     max_seq_length=MAX_SEQ_LENGTH, long_inputs="windows", verbose=0)
