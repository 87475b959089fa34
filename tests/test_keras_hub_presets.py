"""keras-hub presets (`keras_hub.models.BertBackbone` + `BertTokenizer`) as model directories.

keras-hub itself is the reference: a tiny backbone with random weights and
the real bert-base-uncased vocabulary, saved with keras-hub's `save_to_preset`.
"""

from __future__ import annotations

import json
import os

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import tfbert
from tfbert.checkpoints import CheckpointError, detect_kind, read_bert_config, save_keras_hub_preset
from tfbert.errors import ConfigError
from tfbert.export import export_model
from tfbert.layers.activations import bert_activation
from tfbert.text import read_vocab

# Text keras-hub's default BERT tokenizer and tfbert's tokenize alike: no
# accents, no special tokens written in the text (see tfbert.text.loading).
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Don't stop: 3.14 + $42 = ?!",
    "我们在北京学习自然语言处理。",
    "Mixed 日本語 and English (with punctuation)...",
]
# Text where they differ unless the preset says otherwise, as tfbert's presets do.
TRICKY = ["Café déjà vu, naïve résumé — ÉCOLE.", "a [MASK] b [UNK] c"]


def _randomize(model: keras.Model, seed: int) -> None:
    """Every weight (biases, layer-norm gammas and betas included) made distinct."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        noise = rng.normal(0.0, 0.05, tuple(variable.shape)).astype("float32")
        variable.assign(keras.ops.convert_to_numpy(variable) + noise)


def _hub_inputs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"token_ids": batch["input_word_ids"], "segment_ids": batch["input_type_ids"],
            "padding_mask": batch["input_mask"]}


def _batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(999, 30000, size=(3, 11)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    types = np.zeros_like(ids)
    types[:, 5:] = 1
    return {"input_word_ids": ids * mask, "input_mask": mask, "input_type_ids": types * mask}


@pytest.fixture(scope="module")
def vocab(minilm_dir) -> list[str]:
    return read_vocab(os.path.join(minilm_dir, "vocab.txt"))


@pytest.fixture(scope="module")
def preset(vocab, tmp_path_factory):
    """A keras-hub preset: random tiny BertBackbone + uncased BertTokenizer."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocab), num_layers=2, num_heads=2, hidden_dim=32,
        intermediate_dim=64, dropout=0.0, max_sequence_length=128)
    _randomize(backbone, seed=1)
    path = str(tmp_path_factory.mktemp("keras_hub_preset"))
    backbone.save_to_preset(path)
    keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True).save_to_preset(path)
    return path


def test_preset_is_detected_and_its_config_is_keras_hubs(preset):
    assert detect_kind(preset) == "keras_hub"
    assert os.path.isfile(os.path.join(preset, "assets", "tokenizer", "vocabulary.txt"))
    backbone = keras_hub.models.BertBackbone.from_preset(preset)
    config = read_bert_config(preset)
    assert (config.vocab_size, config.num_layers, config.num_heads, config.hidden_size,
            config.intermediate_size, config.max_position_embeddings,
            config.type_vocab_size) == (
        backbone.vocabulary_size, backbone.num_layers, backbone.num_heads, backbone.hidden_dim,
        backbone.intermediate_dim, backbone.max_sequence_length, backbone.num_segments)
    # The epsilon of every keras-hub layer norm, and its feed-forward activation.
    epsilons = {layer.epsilon for layer in backbone._flatten_layers()
                if isinstance(layer, keras.layers.LayerNormalization)}
    assert epsilons == {config.layer_norm_eps}
    x = np.linspace(-4, 4, 101).astype("float32")
    hub_act = backbone.transformer_layers[0].activation
    np.testing.assert_allclose(bert_activation(config.hidden_act)(x), hub_act(x), atol=1e-7)


def test_encoder_outputs_equal_keras_hub_backbone(preset):
    batch = _batch()
    expected = keras_hub.models.BertBackbone.from_preset(preset)(_hub_inputs(batch))
    got = tfbert.load_encoder(preset)(batch)
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(got[key].numpy(), keras.ops.convert_to_numpy(expected[key]),
                                   atol=1e-5)


def test_tokenizer_gives_keras_hubs_ids(preset):
    tokenizer = tfbert.load_tokenizer(preset)
    assert tokenizer.lowercase and tokenizer.max_seq_length == 128
    hub = keras_hub.models.BertTokenizer.from_preset(preset)
    assert tokenizer.tokenize(TEXTS).to_list() == [np.asarray(hub(t)).tolist() for t in TEXTS]
    # Packed with [CLS] ... [SEP] as keras-hub's preprocessor packs them.
    packer = keras_hub.models.BertTextClassifierPreprocessor.from_preset(preset,
                                                                          sequence_length=32)
    theirs = packer(tf.constant(TEXTS))
    ours = tokenizer(TEXTS)
    for row in range(len(TEXTS)):
        expected = theirs["token_ids"][row].numpy()[theirs["padding_mask"][row].numpy()]
        got = ours["input_word_ids"][row].numpy()[ours["input_mask"][row].numpy() == 1]
        assert got.tolist() == expected.tolist()


