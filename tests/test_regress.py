"""The `regress` task: a tiny model learns a score from text through `tfbert finetune`,
`tfbert evaluate` reports it, and the export answers Predict and TF Serving's Regress
signature with the Keras model's numbers.

The score is the fraction of "good" words in a text, so held-out texts have
a known answer; mean pooling makes it easy to learn for the tiny encoder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_tiny_init_dir

from tfbert.errors import DataError

pytestmark = pytest.mark.timeout(300)

GOOD = ["good", "great", "happy", "nice", "love", "best"]
OTHER = ["table", "river", "paper", "window", "green", "music", "city", "train", "stone",
         "chair"]


def score_rows(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(n):
        share, length = rng.random(), rng.randint(4, 8)
        words = [rng.choice(GOOD) if rng.random() < share else rng.choice(OTHER)
                 for _ in range(length)]
        rows.append({"text": " ".join(words), "label": sum(w in GOOD for w in words) / length})
    return rows


def write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


def spearman_reference(x, y) -> float:
    """Spearman by definition, independent of tfbert: ranks by counting, then np.corrcoef."""
    def ranks(v):
        v = np.asarray(v, np.float64)
        return np.array([(v < a).sum() + ((v == a).sum() + 1) / 2 for a in v])
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


@pytest.fixture(scope="module")
def trained(minilm_dir, tmp_path_factory):
    """One CLI fine-tuning run (and `tfbert evaluate` on held-out texts), shared."""
    import tfbert
    from tfbert.cli import main

    root = tmp_path_factory.mktemp("regress")
    rng = random.Random(0)
    train = write_jsonl(root / "train.jsonl", score_rows(512, rng))
    # The validation file is CSV with the `score` alias for the target column.
    validation = root / "validation.csv"
    rows = score_rows(48, rng)
    validation.write_text("text,score\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
    test = write_jsonl(root / "test.jsonl", score_rows(96, rng))
    model_dir = str(root / "model")
    init = make_tiny_init_dir(minilm_dir, str(root / "init"))
    assert main(["finetune", "--task", "regress", "--train", train, "--validation",
                 str(validation), "--init", init, "--output", model_dir, "--epochs", "1",
                 "--batch-size", "16", "--learning-rate", "3e-3", "--warmup", "0",
                 "--max-seq-length", "16", "--pooling", "mean",
                 # The task's callback adds val_spearman before --save-best looks.
                 "--save-best", "--monitor", "val_spearman",
                 # A train step without whole-step XLA compiles in half the
                 # time; other tests cover --compile whole.
                 "--compile", "attention"]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["evaluate", "--model", model_dir, "--data", test]) == 0
    model, _ = tfbert.load_model(model_dir)
    return {"root": root, "model_dir": model_dir, "validation": str(validation),
            "test": test, "metrics": json.loads(out.getvalue()), "model": model,
            "tokenizer": tfbert.load_tokenizer(model_dir)}


@pytest.fixture(scope="module")
def exported(trained):
    from tfbert.export.exporter import export_model

    # One warmup request per signature (not one per batch size): the check
    # replays them, and each batch size would compile the attention again.
    path, report = export_model(trained["model_dir"], "scores",
                                base=str(trained["root"] / "savedmodels"), warmup="minimal")
    return {"path": path, "report": report}


def test_learns_the_score_of_held_out_texts(trained):
    m = trained["metrics"]
    assert m["examples"] == 96
    assert m["pearson"] > 0.8, m
    assert m["spearman"] > 0.8, m
    # The fraction is in [0, 1] with variance about 1/12; a constant guess has MSE ~0.08.
    assert m["mse"] < 0.03, m


def test_history_has_mse_pearson_and_validation_spearman(trained):
    from tfbert.data.classification import read_regression

    history = json.load(open(os.path.join(trained["model_dir"], "history.json")))
    assert [r["epoch"] for r in history] == [1]
    for record in history:
        for key in ("loss", "mse", "pearson", "val_loss", "val_mse", "val_pearson",
                    "val_spearman"):
            assert isinstance(record[key], float), (key, record)
        assert record["loss"] == pytest.approx(record["mse"], rel=1e-5)
    # The shipped (last) epoch's val_spearman is the model's on the validation file.
    data = read_regression(trained["validation"])
    scores = trained["model"](trained["tokenizer"](data.texts), training=False)
    expected = spearman_reference(data.targets, np.asarray(scores))
    assert history[-1]["shipped"] is True
    assert history[-1]["val_spearman"] == pytest.approx(expected, abs=1e-3)
    assert history[-1]["val_pearson"] == pytest.approx(
        np.corrcoef(data.targets, np.asarray(scores))[0, 1], abs=1e-3)


def test_export_scores_match_keras_and_the_regress_signature(trained, exported):
    from tfbert.saved_model import REGRESS_METHOD, read_signature_defs

    assert exported["report"].ok, exported["report"].summary()
    signatures = read_signature_defs(exported["path"])
    assert signatures["regress"].method_name == REGRESS_METHOD
    # TF Serving's regressor: one input `inputs`, one float output `outputs`.
    assert list(signatures["regress"].inputs) == ["inputs"]
    assert list(signatures["regress"].outputs) == ["outputs"]

    texts = ["good great love", "table river stone chair", "nice music happy city", "",
             "best " * 40]
    expected = trained["model"](trained["tokenizer"](texts), training=False).numpy()
    loaded = tf.saved_model.load(exported["path"])
    served = loaded.signatures["serving_default"](text=tf.constant(texts))["score"].numpy()
    assert served.shape == (len(texts),) and served.dtype == np.float32
    np.testing.assert_allclose(served, expected, atol=1e-5)

    examples = [tf.train.Example(features=tf.train.Features(feature={
        "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[t.encode()]))}))
        .SerializeToString() for t in texts]
    regressed = loaded.signatures["regress"](inputs=tf.constant(examples))["outputs"].numpy()
    assert regressed.shape == (len(texts),) and regressed.dtype == np.float32
    np.testing.assert_allclose(regressed, expected, atol=1e-5)


def test_pair_signatures_read_text_pair(trained):
    from tfbert.tasks import TaskInfo, get

    # A model trained on pairs exports `text` + `text_pair` inputs, and its
    # `regress` signature reads both features of each tf.Example.
    info = TaskInfo(task="regress", pair_input=True)
    endpoints = get("regress").endpoints(trained["model"], trained["tokenizer"], info)
    texts, pairs = ["good great", "table river"], ["chair stone", "best love nice"]
    expected = trained["model"](trained["tokenizer"](texts, pairs=pairs), training=False).numpy()
    predict, signature = endpoints["serving_default"]
    assert [spec.name for spec in signature] == ["text", "text_pair"]
    np.testing.assert_allclose(predict(tf.constant(texts), tf.constant(pairs))["score"], expected,
                               atol=1e-5)
    examples = [tf.train.Example(features=tf.train.Features(feature={
        key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
        for key, value in (("text", t), ("text_pair", p))})).SerializeToString()
        for t, p in zip(texts, pairs, strict=True)]
    regress, _ = endpoints["regress"]
    np.testing.assert_allclose(regress(tf.constant(examples))["outputs"], expected, atol=1e-5)


def test_reader_takes_numbers_strings_and_the_score_alias(tmp_path):
    from tfbert.data.classification import read_regression

    jsonl = write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "text_pair": "y", "label": 3},
                                               {"text": "z", "text_pair": "w", "score": "-1.5"}])
    data = read_regression(jsonl)
    assert (data.texts, data.pairs, data.targets, data.lines) == (
        ["x", "z"], ["y", "w"], [3.0, -1.5], [1, 2])
    tsv = tmp_path / "b.tsv"
    tsv.write_text("score\ttext\n4.25\tfirst\n 0 \tsecond\n")
    assert read_regression(tsv).targets == [4.25, 0.0]


@pytest.mark.parametrize("name, body, line, message", [
    ("bad.csv", "text,label\nfine,1.0\nnot a number,abc\n", 3,
     "field 'label' must be a finite number, got 'abc'"),
    ("bad.csv", "text,label\nfine,1.0\nempty,\n", 3, "field 'label' must be a finite number"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b", "label": true}\n', 3,
     "field 'label' must be a finite number, got True"),
    ("bad.jsonl", '{"text": "a", "label": "nan"}\n', 1, "must be a finite number"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', 2,
     "field 'label' (or 'score') missing"),
])
def test_bad_targets_name_the_file_and_line(tmp_path, name, body, line, message):
    from tfbert.data.classification import read_regression

    path = tmp_path / name
    path.write_text(body)
    with pytest.raises(DataError) as error:
        read_regression(path)
    assert str(error.value).startswith(f"{path}:{line}: ")
    assert message in str(error.value)


def test_csv_without_a_target_column_is_refused(tmp_path):
    from tfbert.data.classification import read_regression

    path = tmp_path / "no_target.csv"
    path.write_text("text,value\na,1\n")
    with pytest.raises(DataError, match=r"no_target.csv:1: header has no 'label' or 'score'"):
        read_regression(path)


def test_pearson_metric_counts_the_whole_epoch_under_xla():
    import keras

    from tfbert.tasks.regress import PearsonCorrelation

    # An identity model: the predictions are x. Batches of 2 over 4 examples;
    # a per-batch correlation would be +-1, the epoch's is (by hand, centred
    # x (-1.5, -0.5, 0.5, 1.5), y (-1.5, 0.5, -0.5, 1.5)) 4 / 5.
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, kernel_initializer="ones",
                                                                    bias_initializer="zeros")])
    model.compile(loss="mse", metrics=[PearsonCorrelation()], jit_compile=True)
    x = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
    y = np.array([1.0, 3.0, 2.0, 4.0], np.float32)
    result = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    assert result["pearson"] == pytest.approx(0.8, abs=1e-6)


def test_tfbert_serve_answers_the_regress_rpc_and_rest_regress(trained, exported):
    import requests
    from tensorflow_serving.apis import prediction_service_pb2_grpc, regression_pb2

    from tfbert.serving import ModelServer

    texts = ["good great love", "table river stone chair", "nice music happy"]
    expected = trained["model"](trained["tokenizer"](texts), training=False).numpy()
    base = os.path.dirname(exported["path"])
    with ModelServer(model_name="scores", model_base_path=base, rest_api_port=-1) as server:
        request = regression_pb2.RegressionRequest()
        request.model_spec.name = "scores"
        request.model_spec.signature_name = "regress"
        for text in texts:
            example = request.input.example_list.examples.add()
            example.features.feature["text"].bytes_list.value.append(text.encode())
        with grpc.insecure_channel(server.address) as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Regress(
                request, timeout=60)
        np.testing.assert_allclose([r.value for r in response.result.regressions], expected,
                                   atol=1e-5)
        answer = requests.post(
            f"http://127.0.0.1:{server.rest_port}/v1/models/scores:regress",
            json={"signature_name": "regress", "examples": [{"text": t} for t in texts]},
            timeout=60)
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["results"], expected, atol=1e-5)
