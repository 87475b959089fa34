"""`BertConfig`: the sizes of a BERT, its presets, and config-file import.

A config says everything needed to rebuild an encoder. It round-trips
through JSON and reads the two config formats found beside real
checkpoints: Hugging Face `config.json` and Google `bert_config.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from tfbert.errors import ConfigError

# name -> (num_layers, hidden_size, num_heads); feed-forward is 4 * hidden.
# Sizes follow Google's BERT release (the 24 smaller BERT models) and the
# original BERT-base/large.
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}

# The feed-forward activations a BertConfig may name; `tfbert.layers.activations`
# maps each to its function. "gelu" is the exact erf GELU of original BERT,
# "gelu_approximate" its tanh approximation.
ACTIVATIONS: tuple[str, ...] = ("gelu", "gelu_approximate", "relu")

# Other spellings found in Hugging Face `config.json` and Google
# `bert_config.json` files -> the name in `ACTIVATIONS`.
ACTIVATION_ALIASES: dict[str, str] = {
    "gelu_exact": "gelu",
    "gelu_new": "gelu_approximate",
    "gelu_pytorch_tanh": "gelu_approximate",
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Sizes and hyper-parameters of a BERT encoder.

    Args:
        vocab_size: WordPiece vocabulary size.
        hidden_size: width of every token representation (H).
        num_layers: number of transformer blocks (L).
        num_heads: attention heads per block (A); must divide `hidden_size`.
        intermediate_size: feed-forward inner width (usually 4H).
        max_position_embeddings: longest sequence the position table covers.
        type_vocab_size: number of segment ids (2 for sentence pairs).
        hidden_act: feed-forward activation, one of `ACTIVATIONS`; "gelu" is
            the exact erf GELU.
        hidden_dropout: dropout after embeddings and each sublayer.
        attention_dropout: dropout on the attention probabilities.
        layer_norm_eps: LayerNorm epsilon.
        initializer_range: stddev of the truncated-normal initializer.
        xla_attention: run the attention core as an XLA-compiled function.
        xla_pointwise: run the elementwise steps between the dense layers
            as XLA-compiled functions: the add & LayerNorm steps in
            inference, the feed-forward GELU in training.
        inference_branches: in inference, run each block's attention heads
            and feed-forward width as this many independent groups of ops,
            which TensorFlow runs side by side (`TransformerBlock`); must
            divide `num_heads` and `intermediate_size`. Exports outside
            whole-model XLA use 2 (`tfbert.precision.serving_branches`).

    Example:

    >>> cfg = BertConfig.from_preset("tiny", vocab_size=1000)
    >>> cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
    (2, 128, 512)
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    xla_attention: bool = True
    xla_pointwise: bool = True
    inference_branches: int = 1

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"BertConfig.hidden_size ({self.hidden_size}) is not divisible by "
                f"num_heads ({self.num_heads})"
            )
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"BertConfig.{name} must be in [0, 1), got {value!r}")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(
                f"BertConfig.hidden_act {self.hidden_act!r} is not supported; "
                f"choose one of {', '.join(ACTIVATIONS)}"
            )
        branches = self.inference_branches
        if (isinstance(branches, bool) or not isinstance(branches, int) or branches < 1
                or self.num_heads % branches or self.intermediate_size % branches):
            raise ConfigError(
                f"BertConfig.inference_branches must be a positive integer dividing num_heads "
                f"({self.num_heads}) and intermediate_size ({self.intermediate_size}), "
                f"got {branches!r}")
        if self.layer_norm_eps <= 0 or self.initializer_range <= 0:
            raise ConfigError("BertConfig.layer_norm_eps and initializer_range must be > 0")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_preset(cls, name: str, vocab_size: int = 30522, **overrides: Any) -> BertConfig:
        """A preset size (tiny/mini/small/medium/base/large) with 4H feed-forward."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        layers, hidden, heads = PRESETS[name]
        fields = dict(vocab_size=vocab_size, hidden_size=hidden, num_layers=layers,
                      num_heads=heads, intermediate_size=4 * hidden)
        fields.update(overrides)
        return cls(**fields)

    def replace(self, **changes: Any) -> BertConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BertConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown BertConfig field(s): {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as e:  # a missing required field
            raise ConfigError(f"incomplete BertConfig: {e}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BertConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any]) -> BertConfig:
        """Read a Hugging Face `BertConfig` dict (`config.json`)."""
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError("only absolute position embeddings are supported")
        return cls(**_import_fields(data, source="Hugging Face config.json"))

    @classmethod
    def from_google_dict(cls, data: dict[str, Any]) -> BertConfig:
        """Read a Google BERT `bert_config.json` dict."""
        return cls(**_import_fields(data, source="bert_config.json"))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> BertConfig:
        """Read any of the three formats: tfbert, Hugging Face, Google BERT.

        A tfbert `config.json` keeps the encoder config under the "bert" key.
        """
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot read config: {e}") from None
        if "bert" in data and isinstance(data["bert"], dict):
            return cls.from_dict(data["bert"])
        if "num_layers" in data and "num_hidden_layers" not in data:
            return cls.from_dict(data)
        if data.get("model_type", "bert") != "bert":
            raise ConfigError(f"{path}: model_type {data['model_type']!r} is not BERT")
        if "model_type" in data or "architectures" in data:
            return cls.from_hf_dict(data)
        return cls.from_google_dict(data)


def _import_fields(data: dict[str, Any], source: str) -> dict[str, Any]:
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size")
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigError(f"{source} lacks {', '.join(missing)}")
    act = data.get("hidden_act", "gelu")
    act = ACTIVATION_ALIASES.get(act, act)
    return dict(
        vocab_size=int(data["vocab_size"]),
        hidden_size=int(data["hidden_size"]),
        num_layers=int(data["num_hidden_layers"]),
        num_heads=int(data["num_attention_heads"]),
        intermediate_size=int(data["intermediate_size"]),
        max_position_embeddings=int(data.get("max_position_embeddings", 512)),
        type_vocab_size=int(data.get("type_vocab_size", 2)),
        hidden_act=act,
        hidden_dropout=float(data.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(data.get("attention_probs_dropout_prob", 0.1)),
        layer_norm_eps=float(data.get("layer_norm_eps", 1e-12)),
        initializer_range=float(data.get("initializer_range", 0.02)),
    )


__all__ = ["ACTIVATIONS", "ACTIVATION_ALIASES", "PRESETS", "BertConfig", "ConfigError"]
