"""BERT pretraining model: masked LM + next-sentence prediction."""

from __future__ import annotations

import keras

from tfbert.layers import MaskedLMHead
from tfbert.layers.initializers import bert_initializer
from tfbert.models.encoder import ENCODER_NAME, encoder_config, encoder_inputs


@keras.saving.register_keras_serializable(package="tfbert")
class BertPretrainer(keras.Model):
    """Masked-LM and next-sentence heads on a BERT encoder (a functional model).

    The MLM output projection is the encoder's word-embedding variable itself.
    A config cannot hold that tie, so the model's config is its encoder's:
    `from_config` (and so `keras.saving.load_model` of a `.keras` file)
    rebuilds the encoder, then the heads on it, tied again; the weights are
    then loaded into that graph. Build one with `build_pretrainer`.

    Args:
        encoder: a model from `build_encoder`/`load_encoder`.
        name: model name.

    Example:

    >>> import tfbert
    >>> enc = tfbert.build_encoder(tfbert.BertConfig.from_preset("tiny", vocab_size=100))
    >>> pre = BertPretrainer(enc)
    >>> pre.get_layer("mlm").word_embeddings is enc.get_layer("embeddings").word_embeddings
    True
    """

    def __init__(self, encoder: keras.Model, name: str = "bert_pretrainer", **kwargs):
        config = encoder_config(encoder)
        inputs = encoder_inputs()
        inputs["masked_lm_positions"] = keras.Input(shape=(None,), dtype="int32",
                                                    name="masked_lm_positions")
        outputs = encoder({k: inputs[k] for k in ("input_word_ids", "input_mask",
                                                   "input_type_ids")})
        mlm = MaskedLMHead(
            encoder.get_layer("embeddings").word_embeddings,
            hidden_act=config.hidden_act,
            layer_norm_eps=config.layer_norm_eps,
            initializer_range=config.initializer_range,
            name="mlm",
        )(outputs["sequence_output"], inputs["masked_lm_positions"])
        nsp = keras.layers.Dense(2, kernel_initializer=bert_initializer(config.initializer_range),
                                 dtype="float32", name="nsp")(outputs["pooled_output"])
        super().__init__(inputs, {"mlm": mlm, "nsp": nsp}, name=name, **kwargs)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "encoder": keras.saving.serialize_keras_object(self.get_layer(ENCODER_NAME))}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"),
                                                        custom_objects=custom_objects)
        return cls(encoder, **config)


def build_pretrainer(encoder: keras.Model, name: str = "bert_pretrainer") -> keras.Model:
    """Masked-LM and next-sentence heads on a BERT encoder.

    Args:
        encoder: a model from `build_encoder`/`load_encoder`.
        name: model name.

    Returns:
        A functional model (a `BertPretrainer`). Inputs: the three encoder
        inputs plus `masked_lm_positions` int32 `[B, P]`. Outputs: `mlm` logits
        `[B, P, vocab]` (only at the masked positions; projection tied to the
        word embeddings, also after `.keras` save and load) and `nsp` logits
        `[B, 2]` (class 0 = "is next", as in Google's BERT). Train it after
        `compile_pretrainer`.

    Example:

    >>> import numpy as np, tfbert
    >>> enc = tfbert.build_encoder(tfbert.BertConfig.from_preset("tiny", vocab_size=100))
    >>> pre = build_pretrainer(enc)
    >>> ids = np.array([[2, 4, 7, 3]], "int32")
    >>> out = pre({"input_word_ids": ids, "input_mask": np.ones_like(ids),
    ...            "input_type_ids": np.zeros_like(ids),
    ...            "masked_lm_positions": np.array([[1, 2]], "int32")})
    >>> out["mlm"].shape, out["nsp"].shape
    (TensorShape([1, 2, 100]), TensorShape([1, 2]))
    """
    return BertPretrainer(encoder, name=name)


def compile_pretrainer(model: keras.Model,
                       optimizer: keras.optimizers.Optimizer | str = "adam",
                       jit_compile: bool | str = True) -> keras.Model:
    """Compile with loss = L_MLM + L_NSP and `mlm_accuracy`/`nsp_accuracy`.

    Labels: `{"mlm": masked_lm_ids [B, P], "nsp": next_sentence_labels [B]}`,
    sample weights `{"mlm": masked_lm_weights [B, P] (0 on padded
    predictions), "nsp": ones [B]}` (Keras needs a weight for every output
    once weights are a dict). The MLM loss is averaged over real predictions only, as in
    Google's BERT, not over the padded `[B, P]` grid.
    """
    model.compile(
        optimizer=optimizer,
        loss={
            "mlm": keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight"),
            "nsp": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
        weighted_metrics={"mlm": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]},
        metrics={"nsp": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]},
        jit_compile=jit_compile,
    )
    return model
