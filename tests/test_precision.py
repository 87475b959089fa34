"""bf16 training and export, the compile modes, and the hardware check.

A tiny classifier (real MiniLM vocabulary, random tiny encoder) is fine-tuned
at fp32 and at bf16 from the same start, exported at both precisions and in
the compile modes, checked the way TF Serving loads it, and served over gRPC.
"""

from __future__ import annotations

import json
import os
import re
import warnings

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_tiny_init_dir, write_topic_train
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import tfbert
from tfbert import precision
from tfbert.errors import ConfigError
from tfbert.export import export_model
from tfbert.serving import serve
from tfbert.text import load_tokenizer

pytestmark = pytest.mark.timeout(300)

TEXTS = ["The match ended with a late goal.", "A new laptop with a faster chip.",
         "Ünïcödé café — 北京", "", "goal " * 60]
README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


@pytest.fixture(scope="module")
def trained(minilm_dir, tmp_path_factory):
    from tfbert.training.finetune import run_finetune

    root = tmp_path_factory.mktemp("precision")
    init = make_tiny_init_dir(minilm_dir, str(root / "init"))
    train = write_topic_train(root / "train.jsonl")
    dirs = {}
    for p in precision.PRECISIONS:
        dirs[p] = str(root / p)
        run_finetune(train, init, dirs[p], epochs=3, batch_size=4, learning_rate=3e-3,
                     max_seq_length=32, verbose=0, precision=p)
    return root, dirs


def _probabilities(model_dir: str) -> np.ndarray:
    model, _ = tfbert.load_model(model_dir)
    return tf.nn.softmax(model(load_tokenizer(model_dir)(TEXTS), training=False)).numpy()


def test_bf16_training_learns_what_fp32_learns(trained):
    _, dirs = trained
    histories = {p: json.load(open(os.path.join(d, "history.json"))) for p, d in dirs.items()}
    for history in histories.values():
        assert history[-1]["loss"] < history[0]["loss"]
    # Same start, same batches: the bf16 run's losses and predictions follow fp32's.
    np.testing.assert_allclose([r["loss"] for r in histories["bf16"]],
                               [r["loss"] for r in histories["fp32"]], atol=0.05)
    np.testing.assert_allclose(_probabilities(dirs["bf16"]), _probabilities(dirs["fp32"]),
                               atol=0.05)


def test_bf16_training_writes_float32_weights(trained):
    _, dirs = trained
    model, _ = tfbert.load_model(dirs["bf16"])
    assert {w.dtype for w in model.weights} == {"float32"}


def _saved_variable_dtypes(path: str) -> set[tf.dtypes.DType]:
    reader = tf.train.load_checkpoint(os.path.join(path, "variables", "variables"))
    return {dtype for name, dtype in reader.get_variable_to_dtype_map().items()
            if "/.ATTRIBUTES/VARIABLE_VALUE" in name and dtype.is_floating}


def _functions(path: str):
    """The function library of a SavedModel's graph."""
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return saved.meta_graphs[0].graph_def.library.function


def _constant_elements(path: str) -> dict[tf.dtypes.DType, int]:
    """Float elements held in `Const` nodes of the SavedModel's functions, by dtype."""
    counts: dict[tf.dtypes.DType, int] = {}
    for function in _functions(path):
        for node in function.node_def:
            tensor = node.attr["value"].tensor
            dtype = tf.as_dtype(tensor.dtype) if node.op == "Const" else None
            if dtype is not None and dtype.is_floating:
                size = int(np.prod([d.size for d in tensor.tensor_shape.dim]))
                counts[dtype] = counts.get(dtype, 0) + size
    return counts


@pytest.fixture(scope="module")
def exports(trained):
    root, dirs = trained
    base = str(root / "savedmodels")
    out = {}
    for name, p, mode in (("fp32", "fp32", "attention"), ("bf16", "bf16", None),
                          ("whole", "fp32", "whole")):
        out[name] = export_model(dirs["fp32"], name, base=base, precision=p, compile=mode,
                                 warmup="minimal")
    return base, out


