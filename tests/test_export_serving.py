"""The main path: fit -> export -> check -> `tfbert serve` -> gRPC query.

A tiny classifier (real MiniLM vocabulary, random tiny encoder) is
fine-tuned with `run_finetune`, exported, loaded the way TF Serving loads it,
served on an ephemeral 127.0.0.1 port and queried with the raw
`tensorflow_serving.apis` stubs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import TOPIC_TRAIN as TRAIN
from conftest import make_tiny_init_dir, write_topic_train
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

import tfbert
from tfbert.checkpoints import TaskInfo, save_model
from tfbert.export import check_saved_model, export_model
from tfbert.serving import serve
from tfbert.text import load_tokenizer, read_vocab

pytestmark = pytest.mark.timeout(300)

TEXTS = ["The match ended with a late goal.", "A new laptop with a faster chip.",
         "Ünïcödé café — 北京 😀", "", "   ", "goal " * 200]


@pytest.fixture(scope="module")
def exported(minilm_dir, tmp_path_factory):
    from tfbert.training.finetune import run_finetune

    root = tmp_path_factory.mktemp("main_path")
    init = make_tiny_init_dir(minilm_dir, str(root / "init"))
    train = write_topic_train(root / "train.jsonl")
    model_dir = str(root / "clf")
    run_finetune(train, init, model_dir, validation=str(train), epochs=2, batch_size=4,
                 learning_rate=1e-3, max_seq_length=32, verbose=0)
    path, report = export_model(model_dir, "clf", base=str(root / "savedmodels"),
                                warmup="none")  # warmup: tests/test_warmup.py
    model, _ = tfbert.load_model(model_dir)
    tokenizer = load_tokenizer(model_dir)
    expected = tf.nn.softmax(model(tokenizer(TEXTS), training=False)).numpy()
    return {"root": root, "model_dir": model_dir, "path": path, "report": report,
            "expected": expected}


@pytest.fixture(scope="module")
def server(exported):
    srv = serve("clf", os.path.dirname(exported["path"]), port=0)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(server.address)
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel))
    channel.close()


def _predict(stub, signature: str, texts: list[str]) -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "clf"
    request.model_spec.signature_name = signature
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
    response = stub.Predict(request, timeout=60)
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def test_history_and_export_layout(exported):
    history = json.load(open(os.path.join(exported["model_dir"], "history.json")))
    assert [r["epoch"] for r in history] == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history[0])
    path = exported["path"]
    assert os.path.basename(path) == "1"
    assert os.listdir(os.path.dirname(path)) == ["1"]  # no temporary sibling left
    assert read_vocab(os.path.join(path, "assets", "vocab.txt"))[:1] == ["[PAD]"]
    assert open(os.path.join(path, "assets", "labels.txt")).read().split() == ["sports", "tech"]


def test_check_passes_and_names_the_xla_flags(exported):
    report = exported["report"]
    assert report.ok, report.problems
    assert report.signatures["classify"]["method_name"] == "tensorflow/serving/classify"
    assert set(report.signatures) == {"serving_default", "classify", "tokenize"}
    assert "--xla_cpu_compilation_enabled=true" in report.server_flags()
    assert "FastWordpieceTokenizeWithOffsets" in report.text_ops


def test_tf1_loader_in_a_clean_process_gives_python_predictions(exported):
    script = textwrap.dedent("""
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # noqa: F401
        texts = json.loads(sys.argv[2])
        with tf.compat.v1.Session(graph=tf.Graph()) as session:
            meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], sys.argv[1])
            sig = meta.signature_def["serving_default"]
            probs = session.run(sig.outputs["probabilities"].name,
                                {sig.inputs["text"].name: texts})
        # (`import tensorflow` itself loads keras; nothing of ours may load.)
        others = sorted(m.split(".")[0] for m in sys.modules
                        if m.split(".")[0] in ("tfbert", "keras_hub", "torch"))
        print(json.dumps({"probabilities": probs.tolist(), "others": sorted(set(others))}))
    """)
    run = subprocess.run([sys.executable, "-I", "-c", script, exported["path"],
                          json.dumps(TEXTS)], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["others"] == []
    np.testing.assert_allclose(out["probabilities"], exported["expected"], atol=1e-5)


def test_served_predict_equals_python_predictions(stubs, exported):
    out = _predict(stubs[0], "serving_default", TEXTS)
    np.testing.assert_allclose(out["probabilities"], exported["expected"], atol=1e-5)
    names = np.array(["sports", "tech"])
    assert [s.decode() for s in out["labels"]] == list(names[exported["expected"].argmax(-1)])
    assert out["label_ids"].dtype == np.int64


def test_tokenization_inside_equals_load_tokenizer(stubs, exported):
    served = _predict(stubs[0], "tokenize", TEXTS)
    local = load_tokenizer(exported["model_dir"])(TEXTS)
    for key in ("input_word_ids", "input_mask", "input_type_ids"):
        np.testing.assert_array_equal(served[key], local[key].numpy())
    assert served["input_word_ids"].shape[1] == 32  # the long text is capped


def test_classify_rpc_over_tf_examples(stubs, exported):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "clf"
    request.model_spec.signature_name = "classify"
    for text in TEXTS[:2]:
        example = request.input.example_list.examples.add()
        example.features.feature["text"].bytes_list.value.append(text.encode())
    response = stubs[0].Classify(request, timeout=60)
    rows = response.result.classifications
    assert [[c.label for c in row.classes] for row in rows] == [["sports", "tech"]] * 2
    scores = np.array([[c.score for c in row.classes] for row in rows])
    np.testing.assert_allclose(scores, exported["expected"][:2], atol=1e-5)


def test_metadata_and_status(stubs):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "clf"
    request.metadata_field.append("signature_def")
    response = stubs[0].GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    default = signatures.signature_def["serving_default"]
    assert list(default.inputs) == ["text"]
    assert {"probabilities", "logits", "label_ids", "labels"} <= set(default.outputs)
    assert signatures.signature_def["classify"].method_name == "tensorflow/serving/classify"

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "clf"
    versions = stubs[1].GetModelStatus(status, timeout=30).model_version_status
    assert [(v.version, v.state) for v in versions] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def test_unknown_model_is_not_found(stubs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "nope"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(["x"]))
    with pytest.raises(grpc.RpcError) as err:
        stubs[0].Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_next_export_gets_the_next_version_without_xla(exported):
    path, report = export_model(exported["model_dir"], "clf",
                                base=str(exported["root"] / "savedmodels"), xla=False,
                                warmup="none")
    assert os.path.basename(path) == "2"
    assert report.ok and report.server_flags() == []
    loaded = tf.saved_model.load(path)
    probs = loaded.signatures["serving_default"](text=tf.constant(TEXTS))["probabilities"]
    np.testing.assert_allclose(probs.numpy(), exported["expected"], atol=1e-5)


def test_pair_classifier_takes_text_pair(minilm_dir, tmp_path):
    vocab = read_vocab(os.path.join(minilm_dir, "vocab.txt"))
    config = tfbert.BertConfig.from_preset("tiny", vocab_size=len(vocab), hidden_size=32,
                                           num_heads=2, intermediate_size=64)
    clf = tfbert.build_classifier(tfbert.build_encoder(config), 3)
    info = TaskInfo(task="classify", labels=["entail", "neutral", "contradict"],
                    max_seq_length=48, pair_input=True)
    save_model(clf, tmp_path / "nli", info, vocab)
    path, report = export_model(tmp_path / "nli", "nli", base=tmp_path / "sm", warmup="none")
    assert report.ok and report.signatures["serving_default"]["inputs"] == ["text", "text_pair"]
    a, b = ["A man plays guitar.", "Rain again"], ["Someone makes music.", ""]
    served = tf.saved_model.load(path).signatures["serving_default"](
        text=tf.constant(a), text_pair=tf.constant(b))
    tokenizer = load_tokenizer(tmp_path / "nli")
    expected = tf.nn.softmax(clf(tokenizer(a, pairs=b))).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)


def test_encoder_export_embedding_matches_sentence_transformers_pooling(minilm_dir, tmp_path):
    import torch
    from transformers import BertModel, BertTokenizerFast

    path, report = export_model(minilm_dir, "minilm", base=tmp_path, warmup="none")
    assert report.ok
    texts = ["A man is eating food.", "Ein Mann isst Essen — ça va?", "我喜欢自然语言处理"]
    served = tf.saved_model.load(path).signatures["serving_default"](text=tf.constant(texts))

    tokenizer = BertTokenizerFast.from_pretrained(minilm_dir)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = BertModel.from_pretrained(minilm_dir).eval()(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    reference = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    np.testing.assert_allclose(served["embedding"].numpy(), reference.numpy(), atol=1e-4)
    norms = np.linalg.norm(served["embedding"].numpy(), axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_check_rejects_python_ops(tmp_path):
    class WithPython(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            lengths = tf.py_function(lambda t: tf.strings.length(t), [text], tf.int32)
            return {"length": lengths}

    module = WithPython()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
    report = check_saved_model(tmp_path / "1")
    assert not report.ok
    assert any("EagerPyFunc" in p for p in report.problems), report.problems


def _cli(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tfbert", *args], capture_output=True,
                          text=True, timeout=240, cwd=cwd)


def test_cli_bad_input_gives_one_clear_line(tmp_path, exported):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": "no label here"}\n')
    run = _cli("finetune", "--train", str(bad), "--init", exported["model_dir"],
               "--output", str(tmp_path / "out"))
    assert run.returncode != 0
    assert f"{bad}:2: field 'label' missing" in run.stderr.strip().splitlines()[-1]

    run = _cli("export", "--model", str(tmp_path / "missing"), "--name", "x",
               "--base", str(tmp_path / "sm"))
    assert run.returncode != 0
    assert "not a directory" in run.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "sm" / "x").exists() or not os.listdir(tmp_path / "sm" / "x")


def test_cli_check_and_evaluate(exported, tmp_path):
    run = _cli("check", exported["path"])
    assert run.returncode == 0, run.stderr[-2000:]
    assert "OK for TF Serving" in run.stdout and "--xla_gpu_compilation_enabled=true" in run.stdout
    data = tmp_path / "eval.csv"
    data.write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in TRAIN))
    run = _cli("evaluate", "--model", exported["model_dir"], "--data", str(data))
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads(run.stdout)
    assert metrics["examples"] == len(TRAIN)
    assert set(metrics["labels"]) == {"sports", "tech"}
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0


def test_export_of_a_model_with_few_positions_stays_within_them(minilm_dir, tmp_path):
    # A converted model with 64 positions: the export must not pack 128 tokens.
    vocab = read_vocab(os.path.join(minilm_dir, "vocab.txt"))
    config = tfbert.BertConfig.from_preset("tiny", vocab_size=len(vocab), hidden_size=32,
                                           num_heads=2, intermediate_size=64,
                                           max_position_embeddings=64)
    model_dir = save_model(tfbert.build_encoder(config), str(tmp_path / "enc"),
                           TaskInfo(task="encoder"), vocab)
    path, report = export_model(model_dir, "short", base=str(tmp_path / "savedmodels"),
                                xla=False, warmup="none")
    assert report.ok, report.problems
    tokenize = tf.saved_model.load(path).signatures["tokenize"]
    assert tokenize(text=tf.constant(["word " * 300]))["input_word_ids"].shape[1] == 64
    with pytest.raises(tfbert.ExportError, match="exceeds the model's 64 positions"):
        export_model(model_dir, "short", base=str(tmp_path / "savedmodels"),
                     max_seq_length=100)
