import json

import pytest

from tfbert import BertConfig, ConfigError

# Published sizes: Google's BERT release (tiny..medium) and the BERT paper (base, large).
PUBLISHED = {
    "tiny": (2, 128, 2), "mini": (4, 256, 4), "small": (4, 512, 8),
    "medium": (8, 512, 8), "base": (12, 768, 12), "large": (24, 1024, 16),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_presets_have_published_sizes(name):
    cfg = BertConfig.from_preset(name)
    layers, hidden, heads = PUBLISHED[name]
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads) == (layers, hidden, heads)
    assert cfg.intermediate_size == 4 * hidden
    assert cfg.vocab_size == 30522 and cfg.max_position_embeddings == 512


def test_defaults_match_original_bert():
    cfg = BertConfig(vocab_size=10, hidden_size=8, num_layers=1, num_heads=2,
                     intermediate_size=16)
    assert cfg.hidden_act == "gelu" and cfg.type_vocab_size == 2
    assert cfg.hidden_dropout == cfg.attention_dropout == 0.1
    assert cfg.layer_norm_eps == 1e-12 and cfg.initializer_range == 0.02
    assert cfg.xla_attention is True


def test_json_round_trip(tmp_path):
    cfg = BertConfig.from_preset("mini", vocab_size=5000, hidden_dropout=0.2)
    assert BertConfig.from_json(cfg.to_json()) == cfg
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"bert": cfg.to_dict(), "task": "encoder"}))
    assert BertConfig.from_file(path) == cfg


def test_reads_hugging_face_config(minilm_dir):
    cfg = BertConfig.from_file(f"{minilm_dir}/config.json")
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size) == (
        6, 384, 12, 1536)
    assert cfg.vocab_size == 30522 and cfg.hidden_act == "gelu"


def test_reads_google_bert_config(tmp_path):
    # The bert_config.json of Google's uncased_L-12_H-768_A-12 release.
    google = {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
              "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02,
              "intermediate_size": 3072, "max_position_embeddings": 512,
              "num_attention_heads": 12, "num_hidden_layers": 12, "type_vocab_size": 2,
              "vocab_size": 30522}
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(google))
    assert BertConfig.from_file(path) == BertConfig.from_preset("base")


@pytest.mark.parametrize("fields, message", [
    (dict(hidden_size=100, num_heads=3), "not divisible by num_heads"),
    (dict(num_layers=0), "num_layers must be a positive integer"),
    (dict(hidden_dropout=1.5), "hidden_dropout"),
    (dict(hidden_act="swish"), "hidden_act"),
])
def test_inconsistent_sizes_are_rejected(fields, message):
    base = dict(vocab_size=10, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16)
    with pytest.raises(ConfigError, match=message):
        BertConfig(**{**base, **fields})


def test_unknown_preset_and_fields_are_named():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        BertConfig.from_preset("huge")
    with pytest.raises(ConfigError, match="unknown BertConfig field"):
        BertConfig.from_dict({"vocab_size": 1, "hiden_size": 8})
    with pytest.raises(ConfigError, match="lacks num_hidden_layers"):
        BertConfig.from_hf_dict({"vocab_size": 1, "hidden_size": 8, "num_attention_heads": 2,
                                 "intermediate_size": 4})


def test_config_errors_are_tfbert_errors():
    from tfbert.errors import TfbertError

    with pytest.raises(TfbertError):
        BertConfig.from_preset("huge")
    assert issubclass(ConfigError, ValueError)
