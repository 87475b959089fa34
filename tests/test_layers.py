"""The layers: activation names, configs, the tied MLM projection, dropout seeds."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import random_batch

import tfbert
from tfbert.config import ACTIVATION_ALIASES, ACTIVATIONS, BertConfig
from tfbert.errors import ConfigError
from tfbert.layers import (
    BertEmbeddings,
    Dropout,
    MaskedLMHead,
    MaskedMeanPooling,
    SelfAttention,
    SpanLogits,
    TransformerBlock,
)
from tfbert.layers.activations import (
    ACTIVATION_FUNCTIONS,
    bert_activation,
    training_activation,
)
from tfbert.layers.dropout import dropout
from tfbert.layers.normalization import (
    add_layer_norm,
    add_layer_norm_training,
)
from tfbert.models import get_encoder

# --- activation names ----------------------------------------------------------------------


def test_every_activation_name_has_a_function_and_no_other():
    assert set(ACTIVATION_FUNCTIONS) == set(ACTIVATIONS)
    assert set(ACTIVATION_ALIASES.values()) <= set(ACTIVATIONS)
    expected = {"relu": 1.0, "gelu": 0.5 * (1 + math.erf(1 / math.sqrt(2))),
                "gelu_approximate": 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi)
                                                          * (1 + 0.044715)))}
    for name in ACTIVATIONS:
        assert float(bert_activation(name)(np.float32(1.0))) == pytest.approx(expected[name],
                                                                               rel=1e-5)
        BertConfig(vocab_size=10, hidden_size=8, num_layers=1, num_heads=2,
                   intermediate_size=16, hidden_act=name)
        TransformerBlock(num_heads=2, hidden_size=8, intermediate_size=16, hidden_act=name)


@pytest.mark.parametrize("name", ["swish", "gelu_new", "GELU", ""])
def test_unknown_activation_names_are_rejected_with_the_supported_ones(name):
    listed = ", ".join(ACTIVATIONS)
    with pytest.raises(ConfigError, match="hidden_act") as error:
        BertConfig(vocab_size=10, hidden_size=8, num_layers=1, num_heads=2,
                   intermediate_size=16, hidden_act=name)
    assert listed in str(error.value)
    with pytest.raises(ConfigError) as error:
        bert_activation(name)
    assert listed in str(error.value)


@pytest.mark.parametrize("alias", sorted(ACTIVATION_ALIASES))
def test_hugging_face_activation_aliases_are_imported(alias):
    cfg = BertConfig.from_hf_dict({"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                                   "num_attention_heads": 2, "intermediate_size": 16,
                                   "hidden_act": alias})
    assert cfg.hidden_act == ACTIVATION_ALIASES[alias]


# --- configs -------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: BertEmbeddings(vocab_size=50, hidden_size=8, max_position_embeddings=16,
                           type_vocab_size=3, layer_norm_eps=1e-6, dropout=0.2,
                           initializer_range=0.05),
    lambda: TransformerBlock(num_heads=2, hidden_size=8, intermediate_size=16,
                             hidden_act="relu", hidden_dropout=0.2, attention_dropout=0.3,
                             layer_norm_eps=1e-6, initializer_range=0.05, xla_attention=False,
                             inference_branches=2),
    lambda: SelfAttention(num_heads=2, head_size=4, attention_dropout=0.3,
                          initializer_range=0.05, xla=False, branches=2),
    lambda: SpanLogits(initializer_range=0.05),
    MaskedMeanPooling,
    lambda: Dropout(0.2, seed=3),
], ids=["BertEmbeddings", "TransformerBlock", "SelfAttention", "SpanLogits",
        "MaskedMeanPooling", "Dropout"])
def test_get_config_round_trips(make):
    layer = make()
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config


def test_hyper_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        TransformerBlock(2, 8, 16)
    with pytest.raises(TypeError):
        BertEmbeddings(50, 8)
    with pytest.raises(TypeError):
        SelfAttention(2, 4)


def test_mlm_head_is_not_rebuilt_untied():
    embeddings = keras.layers.Embedding(50, 8)
    embeddings.build((None,))
    head = MaskedLMHead(embeddings, hidden_act="relu", layer_norm_eps=1e-6)
    with pytest.raises(ConfigError, match="tied"):
        MaskedLMHead.from_config(head.get_config())
    again = MaskedLMHead.from_config({**head.get_config(), "word_embeddings": embeddings})
    assert again.word_embeddings is embeddings and again.hidden_act == "relu"
    other = keras.layers.Embedding(40, 8)
    with pytest.raises(ConfigError, match="50 x 8"):
        MaskedLMHead.from_config({**head.get_config(), "word_embeddings": other})


# --- the tied MLM projection survives .keras save and load ----------------------------------


def _pretraining_batch(config):
    batch = random_batch(config.vocab_size, batch=2, seq=8, pad_from=6)
    batch["input_word_ids"] = np.minimum(batch["input_word_ids"], config.vocab_size - 2)
    batch["masked_lm_positions"] = np.array([[1, 3], [2, 0]], "int32")
    return batch


def test_mlm_gradient_builds_no_per_sequence_copy_of_the_word_table(tiny_config):
    """The vocabulary projection's gradient is one [V, H] matmul: a batched
    [B, P, H] x [V, H]^T product made B copies of the table gradient and summed
    them (1.5 GB a step for MiniLM at batch 32)."""
    pretrainer = tfbert.build_pretrainer(tfbert.build_encoder(tiny_config))
    batch = _pretraining_batch(tiny_config)
    spec = {k: tf.TensorSpec(v.shape, tf.int32) for k, v in batch.items()}

    @tf.function
    def gradients(inputs):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(pretrainer(inputs, training=True)["mlm"])
        return tape.gradient(loss, pretrainer.trainable_weights)

    graph = gradients.get_concrete_function(spec).graph
    copies = (len(batch["input_word_ids"]), tiny_config.vocab_size, tiny_config.hidden_size)
    shapes = {tuple(t.shape.as_list()) for op in graph.get_operations() for t in op.outputs
              if t.shape.rank is not None}
    assert copies not in shapes
    assert (tiny_config.vocab_size, tiny_config.hidden_size) in shapes


def test_reloaded_pretrainer_projects_with_its_own_word_embeddings(tiny_config, tmp_path):
    pretrainer = tfbert.build_pretrainer(tfbert.build_encoder(tiny_config))
    batch = _pretraining_batch(tiny_config)
    before = pretrainer(batch)
    path = str(tmp_path / "pretrainer.keras")
    pretrainer.save(path)
    again = keras.saving.load_model(path)

    table = get_encoder(again).get_layer("embeddings").word_embeddings.embeddings
    assert again.get_layer("mlm").word_embeddings.embeddings is table
    assert sum(w is table for w in again.weights) == 1
    after = again(batch)
    for key in ("mlm", "nsp"):
        np.testing.assert_allclose(before[key].numpy(), after[key].numpy(), atol=1e-6)

    # The last token id is not in the input: changing its row leaves the
    # encoder output alone, so only a tied projection changes its logit.
    unused = tiny_config.vocab_size - 1
    assert not np.any(batch["input_word_ids"] == unused)
    value = table.numpy()
    # Not a constant: the MLM transform ends in a LayerNorm, whose output
    # (gamma 1, beta 0) sums to zero and would not see a constant shift.
    value[unused] += np.random.default_rng(0).normal(size=value.shape[1])
    table.assign(value)
    changed = again(batch)["mlm"].numpy()
    reference = after["mlm"].numpy()
    assert np.all(np.abs(changed[..., unused] - reference[..., unused]) > 1e-4)
    np.testing.assert_allclose(changed[..., :unused], reference[..., :unused], atol=1e-6)


# --- dropout masks from 16-bit draws ----------------------------------------------------------


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_drops_at_the_rate_and_pairs_from_one_draw_are_independent(rate):
    # 2**20 elements: the kept fraction's standard deviation is below 5e-4.
    x = tf.ones([1024, 1024])
    out = dropout(x, rate, tf.constant([7, 11])).numpy()
    dropped = out == 0
    assert abs(dropped.mean() - rate) < 3e-3
    np.testing.assert_allclose(out[~dropped], 1 / (1 - rate), rtol=1e-6)
    # Neighbours share one 32-bit Philox word: they must still drop independently.
    both = (dropped[:, 0::2] & dropped[:, 1::2]).mean()
    assert abs(both - rate * rate) < 3e-3


def test_dropout_masks_follow_the_seed_in_plain_and_xla_graphs():
    x = tf.ones([3, 5, 7])  # an odd element count: the last word is half used
    compiled = tf.function(dropout, jit_compile=True)
    masks = {}
    for seed in ((1, 2), (1, 2), (2, 1)):
        plain = dropout(x, 0.5, tf.constant(seed)).numpy() == 0
        xla = compiled(x, 0.5, tf.constant(seed)).numpy() == 0
        assert plain.shape == xla.shape == (3, 5, 7)
        np.testing.assert_array_equal(plain, xla)
        masks.setdefault(seed, []).append(plain)
    np.testing.assert_array_equal(*masks[(1, 2)])
    assert not np.array_equal(masks[(1, 2)][0], masks[(2, 1)][0])


def test_dropout_layer_keeps_the_dtype_and_is_the_identity_outside_training():
    layer = Dropout(0.3, seed=5, dtype="bfloat16")
    x = tf.cast(tf.random.normal([8, 64]), tf.bfloat16)
    out = layer(x, training=True)
    assert out.dtype == tf.bfloat16
    kept = out.numpy() != 0
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy()[kept],
                               tf.cast(x, tf.float32).numpy()[kept] / 0.7, rtol=1e-2)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
    # Each call draws a new mask from the layer's seed generator.
    assert not np.array_equal(kept, layer(x, training=True).numpy() != 0)


# --- attention dropout: a stream of its own per layer, set by the global seed ----------------


def _masks(layers, steps=1):
    """Attention-dropout keep masks read off the outputs of `layers`.

    Zero query/key projections make every attention probability 1/T; identity
    value/output projections on one-hot token vectors then return the
    probability matrix itself, so an output entry is 0 exactly where dropout
    dropped it.
    """
    seq = 16
    x = np.eye(seq, dtype="float32")[np.newaxis]
    mask = np.ones((1, seq), "int32")
    masks = []
    for layer in layers:
        layer.build(x.shape)
        zero, identity = np.zeros((seq, seq)), np.eye(seq)
        # The fused projection's columns are query | key | value.
        qkv = np.concatenate([zero, zero, identity], axis=1)
        for dense, kernel in ((layer.qkv, qkv), (layer.output_dense, identity)):
            dense.kernel.assign(kernel.astype("float32"))
            dense.bias.assign(np.zeros(kernel.shape[1], "float32"))
        np.testing.assert_allclose(layer(x, mask).numpy()[0], np.full((seq, seq), 1 / seq),
                                   rtol=1e-6)
        for _ in range(steps):
            out = layer(x, mask, training=True).numpy()[0]
            kept = out != 0
            # What survives is 1/T scaled by 1/(1 - rate): real dropout.
            np.testing.assert_allclose(out[kept], 1 / seq / (1 - layer.attention_dropout),
                                       rtol=1e-5)
            assert 0 < kept.sum() < kept.size
            masks.append(kept)
    return masks


def _attention(xla):
    return SelfAttention(num_heads=1, head_size=16, attention_dropout=0.5, xla=xla)


@pytest.mark.parametrize("xla", [True, False], ids=["xla", "plain"])
def test_each_attention_layer_draws_its_own_dropout_masks(xla):
    keras.utils.set_random_seed(0)
    first, second = _masks([_attention(xla), _attention(xla)])
    assert not np.array_equal(first, second)
    # One layer's masks also change from step to step.
    step1, step2 = _masks([_attention(xla)], steps=2)
    assert not np.array_equal(step1, step2)


@pytest.mark.parametrize("xla", [True, False], ids=["xla", "plain"])
def test_global_seed_sets_the_attention_dropout_masks(xla):
    runs = {}
    for seed in (1, 2, 1):
        keras.utils.set_random_seed(seed)
        runs.setdefault(seed, []).append(_masks([_attention(xla), _attention(xla)], steps=2))
    np.testing.assert_array_equal(runs[1][0], runs[1][1])  # reproducible
    assert not any(np.array_equal(a, b) for a, b in zip(runs[1][0], runs[2][0], strict=True))


def test_encoder_attention_seed_generators_are_distinct_model_state(tiny_config):
    encoder = tfbert.build_encoder(tiny_config.replace(num_layers=3))
    variables = {id(v) for v in encoder.variables}
    states = []
    for i in range(3):
        generator = encoder.get_layer(f"layer_{i}").attention.seed_generator
        assert id(generator.state) in variables  # checkpointed with the model
        states.append(tuple(generator.state.numpy()))
    assert len(set(states)) == 3



# --- training forms of GELU and add & LayerNorm ---------------------------------------------


def _value_and_gradients(fn, *args):
    """fn(*args) and the gradients of a weighted sum of it (every element its own weight)."""
    args = [tf.convert_to_tensor(a) for a in args]
    with tf.GradientTape() as tape:
        tape.watch(args)
        out = fn(*args)
        weights = tf.reshape(tf.range(tf.size(out), dtype=tf.float32) % 7 - 3.0, tf.shape(out))
        loss = tf.reduce_sum(tf.cast(out, tf.float32) * weights)
    return out, tape.gradient(loss, args)


@pytest.mark.parametrize("xla", [False, True])
def test_training_gelu_has_gelus_values_and_derivative(xla):
    x = np.linspace(-6.0, 6.0, 97, dtype="float32").reshape(1, 97)
    want, (want_grad,) = _value_and_gradients(bert_activation("gelu"), x)
    got, (got_grad,) = _value_and_gradients(training_activation(bert_activation("gelu"), xla), x)
    # erf against TensorFlow's erfc: they part where Phi(x) is below float32's
    # resolution near 1 (the far left tail, |gelu(x)| < 1e-6).
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-6)
    # The derivative at 0 is 1/2 and tends to 0 / 1 far left / right.
    np.testing.assert_allclose(got_grad.numpy()[0, [0, 48, 96]] / np.array([-3.0, 3.0, 2.0]),
                               [0.0, 0.5, 1.0], atol=1e-6)


@pytest.mark.parametrize("xla", [False, True])
def test_training_add_layer_norm_has_the_values_and_gradients_of_the_plain_one(xla):
    rng = np.random.default_rng(0)
    inputs, residual = (rng.normal(size=(2, 5, 8)).astype("float32") for _ in range(2))
    gamma, beta = rng.normal(size=8).astype("float32"), rng.normal(size=8).astype("float32")
    want, want_grads = _value_and_gradients(
        lambda *a: add_layer_norm(*a, epsilon=1e-12), inputs, residual, gamma, beta)
    # xla: compiled, as a whole-step jit_compile compiles it.
    norm = add_layer_norm_training
    if xla:
        norm = tf.function(add_layer_norm_training, jit_compile=True)
    got, got_grads = _value_and_gradients(lambda *a: norm(*a, 1e-12), inputs, residual, gamma,
                                          beta)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for name, g, w in zip(("inputs", "residual", "gamma", "beta"), got_grads, want_grads,
                          strict=True):
        assert np.abs(w.numpy()).max() > 0.1, name
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)


def test_transformer_block_gives_the_same_output_in_training_without_dropout():
    block = TransformerBlock(num_heads=2, hidden_size=16, intermediate_size=32,
                             hidden_dropout=0.0, attention_dropout=0.0)
    x = np.random.default_rng(0).normal(size=(2, 6, 16)).astype("float32")
    mask = np.array([[1] * 6, [1] * 4 + [0] * 2], "int32")
    np.testing.assert_allclose(block(x, mask, training=True), block(x, mask, training=False),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("xla", [False, True])
def test_bf16_training_bias_gradient_is_the_sum_over_the_rows(xla):
    """TensorFlow's BiasAddGrad sums bfloat16 rows in bfloat16 (errors of a
    third of the sum's size over 4096 rows); FusedDense's bias gradient in
    16-bit training must be the sum to bfloat16 rounding."""
    from tfbert.layers import FusedDense
    from tfbert.precision import dtype_policy

    with dtype_policy("mixed_bfloat16"):
        layer = FusedDense(8)
        layer.build((None, 4))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(4096, 4)).astype("float32"))
    upstream = tf.cast(tf.constant(rng.normal(size=(4096, 8)).astype("float32") + 0.05),
                       tf.bfloat16)

    @tf.function(jit_compile=xla)
    def bias_gradient():
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.cast(upstream, tf.float32))
        return tape.gradient(loss, layer.bias)

    want = upstream.numpy().astype("float64").sum(axis=0)
    got = bias_gradient().numpy()
    scale = np.sqrt((want ** 2).mean())
    assert np.abs(got - want).max() < 0.01 * scale


# --- constant scales folded into the projection weights -------------------------------------


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_dense_column_scale_scales_the_outputs_and_the_kernel_gradient(policy):
    from tfbert.layers import FusedDense
    from tfbert.precision import dtype_policy

    with dtype_policy(policy):
        layer = FusedDense(6, activation=None)
        layer.build((None, 4))
    rng = np.random.default_rng(0)
    layer.kernel.assign(rng.normal(size=(4, 6)).astype("float32"))
    layer.bias.assign(rng.normal(size=6).astype("float32"))
    x = tf.constant(rng.normal(size=(3, 5, 4)).astype("float32"))
    scale = tf.constant([0.5, 2.0, 1.0, 0.125, 3.0, 1.0])

    def run(column_scale):
        with tf.GradientTape() as tape:
            y = tf.cast(layer(x, training=True, column_scale=column_scale), tf.float32)
            loss = tf.reduce_sum(y)
        return y.numpy(), tape.gradient(loss, layer.kernel).numpy()

    (plain, plain_grad), (scaled, scaled_grad) = run(None), run(scale)
    rtol = 1e-6 if policy == "float32" else 2e-2
    np.testing.assert_allclose(scaled, plain * scale.numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(scaled_grad, plain_grad * scale.numpy(), rtol=rtol)


def test_bf16_attention_core_multiplies_the_scores_once_in_bfloat16():
    """The 1/sqrt(d) and 1/(1 - rate) scales live in the qkv kernel: the only
    multiply over the [B, N, T, T] probabilities is the dropout mask, in the
    16-bit compute dtype (each float32 pass over them costs a MiniLM bf16
    training step about 1 ms a layer on CPU)."""
    from tfbert.precision import dtype_policy

    with dtype_policy("mixed_bfloat16"):
        layer = SelfAttention(num_heads=2, head_size=8, attention_dropout=0.1, xla=False)
    x = tf.zeros((3, 5, 16))
    mask = tf.ones((3, 5), tf.int32)
    graph = tf.function(lambda x: layer(x, mask, training=True)).get_concrete_function(x).graph
    score_multiplies = [op.outputs[0].dtype for op in graph.get_operations()
                        if op.type == "Mul" and op.outputs[0].shape.as_list() == [3, 2, 5, 5]]
    assert score_multiplies == [tf.bfloat16]


def test_inference_reads_the_qkv_kernel_unscaled():
    """Serving scales the scores inside the core (XLA fuses it into the
    softmax): a scaled kernel would be a fresh [H, 3H] copy on every request,
    and whole-model XLA exports answered one text 10% slower with it."""
    layer = SelfAttention(num_heads=2, head_size=8, attention_dropout=0.1, xla=False)
    x, mask = tf.zeros((3, 5, 16)), tf.ones((3, 5), tf.int32)

    def kernel_multiplies(training):
        graph = tf.function(lambda x: layer(x, mask, training=training)).get_concrete_function(
            x).graph
        return [op for op in graph.get_operations()
                if op.type == "Mul" and op.outputs[0].shape.as_list() == [16, 48]]

    assert kernel_multiplies(training=False) == []
    assert len(kernel_multiplies(training=True)) == 1


def _same_weights(make, **branched):
    one, split = make(), make(**branched)
    x = np.random.default_rng(1).normal(size=(2, 6, 16)).astype("float32")
    mask = np.array([[1] * 6, [1] * 3 + [0] * 3], "int32")
    one(x, mask)
    split(x, mask)
    split.set_weights(one.get_weights())
    return one, split, x, mask


@pytest.mark.parametrize("xla", [False, True])
def test_inference_branches_compute_the_same_block(xla):
    """Heads in groups, the feed-forward width in slices, partial sums added
    before the bias: the same outputs as the block run whole."""
    def make(**kwargs):
        return TransformerBlock(num_heads=4, hidden_size=16, intermediate_size=64,
                                xla_attention=xla, xla_pointwise=xla, **kwargs)
    one, split, x, mask = _same_weights(make, inference_branches=2)
    expected = one(x, mask).numpy()
    assert np.abs(expected).max() > 0.5
    np.testing.assert_allclose(split(x, mask), expected, rtol=1e-5, atol=1e-5)
    # Training runs the block whole: same outputs without dropout.
    one, split, x, mask = _same_weights(
        lambda **kw: make(hidden_dropout=0.0, attention_dropout=0.0, **kw), inference_branches=2)
    np.testing.assert_allclose(split(x, mask, training=True), one(x, mask, training=True),
                               rtol=1e-5, atol=1e-5)


def test_inference_branches_are_independent_ops():
    """Two branches: two query/key/value matmuls, two attention-output, two
    feed-forward-in and two feed-forward-out matmuls, and neither of a pair
    feeds the other (so TensorFlow's inter-op threads can run them at once)."""
    block = TransformerBlock(num_heads=2, hidden_size=16, intermediate_size=64,
                             xla_attention=False, inference_branches=2)
    x, mask = tf.zeros((1, 4, 16)), tf.ones((1, 4), tf.int32)
    graph = tf.function(lambda x: block(x, mask)).get_concrete_function(x).graph
    matmuls = [op for op in graph.get_operations() if op.type == "MatMul"]
    # Output widths: qkv 3 x 8 per head group, attention output 16, feed-forward 64 / 2, 16.
    assert sorted(op.outputs[0].shape[-1] for op in matmuls) == [16] * 4 + [24] * 2 + [32] * 2

    def upstream(op):
        seen, todo = set(), [op]
        while todo:
            for tensor in todo.pop().inputs:
                if tensor.op not in seen:
                    seen.add(tensor.op)
                    todo.append(tensor.op)
        return seen
    for width in (24, 32):
        first, second = [op for op in matmuls if op.outputs[0].shape[-1] == width]
        assert first not in upstream(second) and second not in upstream(first)


def test_inference_branches_must_divide_heads_and_width():
    with pytest.raises(ConfigError, match="inference_branches"):
        BertConfig(vocab_size=50, hidden_size=12, num_layers=1, num_heads=3,
                   intermediate_size=48, inference_branches=2)
    with pytest.raises(ConfigError, match="inference_branches"):
        BertConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=4,
                   intermediate_size=48, inference_branches=0)