def test_bf16_export_stores_bf16_weights_and_passes_the_check(exports, trained):
    _, out = exports
    path, report = out["bf16"]
    assert report.ok, report.summary()
    model, _ = tfbert.load_model(trained[1]["fp32"])
    logits = model.get_layer("logits").count_params()
    # Outside whole-model XLA the weights are graph constants, not
    # variables: bfloat16 for the encoder (cast once at export), float32 for
    # the output layer.
    for name in ("bf16", "fp32"):
        assert _saved_variable_dtypes(out[name][0]) == set()
    constants = _constant_elements(path)
    assert constants[tf.bfloat16] >= model.count_params() - logits
    assert constants[tf.float32] >= logits
    fp32 = _constant_elements(out["fp32"][0])
    assert tf.bfloat16 not in fp32 and fp32[tf.float32] >= model.count_params()
    # Whole-model XLA keeps variables (constants would be copied into every
    # shape's executable).
    assert _saved_variable_dtypes(out["whole"][0]) == {tf.float32}
    assert _constant_elements(out["whole"][0]).get(tf.float32, 0) < model.count_params() // 10


def _matmuls(path: str) -> int:
    """MatMul ops of the SavedModel's largest function (the model call)."""
    return max(sum(node.op == "MatMul" for node in fn.node_def) for fn in _functions(path))


def test_weights_over_the_constant_limit_stay_variables(trained, exports, monkeypatch, tmp_path):
    from tfbert.export import exporter

    # A GraphDef must stay under protobuf's 2 GiB: past the limit, variables.
    monkeypatch.setattr(exporter, "CONSTANT_WEIGHTS_LIMIT", 1000)
    path, report = export_model(trained[1]["fp32"], "big", base=str(tmp_path),
                                compile="attention", warmup="none")
    assert report.ok, report.summary()
    assert _saved_variable_dtypes(path) == {tf.float32}
    # Variables are not split into branches (that would slice them on every
    # request): each dense layer is one matmul, half the constant export's.
    _, out = exports
    branched = _matmuls(out["fp32"][0])
    assert _matmuls(path) < branched <= 2 * _matmuls(path)


def _predict(stub, model: str, texts: list[str]) -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(texts, dtype=tf.string))
    response = stub.Predict(request, timeout=60)
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def test_bf16_export_serves_fp32_dtypes_close_to_fp32_over_grpc(exports):
    base, _ = exports
    servers = [serve(name, os.path.join(base, name), port=0) for name in ("fp32", "bf16")]
    try:
        answers = {}
        for server, name in zip(servers, ("fp32", "bf16"), strict=True):
            with grpc.insecure_channel(server.address) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                answers[name] = _predict(stub, name, TEXTS)
    finally:
        for server in servers:
            server.stop()
    fp32, bf16 = answers["fp32"], answers["bf16"]
    assert bf16["probabilities"].dtype == np.float32 == fp32["probabilities"].dtype
    np.testing.assert_allclose(bf16["probabilities"].sum(axis=1), 1.0, rtol=1e-6)
    # bfloat16 keeps 8 significant bits: about 2-3 decimal digits.
    np.testing.assert_allclose(bf16["probabilities"], fp32["probabilities"], atol=0.02)
    assert list(bf16["labels"]) == list(fp32["labels"])


def test_whole_model_xla_export_equals_the_attention_only_export(exports):
    _, out = exports
    (whole, report), (attention, _) = out["whole"], out["fp32"]
    assert report.ok, report.summary()
    assert "--xla_cpu_compilation_enabled=true" in report.summary()
    got = tf.saved_model.load(whole).signatures["serving_default"](text=tf.constant(TEXTS))
    want = tf.saved_model.load(attention).signatures["serving_default"](text=tf.constant(TEXTS))
    np.testing.assert_allclose(got["probabilities"].numpy(), want["probabilities"].numpy(),
                               atol=1e-5)


def test_compile_none_export_has_no_xla(trained, tmp_path):
    _, dirs = trained
    _, report = export_model(dirs["fp32"], "plain", base=str(tmp_path), compile="none",
                             warmup="none")
    assert report.ok and not report.needs_xla


