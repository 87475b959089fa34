"""The `multilabel` task: a tiny model learns which topics a text mixes, thresholds are
tuned on the validation file, and the export lists the labels over them.

Each synthetic text holds two words of each of its 1-3 topics (out of five),
so the topics are learnable in a few dozen steps of the tiny encoder.
"""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf
from conftest import make_tiny_init_dir

from tfbert.errors import ConfigError, DataError

pytestmark = pytest.mark.timeout(300)

TOPICS = {"sports": ["football", "tennis", "goal", "team", "match"],
          "food": ["bread", "cheese", "soup", "apple", "dinner"],
          "music": ["guitar", "song", "piano", "concert", "drum"],
          "travel": ["airport", "hotel", "beach", "passport", "flight"],
          "science": ["atom", "physics", "laboratory", "cell", "theory"]}
LABELS = sorted(TOPICS)


def topic_rows(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(n):
        labels = rng.sample(LABELS, rng.randint(1, 3))
        words = [w for topic in labels for w in rng.sample(TOPICS[topic], 2)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": sorted(labels)})
    return rows


def write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


def write_csv(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("text,label\n" + "".join(f"{r['text']},{'|'.join(r['label'])}\n" for r in rows))
    return str(path)


def f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    hits = float((truth & predicted).sum())
    return 2 * hits / (truth.sum() + predicted.sum()) if hits else 0.0


@pytest.fixture(scope="module")
def trained(minilm_dir, tmp_path_factory):
    from tfbert.checkpoints.model_dir import read_task_info
    from tfbert.text import load_tokenizer
    from tfbert.training.finetune import run_finetune

    root = tmp_path_factory.mktemp("multilabel")
    rng = random.Random(0)
    train = write_jsonl(root / "train.jsonl", topic_rows(640, rng))
    validation = write_csv(root / "validation.csv", topic_rows(64, rng))
    test = write_jsonl(root / "test.jsonl", topic_rows(96, rng))
    model_dir = str(root / "model")
    model = run_finetune(train, make_tiny_init_dir(minilm_dir, str(root / "init")), model_dir,
                         validation=validation, epochs=1, batch_size=16, learning_rate=1e-2,
                         warmup=0.0, max_seq_length=16, pooling="mean", task="multilabel",
                         verbose=0, compile="attention")  # compiles faster; see test_regress
    return {"root": root, "model_dir": model_dir, "model": model, "train": train,
            "validation": validation, "test": test, "info": read_task_info(model_dir),
            "tokenizer": load_tokenizer(model_dir)}


@pytest.fixture(scope="module")
def exported(trained):
    from tfbert.export.exporter import export_model

    # One warmup request per signature (not one per batch size): the check
    # replays them, and each batch size would compile the attention again.
    path, report = export_model(trained["model_dir"], "topics",
                                base=str(trained["root"] / "savedmodels"), warmup="minimal")
    return {"path": path, "report": report}


def keras_probabilities(trained, texts) -> np.ndarray:
    logits = trained["model"](trained["tokenizer"](texts), training=False)
    return tf.sigmoid(tf.cast(logits, tf.float32)).numpy()


def test_learns_the_topics_well_above_the_frequency_baseline(trained):
    from tfbert.data.classification import multi_hot, read_multilabel
    from tfbert.tasks import get

    info = trained["info"]
    m = get("multilabel").evaluate(trained["model"], trained["tokenizer"], info,
                                   trained["test"], 32)
    truth = multi_hot(read_multilabel(trained["test"]), LABELS).astype(bool)
    # The best a text-blind guess does: every label for every text (no label
    # is on half of the texts, so "each label whose frequency is over 1/2"
    # predicts nothing and scores 0).
    baseline = f1(truth, np.ones_like(truth))
    assert m["examples"] == 96 and set(m["labels"]) == set(LABELS)
    assert m["micro_f1"] > max(0.9, baseline + 0.3), (
        f"micro F1 {m['micro_f1']:.3f} vs label-frequency baseline {baseline:.3f}")
    assert m["macro_f1"] > 0.8, m
    assert m["labels"]["food"]["support"] == int(truth[:, LABELS.index("food")].sum())
    assert [m["labels"][name]["threshold"] for name in LABELS] == info.thresholds


def test_thresholds_maximise_each_labels_validation_f1(trained):
    from tfbert.data.classification import multi_hot, read_multilabel

    config = json.load(open(os.path.join(trained["model_dir"], "config.json")))
    thresholds = np.float32(config["thresholds"])
    assert config["labels"] == LABELS and len(thresholds) == len(LABELS)
    assert all(0.0 < t < 1.0 for t in thresholds)
    data = read_multilabel(trained["validation"])
    truth = multi_hot(data, LABELS).astype(bool)
    scores = keras_probabilities(trained, data.texts)
    # Brute force: no cut (every score, every midpoint, a fine grid) does better.
    for c, name in enumerate(LABELS):
        column = np.unique(scores[:, c])
        candidates = np.concatenate([column, (column[1:] + column[:-1]) / 2,
                                     np.linspace(0, 1, 1001, dtype=np.float32)])
        best = max(f1(truth[:, c], scores[:, c] > t) for t in candidates)
        assert f1(truth[:, c], scores[:, c] > thresholds[c]) == pytest.approx(best), name


def test_without_validation_every_threshold_is_one_half(trained):
    from tfbert.tasks import TaskInfo, TrainingData, get

    info = TaskInfo(task="multilabel", labels=LABELS)
    data = TrainingData(train=lambda: None, validation=None, train_size=0, info=info)
    tuned = get("multilabel").after_training(trained["model"], trained["tokenizer"], info, data)
    assert tuned.thresholds == [0.5] * len(LABELS)


def test_export_lists_the_labels_over_the_thresholds(trained, exported):
    from tfbert.saved_model import CLASSIFY_METHOD, read_signature_defs

    assert exported["report"].ok, exported["report"].summary()
    assert read_signature_defs(exported["path"])["classify"].method_name == CLASSIFY_METHOD
    texts = ["football goal soup bread", "guitar drum atom physics hotel beach", "",
             "tennis " * 30, "nothing about any topic at all"]
    loaded = tf.saved_model.load(exported["path"])
    out = loaded.signatures["serving_default"](text=tf.constant(texts))
    probabilities = out["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, keras_probabilities(trained, texts), atol=1e-5)

    thresholds = np.float32(trained["info"].thresholds)
    expected_mask = keras_probabilities(trained, texts) > thresholds
    np.testing.assert_array_equal(out["label_mask"].numpy(), expected_mask)
    labels = out["labels"].numpy()
    assert labels.shape == (len(texts), expected_mask.sum(1).max())
    for row, mask in enumerate(expected_mask):
        served = [label.decode() for label in labels[row] if label]
        assert set(served) == {LABELS[c] for c in np.flatnonzero(mask)}, texts[row]
        # Most probable first, padding ("") only at the end.
        order = [probabilities[row, LABELS.index(label)] for label in served]
        assert order == sorted(order, reverse=True)
        assert all(label == b"" for label in labels[row][len(served):])
    assert expected_mask[0, [LABELS.index("sports"), LABELS.index("food")]].all()

    example = tf.train.Example(features=tf.train.Features(feature={
        "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[texts[0].encode()]))}))
    classified = loaded.signatures["classify"](inputs=tf.constant([example.SerializeToString()]))
    assert [c.decode() for c in classified["classes"].numpy()[0]] == LABELS
    np.testing.assert_allclose(classified["scores"].numpy()[0], probabilities[0], atol=1e-6)


# -- reader and bad input ------------------------------------------------------


def test_reader_takes_lists_separated_names_and_empty_label_sets(tmp_path):
    from tfbert.data.classification import multi_hot, read_multilabel

    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "a", "label": ["sports", "politics", "sports"]}\n'
                     '{"text": "b", "label": []}\n\n{"text": "c", "label": [7]}\n')
    data = read_multilabel(jsonl)
    assert data.labels == [["sports", "politics"], [], ["7"]] and data.lines == [1, 2, 4]
    tsv = tmp_path / "b.tsv"
    tsv.write_text("text\ttext_pair\tlabel\nfirst\tx\tsports| politics\nsecond\ty\t\n")
    data = read_multilabel(tsv)
    assert (data.labels, data.pairs) == ([["sports", "politics"], []], ["x", "y"])
    np.testing.assert_array_equal(multi_hot(data, ["politics", "sports"]), [[1, 1], [0, 0]])


@pytest.mark.parametrize("name, body, line, message", [
    ("bad.jsonl", '{"text": "a", "label": ["x"]}\n{"text": "b", "label": "x"}\n'
     '{"text": "c", "label": {"x": 1}}\n', 3, "must be a list of names"),
    ("bad.jsonl", '{"text": "a", "label": ["x", null]}\n', 1, "label None must be a name"),
    ("bad.csv", "text,label\na,x|y\nb,x||y\n", 3, "field 'label' has an empty name"),
    ("bad.csv", "text,label\na,x\n,\n", 3, None),  # a missing cell is an empty text, fine
])
def test_bad_label_sets_name_the_file_and_line(tmp_path, name, body, line, message):
    from tfbert.data.classification import read_multilabel

    path = tmp_path / name
    path.write_text(body)
    if message is None:
        assert read_multilabel(path).labels == [["x"], []]
        return
    with pytest.raises(DataError) as error:
        read_multilabel(path)
    assert str(error.value).startswith(f"{path}:{line}: ")
    assert message in str(error.value)


def test_unknown_validation_label_names_file_and_line(tmp_path, trained):
    from tfbert.tasks import TaskInfo, get

    train = write_csv(tmp_path / "train.csv", [{"text": "a b", "label": ["x", "y"]},
                                               {"text": "c", "label": ["y"]}])
    validation = tmp_path / "validation.csv"
    validation.write_text("text,label\nfine,x\nalso fine,\nnew label,y|z\n")
    spec = get("multilabel")
    with pytest.raises(DataError) as error:
        spec.read_data(train, str(validation), trained["tokenizer"],
                       TaskInfo(task="multilabel"), 4, 0)
    assert str(error.value) == (f"{validation}:4: label 'z' is not one of the training labels "
                                "['x', 'y']")
    one = write_csv(tmp_path / "one.csv", [{"text": "a", "label": ["x"]}])
    with pytest.raises(DataError, match="need at least two distinct labels"):
        spec.read_data(one, None, trained["tokenizer"], TaskInfo(task="multilabel"), 4, 0)
    with pytest.raises(ConfigError, match="--long-inputs"):
        spec.read_data(train, None, trained["tokenizer"],
                       TaskInfo(task="multilabel", long_inputs="windows"), 4, 0)


def test_f1_metrics_count_the_whole_epoch_under_xla():
    import keras

    from tfbert.tasks.multilabel import MultiLabelF1

    # Logits as given (identity model), a logit over 0 is a "yes". Per label
    # (TP, FP, FN): a (2, 1, 0), b (1, 0, 2), c (0, 1, 0): micro 2*3 / (6 + 2 + 2),
    # macro (4/5 + 1/2 + 0) / 3.
    truth = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]], np.float32)
    logits = np.array([[2, 1, -1], [3, -2, 1], [0.5, -1, -3], [-1, -0.5, -2]], np.float32)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Identity()])
    model.compile(loss="mse", metrics=[MultiLabelF1(3, "micro"), MultiLabelF1(3, "macro")],
                  jit_compile=True)
    result = model.evaluate(logits, truth, batch_size=2, verbose=0, return_dict=True)
    assert result["micro_f1"] == pytest.approx(0.6, abs=1e-6)
    assert result["macro_f1"] == pytest.approx(1.3 / 3, abs=1e-6)
