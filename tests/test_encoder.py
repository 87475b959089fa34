import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import random_batch

import tfbert
from tfbert.models import encoder_config
from tfbert.precision import dtype_policy, island_config, training_policy


def _concrete_graph_has_xla(fn, batch) -> bool:
    spec = {k: tf.TensorSpec([None, None], tf.int32, name=k) for k in batch}
    graph_def = tf.function(fn).get_concrete_function(spec).graph.as_graph_def()
    functions = list(graph_def.library.function)
    return any(f.attr["_XlaMustCompile"].b for f in functions)


def test_outputs_shapes_and_any_length(tiny_config):
    encoder = tfbert.build_encoder(tiny_config)
    for seq in (1, 7, tiny_config.max_position_embeddings):
        out = encoder(random_batch(tiny_config.vocab_size, batch=2, seq=seq))
        assert out["sequence_output"].shape == (2, seq, tiny_config.hidden_size)
        assert out["pooled_output"].shape == (2, tiny_config.hidden_size)
    # tanh pooler: every pooled value lies in (-1, 1).
    assert np.all(np.abs(out["pooled_output"].numpy()) < 1)


def test_padding_does_not_change_real_tokens(tiny_config):
    encoder = tfbert.build_encoder(tiny_config)
    short = random_batch(tiny_config.vocab_size, batch=1, seq=6)
    padded = {k: np.pad(v, [(0, 0), (0, 10)]) for k, v in short.items()}
    a = encoder(short)["sequence_output"].numpy()
    b = encoder(padded)["sequence_output"].numpy()[:, :6]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_attention_core_is_xla_compiled(tiny_config):
    batch = random_batch(tiny_config.vocab_size)
    assert _concrete_graph_has_xla(tfbert.build_encoder(tiny_config), batch)
    no_xla = tiny_config.replace(**island_config("none"))
    assert not _concrete_graph_has_xla(tfbert.build_encoder(no_xla), batch)


def _xla_ops(encoder, batch, training) -> set[str]:
    """The op types inside the XLA functions of `encoder`'s traced call."""
    spec = {k: tf.TensorSpec([None, None], tf.int32, name=k) for k in batch}
    graph = tf.function(lambda b: encoder(b, training=training)).get_concrete_function(
        spec).graph.as_graph_def()
    return {node.op for f in graph.library.function if f.attr["_XlaMustCompile"].b
            for node in f.node_def}


def test_pointwise_mode_compiles_the_elementwise_steps_but_not_the_attention(tiny_config):
    batch = random_batch(tiny_config.vocab_size)
    attention = tfbert.build_encoder(tiny_config.replace(**island_config("attention")))
    pointwise = tfbert.build_encoder(tiny_config.replace(**island_config("pointwise")))
    for training, elementwise in ((False, "Rsqrt"), (True, "Erf")):  # LayerNorm; GELU
        assert {"BatchMatMulV2", "Softmax", elementwise} <= _xla_ops(attention, batch, training)
        ops = _xla_ops(pointwise, batch, training)
        assert elementwise in ops and not {"BatchMatMulV2", "Softmax"} & ops


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compile_modes_train_the_same_with_dropout(tiny_config, precision):
    """Outputs and every gradient agree across the island modes, dropout on:
    the same masks from the same seeds, XLA-compiled or not."""
    config = tiny_config.replace(hidden_dropout=0.2, attention_dropout=0.3)
    batch = random_batch(tiny_config.vocab_size, pad_from=7)
    results = {}
    for mode in ("attention", "pointwise", "none"):
        keras.utils.set_random_seed(7)
        with dtype_policy(training_policy(precision)):
            encoder = tfbert.build_encoder(config.replace(**island_config(mode)))
        with tf.GradientTape() as tape:
            out = encoder(batch, training=True)
            loss = (tf.reduce_sum(tf.cast(out["sequence_output"], tf.float32) ** 2)
                    + tf.reduce_sum(tf.cast(out["pooled_output"], tf.float32)))
        grads = tape.gradient(loss, encoder.trainable_weights)
        results[mode] = [tf.cast(out["sequence_output"], tf.float32).numpy()] + [
            tf.convert_to_tensor(g).numpy() for g in grads]
    # Relative to each array's largest entry: some gradients (LayerNorm-
    # invariant directions) are sums that cancel to almost nothing.
    tolerance = {"fp32": 1e-4, "bf16": 0.03}[precision]
    for mode in ("pointwise", "none"):
        for got, want in zip(results[mode], results["attention"], strict=True):
            np.testing.assert_allclose(got, want, rtol=0,
                                       atol=tolerance * np.abs(want).max(), err_msg=mode)
    # Dropout was on: the output is not the inference output.
    assert not np.allclose(results["none"][0], tf.cast(encoder(batch)["sequence_output"],
                                                         tf.float32).numpy(), atol=1e-3)


@pytest.mark.parametrize("mode", ["pointwise", "none"])
def test_xla_on_and_off_agree(tiny_config, mode):
    xla = tfbert.build_encoder(tiny_config)
    plain = tfbert.build_encoder(tiny_config.replace(**island_config(mode)))
    plain.set_weights(xla.get_weights())
    batch = random_batch(tiny_config.vocab_size, pad_from=5)
    a, b = xla(batch), plain(batch)
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-5)