def test_bf16_pretraining_runs_and_saves_float32(tmp_path, minilm_dir):
    from tfbert.training.pretrain import run_pretraining

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"The cat number {i} sat on the mat.\nIt was warm there.\n\n"
                              for i in range(40)))
    out = str(tmp_path / "pre")
    config = tfbert.BertConfig.from_preset("tiny", vocab_size=30522, hidden_size=32,
                                           num_heads=2, intermediate_size=64,
                                           max_position_embeddings=64)
    model = run_pretraining(str(corpus), os.path.join(minilm_dir, "vocab.txt"),
                            config, out, steps=4, batch_size=8, seq_len=32,
                            precision="bf16", verbose=0)
    history = json.load(open(os.path.join(out, "history.json")))
    assert all(np.isfinite(r["loss"]) for r in history)
    # Mixed precision computes in bf16 but keeps (and saves) float32 variables.
    assert {w.dtype for w in model.weights} == {"float32"}
    encoder_layer = model.get_layer("bert_encoder").get_layer("layer_0")
    assert encoder_layer.dtype_policy.compute_dtype == "bfloat16"
    reloaded, _ = tfbert.load_model(out)
    assert {w.dtype for w in reloaded.weights} == {"float32"}


def test_unknown_precision_and_compile_mode_are_refused(trained, tmp_path):
    _, dirs = trained
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16"):
        export_model(dirs["fp32"], "x", base=str(tmp_path), precision="fp16")
    with pytest.raises(ConfigError, match="compile mode must be one of"):
        export_model(dirs["fp32"], "x", base=str(tmp_path), compile="everything")
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.parametrize("flags, gpus, fast", [
    ({"avx512f", "avx512_bf16"}, [], True),
    ({"avx512f", "amx_bf16", "amx_tile"}, [], True),
    ({"avx2", "avx512f"}, [], False),
    ({"avx2"}, [(8, 0)], True),
    ({"avx512_bf16"}, [(9, 0), (7, 5)], False),
])
def test_bf16_is_fast_only_on_bf16_hardware(flags, gpus, fast):
    assert precision.bf16_support(cpu=frozenset(flags), gpus=gpus)[0] is fast


def test_the_bf16_warning_follows_this_machine():
    fast, reason = precision.bf16_support()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warned = precision.warn_if_slow("bf16", "tfbert test")
        precision.warn_if_slow("fp32", "tfbert test")
    assert warned is (not fast)
    assert [str(w.message) for w in caught] == (
        [] if fast else [f"tfbert test: --precision bf16 will run slower than fp32 here: "
                         f"{reason}"])


def test_readme_compile_policy_table_is_the_default():
    """README's 'Precision and compilation' table is `COMPILE_POLICY`, row for row."""
    text = open(README, encoding="utf-8").read()
    section = text.split("<!-- compile-policy -->")[1]
    rows = re.findall(r"^\| (CPU|GPU) \| (fp32|bf16) \| (\w+) \| (\w+) \|", section, re.M)
    table = {}
    for device, p, train, serve_mode in rows:
        table[(device.lower(), p, "train")] = train
        table[(device.lower(), p, "serve")] = serve_mode
    assert table == precision.COMPILE_POLICY


def test_the_command_line_offers_every_precision_and_compile_mode():
    """`--precision` and `--compile` spell their choices out (no TensorFlow import for
    `--help`): they must be the library's, so `--compile pointwise` reaches the model."""
    from tfbert.cli.training_flags import COMPILE_CHOICES, PRECISION_CHOICES

    assert COMPILE_CHOICES == precision.COMPILE_MODES
    assert PRECISION_CHOICES == precision.PRECISIONS
    assert precision.island_config("pointwise") == {"xla_attention": False,
                                                    "xla_pointwise": True}
    assert precision.island_config("none") == {"xla_attention": False, "xla_pointwise": False}
    assert precision.island_config("whole") == precision.island_config("attention") == {
        "xla_attention": True, "xla_pointwise": True}