def test_cased_preset_keeps_case(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "hello", "World", "##s"]
    hub = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=False)
    hub.save_to_preset(tmp_path)
    tokenizer = tfbert.load_tokenizer(tmp_path)
    text = "Hello hello Worlds HELLO"
    assert not tokenizer.lowercase
    ids = np.asarray(hub(text)).tolist()
    assert tokenizer.tokenize([text]).to_list()[0] == ids == [5, 6, 7, 8, 1]


def test_export_of_a_preset_serves_keras_hubs_outputs(preset, tmp_path):
    path, report = export_model(preset, "khub", base=tmp_path, xla=False)
    assert report.ok, report.problems
    served = tf.saved_model.load(path).signatures["serving_default"](text=tf.constant(TEXTS))

    packer = keras_hub.models.BertTextClassifierPreprocessor.from_preset(preset,
                                                                          sequence_length=32)
    inputs = packer(tf.constant(TEXTS))
    out = keras_hub.models.BertBackbone.from_preset(preset)(inputs)
    np.testing.assert_allclose(served["pooled_output"].numpy(),
                               keras.ops.convert_to_numpy(out["pooled_output"]), atol=1e-5)
    hidden = keras.ops.convert_to_numpy(out["sequence_output"])
    mask = inputs["padding_mask"].numpy().astype("float32")[..., None]
    mean = (hidden * mask).sum(1) / mask.sum(1)
    embedding = mean / np.linalg.norm(mean, axis=-1, keepdims=True)
    np.testing.assert_allclose(served["embedding"].numpy(), embedding, atol=1e-5)


def test_saved_preset_loads_in_keras_hub_with_the_same_outputs(vocab, tmp_path):
    config = tfbert.BertConfig.from_preset(
        "tiny", vocab_size=len(vocab), hidden_size=32, num_heads=2, intermediate_size=64,
        max_position_embeddings=64, hidden_act="gelu_approximate", hidden_dropout=0.0,
        attention_dropout=0.0)
    keras.utils.set_random_seed(2)
    encoder = tfbert.build_encoder(config)
    _randomize(encoder, seed=3)
    tokenizer = tfbert.BertTokenizer(vocab, lowercase=True)
    assert save_keras_hub_preset(encoder, tokenizer, tmp_path / "out") == str(tmp_path / "out")

    batch = _batch()
    backbone = keras_hub.models.BertBackbone.from_preset(str(tmp_path / "out"))
    theirs = backbone(_hub_inputs(batch))
    ours = encoder(batch)
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(theirs[key]), ours[key].numpy(),
                                   atol=1e-5)
    hub = keras_hub.models.BertTokenizer.from_preset(str(tmp_path / "out"))
    texts = TEXTS + TRICKY
    assert [np.asarray(hub(t)).tolist() for t in texts] == tokenizer.tokenize(texts).to_list()
    # And it reads back as a tfbert model directory of the keras-hub kind.
    np.testing.assert_allclose(tfbert.load_encoder(tmp_path / "out")(batch)["pooled_output"],
                               ours["pooled_output"], atol=1e-6)


@pytest.mark.parametrize("change, words", [({"hidden_act": "gelu"}, "gelu"),
                                           ({"layer_norm_eps": 1e-6}, "layer_norm_eps")])
def test_encoders_keras_hub_cannot_represent_are_refused(tiny_config, change, words, tmp_path):
    config = tiny_config.replace(**{"hidden_act": "gelu_approximate", **change})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]
    with pytest.raises(ConfigError, match=words):
        save_keras_hub_preset(tfbert.build_encoder(config), vocab, tmp_path / "out")
    assert not (tmp_path / "out" / "config.json").exists()


def test_preset_of_another_keras_hub_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "module": "keras_hub.src.models.gpt2.gpt2_backbone", "class_name": "GPT2Backbone",
        "config": {"vocabulary_size": 50257, "num_layers": 12, "num_heads": 12,
                   "hidden_dim": 768, "intermediate_dim": 3072, "max_sequence_length": 1024},
        "registered_name": "keras_hub>GPT2Backbone"}))
    assert detect_kind(tmp_path) == "keras_hub"
    with pytest.raises(CheckpointError, match=r"config\.json: a keras-hub GPT2Backbone preset"):
        tfbert.load_encoder(tmp_path)
