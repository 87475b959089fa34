import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import random_batch

import tfbert
from tfbert.checkpoints import CheckpointError, model_values, names

# Mixed English / Chinese / accented / punctuation text.
SAMPLE = [
    "The quick brown fox jumps over the lazy dog.",
    "Café déjà vu, naïve résumé — ÉCOLE.",
    "我们在北京学习自然语言处理。",
    "Don't stop: 3.14 + $42 = [MASK]?!",
    "Mixed 日本語 and English (with punctuation)...",
]


@pytest.fixture(scope="module")
def hf_reference(minilm_dir):
    import torch
    from transformers import BertModel, BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(minilm_dir)
    batch = tokenizer(SAMPLE, padding=True, return_tensors="np")
    model = BertModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        out = model(**{k: torch.tensor(v) for k, v in batch.items()})
    return batch, out.last_hidden_state.numpy(), out.pooler_output.numpy()


def test_hugging_face_minilm_matches_transformers(minilm_dir, hf_reference):
    batch, hf_sequence, hf_pooled = hf_reference
    encoder = tfbert.load_encoder(minilm_dir)
    out = encoder({"input_word_ids": batch["input_ids"].astype("int32"),
                   "input_mask": batch["attention_mask"].astype("int32"),
                   "input_type_ids": batch["token_type_ids"].astype("int32")})
    real = batch["attention_mask"].astype(bool)
    sequence_diff = np.abs(out["sequence_output"].numpy() - hf_sequence)[real]
    assert sequence_diff.max() <= 1e-4
    assert np.abs(out["pooled_output"].numpy() - hf_pooled).max() <= 1e-4


def _write_google_checkpoint(values: dict[str, np.ndarray], prefix: str) -> None:
    """A TF1 name-based checkpoint, as Google's BERT release ships."""
    with tf.Graph().as_default():
        variables = [tf.compat.v1.Variable(v, name=n) for n, v in values.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, prefix)


def test_google_checkpoint_loads_with_same_outputs(tiny_config, tmp_path):
    pretrainer = tfbert.build_pretrainer(tfbert.build_encoder(tiny_config))
    by_path = model_values(pretrainer)
    rows = names.expand(names.ENCODER_NAMES, tiny_config.num_layers) + \
        names.PRETRAINING_HEAD_NAMES
    google = {g: (by_path[p].T if names.google_transposed(g) else by_path[p])
              for p, _, g in rows}
    assert "bert/encoder/layer_0/attention/self/query/kernel" in google
    assert "bert/embeddings/word_embeddings" in google
    _write_google_checkpoint(google, str(tmp_path / "bert_model.ckpt"))
    (tmp_path / "bert_config.json").write_text(json.dumps({
        "vocab_size": tiny_config.vocab_size, "hidden_size": tiny_config.hidden_size,
        "num_hidden_layers": tiny_config.num_layers,
        "num_attention_heads": tiny_config.num_heads,
        "intermediate_size": tiny_config.intermediate_size,
        "max_position_embeddings": tiny_config.max_position_embeddings,
        "type_vocab_size": 2, "hidden_act": "gelu"}))

    loaded = tfbert.load_encoder(tmp_path)
    batch = random_batch(tiny_config.vocab_size, pad_from=6)
    expected = pretrainer.get_layer("bert_encoder")(batch)
    got = loaded(batch)
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), atol=1e-6)


def test_checkpoint_with_wrong_shapes_is_refused(minilm_dir, tmp_path):
    config = json.load(open(f"{minilm_dir}/config.json"))
    config["hidden_size"] = 192
    config["num_attention_heads"] = 6
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(f"{minilm_dir}/model.safetensors")
    with pytest.raises(CheckpointError, match="shape"):
        tfbert.load_encoder(tmp_path)


def test_directory_without_weights_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "bert", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16}))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        tfbert.load_encoder(tmp_path)
    with pytest.raises(CheckpointError, match="no config.json"):
        tfbert.load_encoder(tmp_path / "..")


def test_fused_qkv_holds_the_checkpoints_query_key_value(minilm_dir):
    from safetensors.numpy import load_file

    encoder = tfbert.load_encoder(minilm_dir)
    qkv = encoder.get_layer("layer_2").attention.qkv
    assert tuple(qkv.kernel.shape) == (384, 3 * 384)
    raw = load_file(f"{minilm_dir}/model.safetensors")
    values = model_values(encoder)
    for projection in ("query", "key", "value"):
        hf = f"encoder.layer.2.attention.self.{projection}"
        np.testing.assert_array_equal(values[f"layer_2/attention/{projection}/kernel"],
                                      raw[hf + ".weight"].T)
        np.testing.assert_array_equal(values[f"layer_2/attention/{projection}/bias"],
                                      raw[hf + ".bias"])
    assert not any("/qkv/" in path for path in values)


def test_model_directory_with_separate_query_key_value_still_loads(tiny_config, tmp_path):
    """A weights file whose attention holds query/key/value layers (the layout
    before the fused projection) loads with the same outputs."""
    import h5py

    from tfbert.checkpoints import TaskInfo, save_model

    encoder = tfbert.build_encoder(tiny_config)
    save_model(encoder, tmp_path, TaskInfo(task="encoder"), [f"w{i}" for i in range(
        tiny_config.vocab_size)])
    with h5py.File(tmp_path / "model.weights.h5", "r+") as f:
        fused = []
        f.visit(lambda name: fused.append(name) if name.endswith("/attention/qkv") else None)
        assert len(fused) == tiny_config.num_layers
        for group in fused:
            kernel, bias = (np.asarray(f[f"{group}/vars/{i}"]) for i in ("0", "1"))
            parent = group[: -len("/qkv")]
            for part, name in enumerate(("query", "key", "value")):
                width = kernel.shape[1] // 3
                f[f"{parent}/{name}/vars/0"] = kernel[:, part * width:(part + 1) * width]
                f[f"{parent}/{name}/vars/1"] = bias[part * width:(part + 1) * width]
            del f[group]
    loaded = tfbert.load_encoder(tmp_path)
    batch = random_batch(tiny_config.vocab_size, pad_from=5)
    np.testing.assert_array_equal(loaded(batch)["sequence_output"].numpy(),
                                  encoder(batch)["sequence_output"].numpy())
