"""The `encoder` task: a bare BERT encoder, exported for embeddings.

Hugging Face and Google BERT directories load as this task. Its export's
`serving_default` returns `pooled_output` `[B, H]`, `sequence_output`
`[B, T, H]`, `input_mask` `[B, T]` and `embedding` `[B, H]` (the mask-mean
of the sequence, L2-normalised: the sentence-transformers embedding).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfbert.layers import MaskedMeanPooling
from tfbert.models import get_encoder
from tfbert.tasks import register
from tfbert.tasks.endpoints import text_endpoint, tokenize_endpoint
from tfbert.tasks.spec import Endpoints, TaskInfo, TaskSpec
from tfbert.text import BertTokenizer


def encoder_endpoints(model: keras.Model, tokenizer: BertTokenizer,
                      info: TaskInfo | None = None) -> Endpoints:
    """`serving_default` with the encoder outputs and a unit-length embedding, and `tokenize`."""
    encoder = get_encoder(model)
    pooling = MaskedMeanPooling()

    def serve(batch):
        out = encoder(batch, training=False)
        sequence = tf.cast(out["sequence_output"], tf.float32)
        embedding = tf.math.l2_normalize(pooling(sequence, batch["input_mask"]), axis=-1)
        return {"pooled_output": tf.cast(out["pooled_output"], tf.float32),
                "sequence_output": sequence, "input_mask": batch["input_mask"],
                "embedding": embedding}

    return {**text_endpoint("serving_default", serve, tokenizer, False),
            **tokenize_endpoint(tokenizer)}


SPEC = register(TaskSpec(
    name="encoder",
    description="a bare encoder: pooled/sequence outputs and sentence embeddings",
    build_model=lambda encoder, info: encoder,
    endpoints=encoder_endpoints,
))
