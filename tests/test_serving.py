"""The embedded TF-Serving-compatible server, checked over real gRPC.

Protocol tests use the raw ``tensorflow_serving.apis`` stubs, as any TF
Serving client would; the ``tfbert.serving.Client`` is tested on top. The
SavedModels are tiny ``tf.Module`` exports built here with core TF ops, so
the server is exercised on SavedModels it knows nothing about.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import publish_version, wait_for
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tfbert.cli import main as tfbert_main
from tfbert.cli.serve import add_serve_arguments
from tfbert.saved_model import CLASSIFY_METHOD, read_signature_defs
from tfbert.serving import Client, ConfigError, ModelServer, ServingError, set_method_name
from tfbert.serving.batching import BatchScheduler
from tfbert.serving.configs import BatchingParameters, parse_model_server_config
from tfbert.serving.model_store import load_servable

pytestmark = pytest.mark.timeout(120)

LABELS = ["neg", "pos", "neutral"]
POLL = 0.1  # seconds between version scans in these tests
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ toy models


class _Toy(tf.Module):
    """A 3-class 'classifier' over hashed text, with the signatures of a tfbert export."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = tf.Variable(
            [[0.5, -0.3, 0.1], [-1.0, 2.0, 0.3], [0.2, 0.1, -0.4]], dtype=tf.float32
        )

    def _features(self, text):
        length = tf.cast(tf.strings.length(text), tf.float32) / 10.0
        bucket = tf.cast(tf.strings.to_hash_bucket_fast(text, 997), tf.float32) / 997.0
        return tf.stack([length, bucket, tf.ones_like(length)], axis=1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serving_default(self, text):
        features = self._features(text)
        probabilities = tf.nn.softmax(tf.matmul(features, self.kernel))
        label_ids = tf.argmax(probabilities, axis=1)  # int64
        return {
            "probabilities": probabilities,
            "label_ids": label_ids,
            "labels": tf.gather(tf.constant(LABELS), label_ids),
            "embedding": tf.math.l2_normalize(features, axis=1),
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        parsed = tf.io.parse_example(
            inputs, {"text": tf.io.FixedLenFeature([], tf.string, default_value="")}
        )
        probabilities = self.serving_default(parsed["text"])["probabilities"]
        classes = tf.tile(tf.constant([LABELS]), [tf.shape(inputs)[0], 1])
        return {"classes": classes, "scores": probabilities}

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.int64, name="ids")])
    def sum_ids(self, ids):
        return {"total": tf.reduce_sum(ids, axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def chars(self, text):
        # Strict UTF-8 decoding: invalid bytes make the op itself fail.
        decoded = tf.strings.unicode_decode(text, "UTF-8", errors="strict")
        return {"num_chars": decoded.row_lengths()}


@pytest.fixture(scope="session")
def toy_export(tmp_path_factory) -> str:
    """One toy SavedModel version directory, copied wherever a test needs versions."""
    path = str(tmp_path_factory.mktemp("toy_export") / "1")
    module = _Toy()
    tf.saved_model.save(
        module,
        path,
        signatures={
            "serving_default": module.serving_default,
            "classify": module.classify,
            "sum_ids": module.sum_ids,
            "chars": module.chars,
        },
    )
    set_method_name(path, "classify", CLASSIFY_METHOD)
    return path


# -------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def config_file(toy_export, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("models")
    for name in ("toy", "other"):
        publish_version(str(root / name), 1, toy_export)
    path = root / "models.config"
    path.write_text(
        f"""
        model_config_list {{
          config {{
            name: "toy"
            base_path: "{root / 'toy'}"
            model_platform: "tensorflow"
            version_labels {{ key: "stable" value: 1 }}
          }}
          config {{ name: "other" base_path: "{root / 'other'}" model_platform: "tensorflow" }}
        }}
        """
    )
    return str(path)


@pytest.fixture(scope="module")
def server(config_file):
    """Unbatched server for two models from a model_config_file; small limits."""
    srv = ModelServer(
        parse_model_server_config(config_file),
        port=0,
        file_system_poll_wait_seconds=POLL,
        max_request_bytes=1 << 20,
        max_request_batch_size=64,
    ).start()
    try:
        yield srv
    finally:
        srv.stop(grace=1)


@pytest.fixture(scope="module")
def batching_server(config_file):
    params = BatchingParameters(
        max_batch_size=16,
        batch_timeout_micros=20_000,
        max_enqueued_batches=100,
        num_batch_threads=2,
        allowed_batch_sizes=(4, 8, 16),
    )
    srv = ModelServer(
        parse_model_server_config(config_file),
        port=0,
        enable_batching=True,
        batching_parameters=params,
        file_system_poll_wait_seconds=POLL,
    ).start()
    try:
        yield srv
    finally:
        srv.stop(grace=1)


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def _predict_request(model="toy", texts=("good",), signature="", **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if signature:
        request.model_spec.signature_name = signature
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(list(texts), dtype=tf.string))
    return request


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def _details(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


# ---------------------------------------------------------------- happy paths


def test_predict_returns_every_output_and_model_spec(stub, toy_export):
    texts = ["a fine film", "terrible", ""]
    response = stub.Predict(_predict_request(texts=texts), timeout=10)
    assert response.model_spec.name == "toy"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    assert set(response.outputs) == {"probabilities", "label_ids", "labels", "embedding"}

    # Same numbers as running the SavedModel directly in this process.
    expected = tf.saved_model.load(toy_export).signatures["serving_default"](
        text=tf.constant(texts)
    )
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    assert probabilities.shape == (3, 3) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected["probabilities"].numpy(), rtol=1e-6)
    assert tf.make_ndarray(response.outputs["label_ids"]).dtype == np.int64
    assert list(tf.make_ndarray(response.outputs["labels"])) == list(
        expected["labels"].numpy()
    )


def test_output_filter_returns_only_the_named_outputs(stub):
    request = _predict_request()
    request.output_filter.append("labels")
    response = stub.Predict(request, timeout=10)
    assert set(response.outputs) == {"labels"}

    request.output_filter.append("no_such_output")
    code, details = _details(lambda: stub.Predict(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no_such_output" in details


def test_classify_with_example_list_and_context(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "toy"
    request.model_spec.signature_name = "classify"
    for text in (b"a fine film", b"terrible"):
        example = request.input.example_list.examples.add()
        example.features.feature["text"].bytes_list.value.append(text)
    response = stub.Classify(request, timeout=10)
    assert response.model_spec.signature_name == "classify"
    assert response.model_spec.version.value == 1
    rows = response.result.classifications
    assert len(rows) == 2
    assert [c.label for c in rows[0].classes] == LABELS
    assert sum(c.score for c in rows[0].classes) == pytest.approx(1.0, abs=1e-5)

    # The same texts through Predict give the same scores.
    predicted = tf.make_ndarray(
        stub.Predict(_predict_request(texts=["a fine film", "terrible"]), timeout=10).outputs[
            "probabilities"
        ]
    )
    np.testing.assert_allclose(
        [[c.score for c in row.classes] for row in rows], predicted, rtol=1e-6
    )

    # Context features reach every example; an example's own feature wins.
    with_context = classification_pb2.ClassificationRequest()
    with_context.model_spec.name = "toy"
    with_context.model_spec.signature_name = "classify"
    lists = with_context.input.example_list_with_context
    lists.context.features.feature["text"].bytes_list.value.append(b"terrible")
    lists.examples.add()
    own = lists.examples.add()
    own.features.feature["text"].bytes_list.value.append(b"a fine film")
    rows = stub.Classify(with_context, timeout=10).result.classifications
    np.testing.assert_allclose([c.score for c in rows[0].classes], predicted[1], rtol=1e-6)
    np.testing.assert_allclose([c.score for c in rows[1].classes], predicted[0], rtol=1e-6)


def test_classify_rejects_a_predict_signature_and_empty_input(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "toy"  # serving_default: a predict signature
    request.input.example_list.examples.add()
    code, details = _details(lambda: stub.Classify(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tensorflow/serving/classify" in details

    request.model_spec.signature_name = "classify"
    request.input.Clear()
    assert _code(lambda: stub.Classify(request, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT


def test_get_model_metadata_packs_the_signature_def_map(stub, toy_export):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "toy"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=10)
    assert response.model_spec.name == "toy" and response.model_spec.version.value == 1
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert dict(signature_map.signature_def) == read_signature_defs(os.path.join(toy_export))
    classify = signature_map.signature_def["classify"]
    assert classify.method_name == "tensorflow/serving/classify"
    assert classify.inputs["inputs"].dtype == tf.string.as_datatype_enum

    request.metadata_field[:] = ["graph_def"]
    assert _code(lambda: stub.GetModelMetadata(request, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_get_model_status_reports_available(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "toy"
    response = model_stub.GetModelStatus(request, timeout=10)
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ]
    assert response.model_version_status[0].status.error_code == 0

    request.model_spec.version.value = 9
    assert _code(lambda: model_stub.GetModelStatus(request, timeout=10)) == (
        grpc.StatusCode.NOT_FOUND
    )


def test_two_models_from_the_config_file_and_version_labels(stub):
    for model in ("toy", "other"):
        response = stub.Predict(_predict_request(model=model), timeout=10)
        assert response.model_spec.name == model
    labelled = stub.Predict(_predict_request(label="stable"), timeout=10)
    assert labelled.model_spec.version.value == 1
    code, details = _details(lambda: stub.Predict(_predict_request(label="canary"), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "canary" in details


# --------------------------------------------------------------- error codes


def test_unknown_model_version_or_signature(stub):
    assert _code(lambda: stub.Predict(_predict_request(model="nope"), timeout=10)) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert _code(lambda: stub.Predict(_predict_request(version=7), timeout=10)) == (
        grpc.StatusCode.NOT_FOUND
    )
    # TF Serving answers FAILED_PRECONDITION for an unknown Predict signature.
    code, details = _details(lambda: stub.Predict(_predict_request(signature="nope"), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and '"nope"' in details
    missing_spec = predict_pb2.PredictRequest()
    assert _code(lambda: stub.Predict(missing_spec, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_wrong_input_key_dtype_or_shape_is_invalid_argument(stub):
    wrong_key = predict_pb2.PredictRequest()
    wrong_key.model_spec.name = "toy"
    wrong_key.inputs["sentence"].CopyFrom(tf.make_tensor_proto(["x"]))
    code, details = _details(lambda: stub.Predict(wrong_key, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Sent extra: {sentence}" in details and "Missing but required: {text}" in details

    extra = _predict_request()
    extra.inputs["text_pair"].CopyFrom(tf.make_tensor_proto(["x"]))
    assert _code(lambda: stub.Predict(extra, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT

    wrong_dtype = predict_pb2.PredictRequest()
    wrong_dtype.model_spec.name = "toy"
    wrong_dtype.inputs["text"].CopyFrom(tf.make_tensor_proto([1, 2], dtype=tf.int64))
    code, details = _details(lambda: stub.Predict(wrong_dtype, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "string" in details and "int64" in details

    def ids_request(array):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "toy"
        request.model_spec.signature_name = "sum_ids"
        request.inputs["ids"].CopyFrom(tf.make_tensor_proto(array))
        return request

    ok = stub.Predict(ids_request(np.arange(8, dtype=np.int64).reshape(2, 4)), timeout=10)
    assert list(tf.make_ndarray(ok.outputs["total"])) == [6, 22]
    for bad in (np.zeros([2, 3], np.int64), np.zeros([4], np.int64), np.zeros([2, 4], np.float32)):
        assert _code(lambda b=bad: stub.Predict(ids_request(b), timeout=10)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    # A TensorProto whose bytes do not match its shape cannot be parsed.
    broken = ids_request(np.zeros([2, 4], np.int64))
    broken.inputs["ids"].tensor_content = b"\x00" * 5
    assert _code(lambda: stub.Predict(broken, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_request_is_resource_exhausted_and_too_many_rows_invalid(stub):
    huge = _predict_request(texts=["x" * (2 << 20)])
    assert _code(lambda: stub.Predict(huge, timeout=10)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    many = _predict_request(texts=["x"] * 65)
    code, details = _details(lambda: stub.Predict(many, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "64" in details
    assert stub.Predict(_predict_request(texts=["x"] * 64), timeout=10).outputs


def test_invalid_utf8_and_empty_strings(stub):
    texts = [b"\xff\xfe broken \xc3", b"", b"caf\xc3\xa9"]
    response = stub.Predict(_predict_request(texts=texts), timeout=10)
    assert tf.make_ndarray(response.outputs["probabilities"]).shape == (3, 3)

    empty_batch = stub.Predict(_predict_request(texts=[]), timeout=10)
    assert tf.make_ndarray(empty_batch.outputs["probabilities"]).shape == (0, 3)

    # A signature whose op rejects invalid UTF-8: the error reaches the
    # client as INVALID_ARGUMENT and the server keeps serving.
    code = _code(lambda: stub.Predict(_predict_request(texts=texts, signature="chars"), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    ok = stub.Predict(_predict_request(texts=[b"", b"caf\xc3\xa9"], signature="chars"), timeout=10)
    assert list(tf.make_ndarray(ok.outputs["num_chars"])) == [0, 4]


def test_server_survives_bad_requests(stub, model_stub):
    bad_calls = [
        lambda: stub.Predict(predict_pb2.PredictRequest(), timeout=10),
        lambda: stub.Predict(_predict_request(signature="__saved_model_init_op"), timeout=10),
        lambda: stub.Classify(classification_pb2.ClassificationRequest(), timeout=10),
        lambda: stub.Regress(regression_pb2.RegressionRequest(), timeout=10),
        lambda: model_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(), timeout=10),
    ]
    for call in bad_calls:
        assert _code(call) in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.UNIMPLEMENTED,
        )
    assert stub.Predict(_predict_request(), timeout=10).model_spec.version.value == 1


# ----------------------------------------------------------- version handling


@pytest.fixture
def live(toy_export, tmp_path):
    """A server on a base path the test edits while it runs."""
    base = str(tmp_path / "live")
    publish_version(base, 1, toy_export)
    srv = ModelServer(model_name="live", model_base_path=base, file_system_poll_wait_seconds=POLL)
    srv.start()
    try:
        with Client(srv.address) as client:
            yield srv, client, base
    finally:
        srv.stop(grace=1)


def _predict_version(srv) -> int:
    with grpc.insecure_channel(srv.address) as ch:
        response = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(
            _predict_request(model="live"), timeout=10
        )
    return response.model_spec.version.value


def test_new_version_is_served_without_restart(live, toy_export):
    srv, client, base = live
    assert _predict_version(srv) == 1
    publish_version(base, 2, toy_export)
    wait_for(lambda: _predict_version(srv) == 2, what="version 2")
    states = {s["version"]: s["state"] for s in client.status("live")}
    assert states == {2: "AVAILABLE", 1: "END"}  # latest-1 policy unloads version 1
    with pytest.raises(ServingError) as info:
        client.predict("live", ["x"], version=1)
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_version_being_written_is_not_loaded(live, toy_export):
    srv, client, base = live
    # A temp sibling (complete, but not yet renamed) and a numeric directory
    # without saved_model.pb: neither is a version yet.
    shutil.copytree(toy_export, os.path.join(base, ".tmp-5"))
    shutil.copytree(toy_export, os.path.join(base, "tmp6"))
    partial = os.path.join(base, "7")
    shutil.copytree(toy_export, partial, ignore=shutil.ignore_patterns("saved_model.pb"))
    time.sleep(POLL * 8)
    assert _predict_version(srv) == 1
    assert [s["version"] for s in client.status("live")] == [1]

    shutil.copy(os.path.join(toy_export, "saved_model.pb"), partial)
    wait_for(lambda: _predict_version(srv) == 7, what="version 7 once complete")


def test_a_broken_version_is_reported_and_the_old_one_kept(live):
    srv, client, base = live
    broken = os.path.join(base, "3")
    os.makedirs(broken)
    with open(os.path.join(broken, "saved_model.pb"), "wb") as f:
        f.write(b"not a protobuf")
    wait_for(
        lambda: any(s["version"] == 3 and s["error_message"] for s in client.status("live")),
        what="failed load of version 3",
    )
    [state] = client.status("live", version=3)
    assert state["state"] == "END" and state["error_code"] != 0
    assert _predict_version(srv) == 1


# ------------------------------------------------------------------ concurrency


def _concurrent_predictions(address: str, texts: list[str], threads: int = 16):
    def one(text: str):
        with grpc.insecure_channel(address) as ch:
            response = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(
                _predict_request(texts=[text]), timeout=30
            )
        return (
            tf.make_ndarray(response.outputs["probabilities"])[0],
            tf.make_ndarray(response.outputs["labels"])[0],
        )

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, texts))


def test_concurrent_clients_with_and_without_batching(server, batching_server):
    texts = [f"text number {i} " + "x" * (i % 7) for i in range(16 * 6)]
    with Client(server.address) as client:  # one request at a time, unbatched
        reference = [client.predict("toy", [text]) for text in texts]
    for srv in (server, batching_server):
        results = _concurrent_predictions(srv.address, texts)
        np.testing.assert_allclose(
            np.stack([r[0] for r in results]),
            np.concatenate([ref["probabilities"] for ref in reference]),
            rtol=1e-5,
            atol=1e-7,
        )
        assert [r[1].decode() for r in results] == [ref["labels"][0] for ref in reference]
    stats = batching_server.batcher.stats
    assert stats.max_tasks_in_batch > 1, "concurrent requests were never merged"
    assert stats.tasks >= len(texts)


def test_batching_merges_rank2_inputs_and_classify(batching_server):
    def sum_ids(i: int):
        with Client(batching_server.address) as client:
            ids = np.full([1 + i % 3, 4], i, dtype=np.int64)
            return client.predict("toy", {"ids": ids}, signature="sum_ids")["total"].tolist()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        totals = list(pool.map(sum_ids, range(24)))
    assert totals == [[4 * i] * (1 + i % 3) for i in range(24)]

    with Client(batching_server.address) as client:
        rows = client.classify("toy", ["a", "b", ""])
    assert len(rows) == 3 and [label for label, _ in rows[0]] == LABELS


def test_batch_queue_full_is_unavailable_and_oversized_task_invalid():
    params = BatchingParameters(
        max_batch_size=2, batch_timeout_micros=0, max_enqueued_batches=1, num_batch_threads=1
    )
    scheduler = BatchScheduler(params)
    release = concurrent.futures.Future()

    def slow(inputs):
        release.result(timeout=10)
        return {"y": inputs["x"] * 2}

    row = {"x": np.ones([2])}
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            running = pool.submit(scheduler.run, "k", slow, row)  # occupies the only thread
            wait_for(lambda: scheduler.stats.batches == 1, what="first batch to start")
            queued = pool.submit(scheduler.run, "k", slow, row)  # fills the queue
            wait_for(lambda: scheduler.queued_batches() == 1, what="second task queued")
            with pytest.raises(Exception) as info:
                scheduler.run("k", slow, row)
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(Exception) as info:
                scheduler.run("k", slow, {"x": np.ones([3])})
            assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
            release.set_result(None)
            assert running.result(timeout=10)["y"].tolist() == [2, 2]
            assert queued.result(timeout=10)["y"].tolist() == [2, 2]
    finally:
        if not release.done():
            release.set_result(None)
        scheduler.stop()


def test_batched_bad_request_does_not_fail_its_neighbours(batching_server):
    def call(text: bytes):
        try:
            with Client(batching_server.address) as client:
                return client.predict("toy", {"text": [text]}, signature="chars")["num_chars"][0]
        except ServingError as exc:
            return exc.code

    texts = [b"ok", b"\xff", b"fine", b"caf\xc3\xa9"] * 4
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, texts))
    assert results == [2, grpc.StatusCode.INVALID_ARGUMENT, 4, 4] * 4


# ---------------------------------------------------------------------- client


def test_client_round_trip(server):
    with Client(server.address) as client:
        outputs = client.predict("toy", ["a fine film", "terrible", ""])
        assert outputs["probabilities"].shape == (3, 3)
        assert all(isinstance(label, str) and label in LABELS for label in outputs["labels"])
        assert outputs["label_ids"].dtype == np.int64

        rows = client.classify("toy", ["a fine film", "terrible"])
        np.testing.assert_allclose(
            [[score for _, score in row] for row in rows],
            outputs["probabilities"][:2],
            rtol=1e-6,
        )
        embedding = client.embed("toy", ["a", "bb"])
        np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5)

        meta = client.metadata("toy")
        assert meta["version"] == 1
        assert meta["signatures"]["serving_default"]["inputs"] == {
            "text": {"dtype": "DT_STRING", "shape": [-1]}
        }
        assert meta["signatures"]["classify"]["method_name"] == CLASSIFY_METHOD
        assert client.status("toy") == [
            {"version": 1, "state": "AVAILABLE", "error_code": 0, "error_message": ""}
        ]
        with pytest.raises(ServingError) as info:
            client.predict("missing", ["x"])
        assert info.value.code == grpc.StatusCode.NOT_FOUND and "missing" in str(info.value)


def test_bad_configs_fail_with_one_clear_line(tmp_path, toy_export):
    relative = tmp_path / "relative.config"
    relative.write_text('model_config_list { config { name: "a" base_path: "models/a" } }')
    with pytest.raises(ConfigError, match="absolute"):
        parse_model_server_config(str(relative))
    typo = tmp_path / "typo.config"
    typo.write_text('model_config_list { config { name: "a" base_pth: "/x" } }')
    with pytest.raises(ConfigError, match="base_pth"):
        parse_model_server_config(str(typo))
    with pytest.raises(ConfigError, match="base path"):
        ModelServer(model_name="a", model_base_path=str(tmp_path / "nowhere")).start()


def test_load_servable_keeps_signature_method_names(toy_export):
    servable = load_servable("toy", 1, toy_export)
    assert servable.signature_defs["classify"].method_name == CLASSIFY_METHOD
    assert servable.signature_defs["serving_default"].method_name == "tensorflow/serving/predict"
    out = servable.run("sum_ids", {"ids": np.ones([1, 4], np.int64)})
    assert out["total"].tolist() == [4]


# -------------------------------------------------------------- process level


def test_serve_process_prints_ready_line_and_exits_0_on_sigterm(toy_export, tmp_path):
    base = tmp_path / "demo"
    publish_version(str(base), 3, toy_export)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    stderr = open(tmp_path / "stderr.txt", "w+")  # a file never fills up and blocks the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfbert", "serve", "--port", "0", "--model_name", "demo",
         "--model_base_path", str(base), "--enable_batching=true",
         "--batching_parameters_file", os.path.join(REPO, "docker", "batching_parameters.txt")],
        stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO, env=env,
    )
    try:
        line = proc.stdout.readline()
        if not line.startswith("tfbert serve: serving demo version 3 on 127.0.0.1:"):
            stderr.seek(0)
            pytest.fail(f"no ready line: {line!r}\n{stderr.read()[-3000:]}")
        address = line.rsplit(" ", 1)[1].strip()
        with Client(address) as client:
            assert client.predict("demo", ["hello"])["labels"][0] in LABELS
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        stderr.close()


def _parse(add_arguments, argv):
    return add_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_query_prints_json(server, capsys):
    assert tfbert_main(["query", "--server", server.address, "--model", "toy",
                        "good", "bad"]) == 0
    outputs = json.loads(capsys.readouterr().out)
    assert len(outputs["probabilities"]) == 2 and set(outputs["labels"]) <= set(LABELS)

    assert tfbert_main(["query", "--server", server.address, "--model", "toy",
                        "--classify", "good"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert [c["label"] for c in row["classes"]] == LABELS

    # A failed RPC is a user error: one line, exit status 2.
    assert tfbert_main(["query", "--server", server.address, "--model", "nope", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tfbert query: error: ") and "NOT_FOUND" in err


def test_serve_flags_mirror_tf_serving_and_bad_setups_exit_2(tmp_path, capsys):
    args = _parse(add_serve_arguments, ["--enable_batching=false", "--port=9000"])
    assert args.enable_batching is False and args.port == 9000 and args.host == "127.0.0.1"
    assert _parse(add_serve_arguments, ["--enable_batching"]).enable_batching is True

    assert tfbert_main(["serve"]) == 2
    assert tfbert_main(["serve", "--model_base_path", str(tmp_path / "no")]) == 2
    bad = tmp_path / "batching.txt"
    bad.write_text("max_batch_size { value: 0 }")
    argv = ["serve", "--model_base_path", str(tmp_path), "--enable_batching",
            "--batching_parameters_file", str(bad)]
    assert tfbert_main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.startswith("tfbert serve: error: ") for line in lines] == [True] * 3
