"""Keras layers of BERT: embeddings, XLA attention, transformer block, heads."""

from tfbert.layers.attention import (
    SelfAttention,
    attention_column_scale,
    attention_core,
    xla_attention_core,
)
from tfbert.layers.dense import FusedDense
from tfbert.layers.dropout import Dropout
from tfbert.layers.embeddings import BertEmbeddings
from tfbert.layers.masked_lm import MaskedLMHead
from tfbert.layers.normalization import AddLayerNorm, add_layer_norm, xla_add_layer_norm
from tfbert.layers.pooling import MaskedMeanPooling
from tfbert.layers.span_logits import SpanLogits
from tfbert.layers.transformer import TransformerBlock

__all__ = ["AddLayerNorm", "BertEmbeddings", "Dropout", "FusedDense", "MaskedLMHead",
           "MaskedMeanPooling", "SelfAttention", "SpanLogits", "TransformerBlock",
           "add_layer_norm", "attention_column_scale", "attention_core", "xla_add_layer_norm",
           "xla_attention_core"]
