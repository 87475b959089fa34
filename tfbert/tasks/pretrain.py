"""The `pretrain` task: masked LM + next-sentence prediction heads on an encoder.

Trained by `tfbert pretrain` (corpus pipeline in `tfbert.data.pretraining`),
not by `tfbert finetune`. The export serves the encoder outputs (as the
`encoder` task) plus `fill_mask`: for text containing `[MASK]`, the top-k
`tokens` string `[B, masks, k]` and their `scores` (padded where a text has
fewer masks).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfbert.models import build_pretrainer, compile_pretrainer
from tfbert.tasks import register
from tfbert.tasks.encoder import encoder_endpoints
from tfbert.tasks.endpoints import TEXT
from tfbert.tasks.spec import Endpoints, TaskInfo, TaskSpec
from tfbert.text import BertTokenizer

# Candidates `fill_mask` returns per [MASK].
FILL_MASK_TOP_K = 5


def endpoints(model: keras.Model, tokenizer: BertTokenizer, info: TaskInfo | None = None,
              top_k: int = FILL_MASK_TOP_K) -> Endpoints:
    """Encoder outputs plus `fill_mask`: the top-k tokens for every [MASK]."""
    k = min(top_k, tokenizer.vocab_size)

    def fill_mask(text):
        batch = tokenizer(text)
        is_mask = tf.equal(batch["input_word_ids"], tokenizer.mask_id)
        # Positions of the masks of each text, left-aligned and padded with 0.
        masks_per_text = tf.reduce_sum(tf.cast(is_mask, tf.int32), axis=1)
        width = tf.maximum(tf.reduce_max(tf.concat([masks_per_text, [0]], 0)), 1)
        where = tf.where(is_mask)
        positions = tf.RaggedTensor.from_value_rowids(
            tf.cast(where[:, 1], tf.int32), where[:, 0], nrows=tf.shape(is_mask, tf.int64)[0])
        positions = positions.to_tensor(default_value=0)
        # At least one slot, so a batch without any [MASK] still has a shape.
        positions = tf.pad(positions, [[0, 0], [0, width - tf.shape(positions)[1]]])
        logits = model({**batch, "masked_lm_positions": positions}, training=False)["mlm"]
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        scores, ids = tf.math.top_k(probabilities, k=k)
        real = tf.sequence_mask(masks_per_text, width)[:, :, tf.newaxis]
        tokens = tf.where(real, tokenizer.ids_to_tokens(ids), tf.constant(""))
        return {"tokens": tokens, "scores": tf.where(real, scores, 0.0)}

    return {**encoder_endpoints(model, tokenizer), "fill_mask": (fill_mask, [TEXT])}


SPEC = register(TaskSpec(
    name="pretrain",
    description="masked LM + next-sentence prediction (trained by `tfbert pretrain`)",
    build_model=lambda encoder, info: build_pretrainer(encoder),
    endpoints=endpoints,
    compile_model=compile_pretrainer,
))