def test_every_weight_gets_a_gradient_through_xla(tiny_config):
    encoder = tfbert.build_encoder(tiny_config)
    batch = random_batch(tiny_config.vocab_size, pad_from=5)
    with tf.GradientTape() as tape:
        out = encoder(batch, training=True)
        loss = tf.reduce_sum(out["sequence_output"] ** 2) + tf.reduce_sum(out["pooled_output"])
    grads = tape.gradient(loss, encoder.trainable_weights)
    dead = [w.path for w, g in zip(encoder.trainable_weights, grads, strict=True)
            if g is None or not np.any(tf.convert_to_tensor(g).numpy())]
    # The position rows past the sequence length and unused token/type rows
    # legitimately get no gradient; everything else must.
    assert all(p.startswith("embeddings/") and "layer_norm" not in p for p in dead), dead


def test_dropout_only_in_training(tiny_config):
    encoder = tfbert.build_encoder(tiny_config.replace(hidden_dropout=0.3,
                                                       attention_dropout=0.3))
    batch = random_batch(tiny_config.vocab_size)
    inference = [encoder(batch)["sequence_output"].numpy() for _ in range(2)]
    np.testing.assert_array_equal(*inference)
    training = [encoder(batch, training=True)["sequence_output"].numpy() for _ in range(2)]
    assert not np.allclose(*training)


def test_keras_file_round_trip(tiny_config, tmp_path):
    encoder = tfbert.build_encoder(tiny_config)
    clf = tfbert.build_classifier(encoder, num_classes=3, pooling="mean")
    path = str(tmp_path / "clf.keras")
    clf.save(path)
    again = keras.saving.load_model(path)
    batch = random_batch(tiny_config.vocab_size, pad_from=4)
    np.testing.assert_allclose(clf(batch).numpy(), again(batch).numpy(), atol=1e-6)
    assert encoder_config(again) == tiny_config


def test_model_directory_round_trip(tiny_config, tmp_path):
    encoder = tfbert.build_encoder(tiny_config)
    clf = tfbert.build_classifier(encoder, num_classes=2)
    info = tfbert.checkpoints.TaskInfo(task="classify", labels=["neg", "pos"],
                                       max_seq_length=32)
    vocab = [f"tok{i}" for i in range(tiny_config.vocab_size)]
    tfbert.save_model(clf, tmp_path / "m", info, vocab)
    again, info_again = tfbert.load_model(tmp_path / "m")
    assert info_again == info
    batch = random_batch(tiny_config.vocab_size)
    np.testing.assert_allclose(clf(batch).numpy(), again(batch).numpy(), atol=1e-6)
    enc_again = tfbert.load_encoder(tmp_path / "m")
    np.testing.assert_allclose(encoder(batch)["pooled_output"].numpy(),
                               enc_again(batch)["pooled_output"].numpy(), atol=1e-6)


def test_classifier_rejects_bad_arguments(tiny_config):
    encoder = tfbert.build_encoder(tiny_config)
    with pytest.raises(ValueError, match="pooling"):
        tfbert.build_classifier(encoder, 2, pooling="max")
    with pytest.raises(ValueError, match="at least 2"):
        tfbert.build_classifier(encoder, 1)


def test_every_config_field_reaches_its_layer(tiny_config):
    # Distinct values everywhere: a swapped pair of arguments would show.
    config = tiny_config.replace(hidden_act="relu", hidden_dropout=0.15, attention_dropout=0.25,
                                 layer_norm_eps=1e-7, initializer_range=0.03, type_vocab_size=3,
                                 xla_pointwise=False)
    encoder = tfbert.build_encoder(config)
    assert encoder_config(encoder) == config
    embeddings = encoder.get_layer("embeddings")
    assert embeddings.dropout.rate == 0.15 and embeddings.layer_norm.epsilon == 1e-7
    assert embeddings.token_type_embeddings.input_dim == 3
    for i in range(config.num_layers):
        block = encoder.get_layer(f"layer_{i}")
        assert block.attention.attention_dropout == 0.25 and block.attention.xla is True
        assert not (block.intermediate.xla or block.output_layer_norm.xla)
        assert block.attention_dropout_layer.rate == block.output_dropout.rate == 0.15
        assert block.output_layer_norm.epsilon == 1e-7
        assert block.intermediate.kernel.shape == (config.hidden_size, config.intermediate_size)


def test_initial_weights_are_independent(tiny_config):
    encoder = tfbert.build_encoder(tiny_config)
    emb = encoder.get_layer("embeddings")
    words = emb.word_embeddings.embeddings.numpy()
    positions = emb.position_embeddings.embeddings.numpy()
    assert not np.allclose(words[:len(positions)], positions)
    attention = encoder.get_layer("layer_0").attention
    kernels = [*np.split(attention.qkv.kernel.numpy(), 3, axis=1),  # query, key, value
               attention.output_dense.kernel.numpy()]
    assert all(not np.allclose(a, b) for i, a in enumerate(kernels) for b in kernels[i + 1:])
    other = np.split(encoder.get_layer("layer_1").attention.qkv.kernel.numpy(), 3, axis=1)[0]
    assert not np.allclose(kernels[0], other)
